"""The Kubernetes and KServe manifests under deploy/ validate against real schemas, and say
what onnxd needs.

- Core kinds (Deployment, StatefulSet, Service, HorizontalPodAutoscaler, PodDisruptionBudget,
  PersistentVolumeClaim, NetworkPolicy) against Kubernetes' own OpenAPI schemas as the
  kubernetes-validate package bundles them, strict (an unknown field fails), for every
  Kubernetes version from 1.30 (preStop's sleep action) to the newest bundled.
- KServe kinds (ClusterServingRuntime, InferenceService) against the typed models of KServe's
  Python SDK, field by field (kserve_typed_check.py, run in the kserve venv).
- The ServiceMonitor against the Prometheus Operator's CRD schema (as the npm package
  @kubernetes-models/prometheus-operator ships it: required fields, types, patterns) and its Go
  API types (unknown fields; the Go module pinned by tests/integration/deploy-go), and its
  selector and port name against the Service it scrapes; the plain scrape configuration's
  relabelling against the Deployment's annotations.
- What the files promise each other and onnxd: every flag is one `onnxd --help` lists, probes on
  the v2 health paths at the declared port, the grace period longer than preStop + drain, the
  securityContext of a read-only, non-root, no-capability container, selectors that select.
- The fraud example with replicas (deploy/k8s-fraud/: onnxd StatefulSet applying a Redis Stream,
  Redis StatefulSet): the same, plus what the stream mode needs (deploy_check.fraud_problems:
  --feature-stream-trim-ms >= --feature-retention-ms, the store on each pod's own claim, the
  bootstrap URL at a Service of ready onnxd pods, --redis at the Redis pod, Redis with
  appendonly yes and appendfsync always, its data on a claim, redis-cli ping probes).
Each validator is also shown to fail on a broken copy (a misspelled field, a wrong type, a
missing required field), so that a pass means something.
"""

import copy
import re
import subprocess

import pytest
import yaml

from conftest import _server_binary
from deploy_check import (DEPLOY, FRAUD, KSERVE_API_GROUP, OTHER_KINDS, arg_flags,
                          fraud_problems, k8s_errors, k8s_versions, kserve_errors, load_yaml,
                          manifests, operator_errors, pod_spec, redis_options)

K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve"


def core_docs():
    return [(p, i, d) for p, docs in manifests().items() for i, d in enumerate(docs)
            if not d["apiVersion"].startswith(KSERVE_API_GROUP)
            and (d["apiVersion"], d["kind"]) not in OTHER_KINDS]


def one(kind, where=K8S):
    found = [d for p in sorted(where.glob("*.yaml")) for d in load_yaml(p) if d.get("kind") == kind]
    assert len(found) == 1, f"{len(found)} {kind} documents under {where}"
    return found[0]


@pytest.fixture(scope="module")
def versions():
    vs = k8s_versions()
    assert vs, "kubernetes-validate bundles no schema for Kubernetes 1.30 or later"
    return vs


@pytest.fixture(scope="module")
def kserve_results():
    try:
        return kserve_errors(sorted(KSERVE.glob("*.yaml")))
    except RuntimeError as e:
        pytest.fail(f"the kserve SDK is not available: {e}", pytrace=False)


@pytest.fixture(scope="module")
def help_text():
    r = subprocess.run([str(_server_binary()), "--help"], capture_output=True, text=True,
                       timeout=30)
    return r.stdout + r.stderr


# ---------------------------------------------------------------------------- real schemas
def test_every_manifest_has_a_validator():
    kinds = {(d["apiVersion"], d["kind"]) for docs in manifests().values() for d in docs}
    assert ("apps/v1", "Deployment") in kinds and \
        ("serving.kserve.io/v1alpha1", "ClusterServingRuntime") in kinds, kinds
    core = {(d["apiVersion"], d["kind"]) for _, _, d in core_docs()}
    kserve = {k for k in kinds if k[0].startswith(KSERVE_API_GROUP)}
    assert kinds == core | kserve | (kinds & OTHER_KINDS)
    assert core == {("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
                    ("autoscaling/v2", "HorizontalPodAutoscaler"),
                    ("policy/v1", "PodDisruptionBudget"), ("v1", "PersistentVolumeClaim"),
                    ("networking.k8s.io/v1", "NetworkPolicy")}, core
    # the fraud example's files are manifests, every document of them a core kind
    fraud = {p: docs for p, docs in manifests().items() if p.parent == FRAUD}
    assert sorted(p.name for p in fraud) == ["onnxd.yaml", "redis.yaml"], sorted(fraud)
    assert all((d["apiVersion"], d["kind"]) in core for docs in fraud.values() for d in docs)
    assert kserve == {("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
                      ("serving.kserve.io/v1beta1", "InferenceService")}, kserve


def test_core_manifests_validate_against_kubernetes_schemas(versions):
    problems = [f"{p.relative_to(DEPLOY)}[{i}]: {e}" for p, i, d in core_docs()
                for v in versions for e in k8s_errors(d, v)]
    assert not problems, "\n".join(problems)
    assert versions[0].startswith("1.30"), versions


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d["spec"]["template"]["spec"].__setitem__(
        "terminationGracePeriodSecond", 30), "terminationGracePeriodSecond"),
    (lambda d: d["spec"].__setitem__("replicas", "two"), "replicas"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"].__setitem__(
        "sleep", {"second": 5}), "second"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "name"),
])
def test_kubernetes_schema_check_fails_on_broken_deployment(versions, change, fragment):
    d = copy.deepcopy(one("Deployment"))
    change(d)
    errs = k8s_errors(d, versions[-1])
    assert errs and fragment in errs[0], errs


def test_kserve_manifests_validate_against_kserve_models(kserve_results):
    kinds = sorted(k for k, _ in kserve_results.values())
    assert kinds == ["ClusterServingRuntime", "InferenceService"], kinds
    problems = [f"{f}[{i}] {k}: {e}" for (f, i), (k, errs) in kserve_results.items() for e in errs]
    assert not problems, "\n".join(problems)


def test_kserve_check_fails_on_broken_copies(tmp_path):
    rt = one("ClusterServingRuntime", KSERVE)
    isvc = one("InferenceService", KSERVE)
    cases = {}

    def case(name, doc, change, fragment):
        d = copy.deepcopy(doc)
        change(d)
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(d))
        cases[str(p)] = (name, fragment)

    c0 = lambda d: d["spec"]["containers"][0]  # noqa: E731
    case("misspelled", rt, lambda d: c0(d).__setitem__("readinesProbe", c0(d).pop("readinessProbe")),
         "unknown field 'readinesProbe'")
    case("wrong_type", rt, lambda d: c0(d)["ports"][0].__setitem__("containerPort", "8080"),
         "containerPort: expected int")
    case("no_container_name", rt, lambda d: c0(d).pop("name"), "name")
    case("format_field", rt, lambda d: d["spec"]["supportedModelFormats"][0].__setitem__(
        "autoselect", True), "unknown field 'autoselect'")
    case("isvc_field", isvc, lambda d: d["spec"]["predictor"]["model"].__setitem__(
        "storageURI", d["spec"]["predictor"]["model"].pop("storageUri")),
        "unknown field 'storageURI'")
    case("isvc_type", isvc, lambda d: d["spec"]["predictor"].__setitem__("minReplicas", "1"),
         "minReplicas: expected int")
    try:
        results = kserve_errors(list(cases))
    except RuntimeError as e:
        pytest.fail(f"the kserve SDK is not available: {e}", pytrace=False)
    for (f, _), (_, errs) in results.items():
        name, fragment = cases[f]
        assert errs, f"{name}: the broken copy passed"
        assert any(fragment in e for e in errs), (name, errs)


# ---------------------------------------------------------------------------- what they promise
def container(doc):
    spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
    (c,) = spec["containers"]
    return spec, c


def flags(args):
    """{flag: value} of --flag=value arguments (every argument must be one)."""
    out = {}
    for a in args:
        m = re.fullmatch(r"(--[a-z0-9-]+)=(.*)", a)
        assert m, f"argument {a!r} is not --flag=value"
        out[m.group(1)] = m.group(2)
    return out


@pytest.mark.parametrize("kind,where", [("Deployment", K8S), ("ClusterServingRuntime", KSERVE)])
def test_flags_ports_and_probes(kind, where, help_text):
    doc = one(kind, where)
    spec, c = container(doc)
    f = flags(c["args"])
    known = set(re.findall(r"^\s+(--[a-z0-9-]+)", help_text, re.M))
    assert "--http-port" in known, help_text
    unknown = sorted(set(f) - known)
    assert not unknown, f"{kind}: flags onnxd --help does not list: {unknown}"
    assert f["--model-repository"] == "/mnt/models" and f["--host"] == "0.0.0.0", f
    port = c["ports"][0]  # the HTTP port first (probes, metrics annotations)
    assert port["containerPort"] == int(f["--http-port"]) == 8080, (port, f)
    if kind == "Deployment":  # and the gRPC port, as onnxd is told
        (gport,) = [p for p in c["ports"] if p["name"] == "grpc"]
        assert gport["containerPort"] == int(f["--grpc-port"]) == 8001, (gport, f)
    else:  # KServe routes one port per runtime
        assert len(c["ports"]) == 1, c["ports"]
    for probe, path in (("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] in (port["containerPort"], port["name"]), get
    if kind == "ClusterServingRuntime":
        assert f["--model-name"] == "{{.Name}}", f
        assert c["name"] == "kserve-container" and port["name"] == "http1", c
        assert doc["spec"]["protocolVersions"] == ["v2"], doc["spec"]
        (fmt,) = doc["spec"]["supportedModelFormats"]
        assert fmt["name"] == "onnx" and fmt["autoSelect"] is True and fmt["priority"] >= 1, fmt
        assert spec["annotations"]["prometheus.kserve.io/port"] == str(port["containerPort"])
    # every mount path onnxd writes to is a volume: nothing writes the read-only root
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly"), mounts
    # the image's working directory (the feature store's default place) is a writable volume;
    # --feature-dir, if given, points into a mounted volume
    assert "/var/lib/onnxd" in mounts and not mounts["/var/lib/onnxd"].get("readOnly"), mounts
    fdir = f.get("--feature-dir", "/var/lib/onnxd/feature-store")
    assert fdir.startswith(tuple(p + "/" for p in mounts if p != "/mnt/models")), fdir
    volumes = {v["name"] for v in spec["volumes"]}
    assert {m["name"] for m in mounts.values()} <= volumes, (mounts, volumes)


@pytest.mark.parametrize("kind,where", [("Deployment", K8S), ("ClusterServingRuntime", KSERVE)])
def test_security_context(kind, where):
    doc = one(kind, where)
    spec, c = container(doc)
    sc = dict((spec.get("securityContext") or {}) if kind == "Deployment" else {})
    sc.update(c["securityContext"])  # the container's settings win over the pod's
    assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0, sc
    assert sc["readOnlyRootFilesystem"] is True, sc
    assert sc["allowPrivilegeEscalation"] is False, sc
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), sc
    assert sc["seccompProfile"]["type"] == "RuntimeDefault", sc
    r = c["resources"]
    assert {"cpu", "memory"} <= set(r["requests"]) and {"cpu", "memory"} <= set(r["limits"]), r


def test_shutdown_timing_and_wiring(help_text):
    dep = one("Deployment")
    spec, c = container(dep)
    f = flags(c["args"])
    drain_ms = int(f.get("--drain-timeout-ms", re.search(
        r"--drain-timeout-ms .*\(default (\d+)\)", help_text).group(1)))
    sleep_s = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = spec["terminationGracePeriodSeconds"]
    assert sleep_s >= 1 and grace > sleep_s + drain_ms / 1000, (sleep_s, drain_ms, grace)
    isvc = one("InferenceService", KSERVE)
    rt_flags = flags(container(one("ClusterServingRuntime", KSERVE))[1]["args"])
    assert isvc["spec"]["predictor"]["terminationGracePeriodSeconds"] > \
        int(rt_flags["--drain-timeout-ms"]) / 1000
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "onnxd"
    assert isvc["spec"]["predictor"]["model"]["modelFormat"]["name"] == "onnx"
    # labels, selectors and names line up
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        d = one(kind)
        sel = d["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        assert sel.items() <= pod_labels.items(), (kind, sel, pod_labels)
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc = one("Service")
    for sp in svc["spec"]["ports"]:
        assert sp["targetPort"] in [p["name"] for p in c["ports"]], sp
    assert {sp["name"] for sp in svc["spec"]["ports"]} == {"http", "grpc"}, svc["spec"]["ports"]
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pvc = one("PersistentVolumeClaim")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [pvc["metadata"]["name"]], claims
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith(
        f"pvc://{pvc['metadata']['name']}/")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) == c["ports"][0]["containerPort"]


def checked_operator_errors(docs):
    try:
        return operator_errors(docs)
    except RuntimeError as e:
        pytest.fail(f"the Prometheus Operator's schema is not available: {e}", pytrace=False)


def test_service_monitor_validates_against_the_operators_schema():
    docs = load_yaml(DEPLOY / "prometheus" / "service-monitor.yaml")
    assert [(d["apiVersion"], d["kind"]) for d in docs] == sorted(OTHER_KINDS)
    assert checked_operator_errors(docs) == [("ServiceMonitor", [])]


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d["spec"]["endpoints"][0].__setitem__("intervall", "15s"), "intervall"),
    (lambda d: d["spec"]["endpoints"][0].__setitem__("interval", 15), "interval"),
    (lambda d: d["spec"].pop("selector"), "selector"),
])
def test_service_monitor_check_fails_on_broken_copies(change, fragment):
    d = copy.deepcopy(one("ServiceMonitor", DEPLOY / "prometheus"))
    change(d)
    ((_, errs),) = checked_operator_errors([d])
    assert errs and fragment in " ".join(errs), errs


def test_service_monitor_scrapes_the_service():
    sm = one("ServiceMonitor", DEPLOY / "prometheus")
    svc = one("Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in [p["name"] for p in svc["spec"]["ports"]] and ep["path"] == "/metrics"


def relabel(labels, rules):
    """Prometheus' relabelling (actions keep, drop and replace) of one target's labels; None when
    the target is dropped. Regexes are anchored at both ends, as Prometheus anchors them."""
    labels = dict(labels)
    for r in rules:
        src = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        m = re.fullmatch(r.get("regex", "(.*)"), src)
        action = r.get("action", "replace")
        if action == "keep" and not m or action == "drop" and m:
            return None
        if action == "replace" and m:
            value = re.sub(r"\$(\d+)", lambda g: m.group(int(g.group(1))) or "",
                           r.get("replacement", "$1"))
            if value:
                labels[r["target_label"]] = value
    return labels


def test_scrape_config_finds_the_deployments_pods():
    (cfg,) = load_yaml(DEPLOY / "prometheus" / "scrape-config.yaml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"onnxd-pods", "onnxd-static"}, set(jobs)
    dep = one("Deployment")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    meta = {"__address__": "10.1.2.3:8080", "__metrics_path__": "/metrics-default",
            "__meta_kubernetes_namespace": "serving", "__meta_kubernetes_pod_name": "onnxd-abc"}
    for k, v in ann.items():
        meta["__meta_kubernetes_pod_annotation_" + re.sub(r"[^A-Za-z0-9_]", "_", k)] = v
    rules = jobs["onnxd-pods"]["relabel_configs"]
    got = relabel(meta, rules)
    assert got is not None, "the Deployment's pods are dropped"
    assert got["__address__"] == f"10.1.2.3:{ann['prometheus.io/port']}"
    assert got["__metrics_path__"] == ann["prometheus.io/path"] == "/metrics"
    assert got["pod"] == "onnxd-abc" and got["namespace"] == "serving"
    # the pod's port comes from the annotation even when the target has another port
    assert relabel({**meta, "__address__": "10.1.2.3:9999"}, rules)["__address__"] == \
        f"10.1.2.3:{ann['prometheus.io/port']}"
    # a pod without the annotation is not scraped
    no = {k: v for k, v in meta.items() if not k.endswith("prometheus_io_scrape")}
    assert relabel(no, rules) is None
    static = jobs["onnxd-static"]
    assert static["metrics_path"] == "/metrics" and static["static_configs"][0]["targets"]


# ---------------------------------------------------------------------------- fraud with replicas
# deploy/k8s-fraud/: onnxd replicas applying one Redis Stream (the stream mode), Redis with AOF.

def fraud_docs():
    return [d for p in sorted(FRAUD.glob("*.yaml")) for d in load_yaml(p)]


def fraud_set(name, docs=None):
    """The StatefulSet whose container is named name ("onnxd" or "redis")."""
    (s,) = [d for d in (fraud_docs() if docs is None else docs) if d["kind"] == "StatefulSet"
            and pod_spec(d)["containers"][0]["name"] == name]
    return s


def fraud_doc(docs, kind, name):
    (d,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return d


def known_flags(help_text):
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", help_text, re.M))


def test_fraud_manifests_validate_against_kubernetes_schemas(versions):
    docs = fraud_docs()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [("NetworkPolicy", "redis"), ("PodDisruptionBudget", "onnxd-fraud"),
                     ("Service", "onnxd-fraud"), ("Service", "onnxd-fraud-pods"),
                     ("Service", "redis"), ("StatefulSet", "onnxd-fraud"),
                     ("StatefulSet", "redis")], kinds
    problems = [e for d in docs for v in versions for e in k8s_errors(d, v)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("which,version,change,fragment", [
    ("onnxd", -1, lambda d: d["spec"].__setitem__(
        "volumeClaimTemplate", d["spec"].pop("volumeClaimTemplates")), "volumeClaimTemplate"),
    ("onnxd", -1, lambda d: d["spec"].__setitem__("podManagementPolicy", 3),
     "podManagementPolicy"),
    ("onnxd", -1, lambda d: d["spec"]["volumeClaimTemplates"][0]["spec"].__setitem__(
        "accessMode", ["ReadWriteOnce"]), "accessMode"),
    ("onnxd", -1, lambda d: d["spec"]["persistentVolumeClaimRetentionPolicy"].__setitem__(
        "whenScaledDown", "Delete"), "whenScaledDown"),
    ("onnxd", 0, lambda d: d["spec"].pop("serviceName"), "serviceName"),  # required up to 1.31
    ("redis", -1, lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "name"),
    ("redis", -1, lambda d: d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"][
        "exec"].__setitem__("command", "redis-cli ping"), "command"),
])
def test_kubernetes_schema_check_fails_on_broken_statefulsets(versions, which, version, change,
                                                              fragment):
    d = copy.deepcopy(fraud_set(which))
    change(d)
    errs = k8s_errors(d, versions[version])
    assert errs and fragment in errs[0], errs


def test_fraud_manifests_promise_what_onnxd_and_redis_need():
    assert fraud_problems(fraud_docs()) == []


def test_fraud_flags_are_ones_onnxd_lists(help_text):
    """Fails while the binary lacks the stream mode (--feature-events-stream,
    --feature-stream-trim-ms, --feature-stream-ready-lag-ms, --feature-bootstrap)."""
    known = known_flags(help_text)
    assert "--http-port" in known and "--feature-dir" in known, help_text
    f, problems = arg_flags(pod_spec(fraud_set("onnxd"))["containers"][0]["args"])
    assert not problems, problems
    unknown = sorted(set(f) - known)
    assert not unknown, \
        f"deploy/k8s-fraud/onnxd.yaml: flags onnxd --help does not list: {unknown}"


def test_fraud_flag_check_fails_on_a_misspelled_flag(help_text):
    args = pod_spec(fraud_set("onnxd"))["containers"][0]["args"]
    args = [a.replace("--feature-dir=", "--feature-directory=") for a in args]
    f, _ = arg_flags(args)
    assert "--feature-directory" in set(f) - known_flags(help_text)


def _onnxd_args(docs):
    return pod_spec(fraud_set("onnxd", docs))["containers"][0]["args"]


def _set_flag(flag, value):
    def change(docs):
        args = _onnxd_args(docs)
        args[:] = [a for a in args if not a.startswith(flag + "=")]
        if value is not None:
            args.append(f"{flag}={value}")
    return change


def _redis(docs):
    return pod_spec(fraud_set("redis", docs))["containers"][0]


def _redis_args(change):
    def run(docs):
        c = _redis(docs)
        c["args"] = change(list(c["args"]))
    return run


def _onnxd_probe_path(probe, path):
    def change(docs):
        pod_spec(fraud_set("onnxd", docs))["containers"][0][probe]["httpGet"]["path"] = path
    return change


def _redis_data_on_empty_dir(docs):
    s = fraud_set("redis", docs)
    s["spec"].pop("volumeClaimTemplates")
    pod_spec(s)["volumes"].append({"name": "data", "emptyDir": {}})


def _split_flag(docs):
    args = _onnxd_args(docs)
    i = next(i for i, a in enumerate(args) if a.startswith("--redis="))
    args[i:i + 1] = args[i].split("=", 1)


BROKEN_FRAUD_COPIES = [
    (_redis_args(lambda a: [x.replace("always", "everysec") for x in a]),
     "appendfsync is 'everysec'"),
    (_redis_args(lambda a: a + ["--appendfsync", "everysec"]), "appendfsync is 'everysec'"),
    (_redis_args(lambda a: [x for x in a if x not in ("--appendonly", "yes")]),
     "appendonly is None"),
    (_redis_args(lambda a: a + ["--maxmemory-policy", "allkeys-lru"]), "may evict the stream"),
    (_redis_args(lambda a: a[1:]), "does not start with redis-server"),
    (_redis_data_on_empty_dir, "dir /data is not a writable volumeClaimTemplate"),
    (lambda docs: _redis(docs)["livenessProbe"]["exec"].__setitem__("command", ["true"]),
     "livenessProbe is not redis-cli ping"),
    (lambda docs: _redis(docs)["securityContext"].__setitem__("readOnlyRootFilesystem", False),
     "root filesystem not read-only"),
    (lambda docs: fraud_set("redis", docs)["spec"].__setitem__("replicas", 2),
     "not exactly one replica"),
    (_set_flag("--feature-stream-trim-ms", 86400000), "< --feature-retention-ms"),
    (_set_flag("--feature-retention-ms", 3600000), "under 24 h"),
    (_set_flag("--feature-events-stream", None), "flags missing"),
    (_set_flag("--feature-bootstrap", "http://onnxd-fraud-pods:8000"), "not ready"),
    (_set_flag("--feature-bootstrap", "http://onnxd-fraud:8080"), "does not reach --http-port"),
    (_set_flag("--feature-bootstrap", "http://onnxd:8000"), "names no Service"),
    (_set_flag("--feature-dir", "/tmp/features"), "--feature-dir /tmp/features"),
    (_set_flag("--admin-token-file", "/var/lib/onnxd/token"), "--admin-token-file"),
    (_set_flag("--redis", "redis-1.redis:6379"), "--redis host"),
    (_set_flag("--redis", "redis-0.redis:6380"), "--redis port"),
    (_set_flag("--http-port", "8080"), "is not --http-port"),
    (_split_flag, "is not --flag=value"),
    (_onnxd_probe_path("readinessProbe", "/v2/health/live"), "readinessProbe"),
    (_onnxd_probe_path("livenessProbe", "/healthz"), "livenessProbe"),
    (lambda docs: pod_spec(fraud_set("onnxd", docs)).__setitem__(
        "terminationGracePeriodSeconds", 10), "grace period"),
    (lambda docs: fraud_doc(docs, "PodDisruptionBudget", "onnxd-fraud")["spec"]["selector"][
        "matchLabels"].__setitem__("app.kubernetes.io/name", "onnxd"),
     "PodDisruptionBudget onnxd-fraud: selector"),
    (lambda docs: fraud_doc(docs, "Service", "onnxd-fraud")["spec"]["ports"][1].__setitem__(
        "targetPort", "grcp"), "targets 'grcp'"),
    (lambda docs: fraud_doc(docs, "Service", "redis").__setitem__("spec", {
        **fraud_doc(docs, "Service", "redis")["spec"], "clusterIP": ""}), "not headless"),
    (lambda docs: fraud_doc(docs, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"][0][
        "podSelector"]["matchLabels"].__setitem__("app.kubernetes.io/name", "onnxd"),
     "NetworkPolicy redis: no ingress rule"),
]


@pytest.mark.parametrize("change,fragment", BROKEN_FRAUD_COPIES,
                         ids=[f for _, f in BROKEN_FRAUD_COPIES])
def test_fraud_check_fails_on_broken_copies(change, fragment):
    docs = copy.deepcopy(fraud_docs())
    change(docs)
    problems = fraud_problems(docs)
    assert any(fragment in p for p in problems), problems


def test_redis_command_line_is_parsed_as_redis_reads_it():
    c = pod_spec(fraud_set("redis"))["containers"][0]
    opts = redis_options(list(c.get("command", [])) + c["args"])
    assert opts["appendonly"] == "yes" and opts["appendfsync"] == "always", opts
    assert opts["save"] == "" and opts["dir"] == "/data", opts
    assert redis_options(["redis-server", "--appendfsync", "always", "--appendfsync",
                          "everysec"])["appendfsync"] == "everysec"
