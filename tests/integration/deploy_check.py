"""Checks for the deployment files under deploy/ (test_deploy_manifests.py,
test_deploy_dashboard.py, test_deploy_pod.py): Kubernetes manifests against Kubernetes' own
schemas, KServe manifests against the kserve SDK's typed models, and the metric names, labels
and types that the Grafana dashboard's PromQL uses against a running onnxd's /metrics.

No pytest here: every check returns a list of problems (empty: fine), so that the tests can
assert both that the real files pass and that broken copies of them fail.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# The Kubernetes versions the core manifests must validate against: 1.30 is the first whose
# preStop hook has the kubelet's sleep action on by default (deploy/k8s/deployment.yaml), up to
# the newest that kubernetes-validate bundles.
K8S_OLDEST = (1, 30)

KSERVE_API_GROUP = "serving.kserve.io/"
# Kinds that neither Kubernetes' schemas nor the kserve SDK describe, checked elsewhere.
OTHER_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def load_yaml(path):
    """The non-empty documents of a YAML file."""
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifests():
    """{path: [documents]} of every Kubernetes manifest under deploy/ (a YAML file whose
    documents have apiVersion and kind; prometheus/scrape-config.yaml is Prometheus' own
    configuration, not a manifest)."""
    out = {}
    for p in sorted(DEPLOY.rglob("*.yaml")):
        docs = load_yaml(p)
        if docs and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs):
            out[p] = docs
    return out


# ---------------------------------------------------------------------------- Kubernetes core

def k8s_versions():
    """The Kubernetes versions ("1.30.0", ...) of kubernetes-validate's bundled schemas from
    K8S_OLDEST on, oldest first."""
    from kubernetes_validate import utils

    vs = []
    for v in utils.all_versions():
        parts = tuple(int(x) for x in re.findall(r"\d+", v)[:2])
        if len(parts) == 2 and parts >= K8S_OLDEST:
            vs.append(v)
    return sorted(set(vs), key=lambda v: tuple(int(x) for x in re.findall(r"\d+", v)))


def k8s_errors(doc, version):
    """Problems of one core-kind document against Kubernetes' schema of that version, strict
    (an unknown field is an error). [] when it validates."""
    import kubernetes_validate
    from kubernetes_validate import utils

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except utils.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(document)"
        return [f"{doc.get('kind')} {where}: {e.message} (Kubernetes {version})"]
    except utils.SchemaNotFoundError as e:
        return [e.message]
    return []


# ---------------------------------------------------------------------------- fraud example

FRAUD = DEPLOY / "k8s-fraud"
DAY_MS = 86_400_000


def pod_spec(doc):
    """The pod spec of a workload (Deployment, StatefulSet) or a KServe runtime's spec."""
    return doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]


def arg_flags(args):
    """({flag: value} of --flag=value arguments, [problems]): every argument must be one."""
    out, problems = {}, []
    for a in args:
        m = re.fullmatch(r"(--[a-z0-9-]+)=(.*)", a)
        if not m:
            problems.append(f"argument {a!r} is not --flag=value")
        elif m.group(1) in out:
            problems.append(f"{m.group(1)} given twice")
        else:
            out[m.group(1)] = m.group(2)
    return out, problems


def redis_options(argv):
    """{option: value} of a redis-server command line (`redis-server --opt value ...`; the last
    occurrence wins, as in Redis)."""
    opts, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            vals = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                vals.append(argv[i + 1])
                i += 1
            opts[a[2:]] = " ".join(vals)
        i += 1
    return opts


def selects(selector, labels):
    """True if a label selector ({matchLabels: ...} or a Service's plain map) selects labels."""
    sel = selector.get("matchLabels", selector) if "matchExpressions" not in selector else None
    return sel is not None and bool(sel) and sel.items() <= labels.items()


def security_problems(where, doc):
    """A read-only, non-root, no-capability container with requests and limits, the container's
    settings over the pod's."""
    spec = pod_spec(doc)
    (c,) = spec["containers"]
    sc = dict(spec.get("securityContext") or {})
    sc.update(c.get("securityContext") or {})
    problems = []
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 1) == 0:
        problems.append(f"{where}: not runAsNonRoot with a non-zero runAsUser")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: root filesystem not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation not false")
    caps = sc.get("capabilities") or {}
    if caps.get("drop") != ["ALL"] or caps.get("add"):
        problems.append(f"{where}: capabilities not drop [ALL] with none added: {caps}")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile not RuntimeDefault")
    r = c.get("resources") or {}
    for k in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(r.get(k) or {}):
            problems.append(f"{where}: resources.{k} lacks cpu or memory")
    return problems


def _mounts(doc):
    """({mountPath: (mount, "pvc"|"emptyDir"|"secret"|...)}, [problems]) of the one container
    of a workload: each mount with the kind of volume (or volumeClaimTemplate) behind it."""
    spec = pod_spec(doc)
    (c,) = spec["containers"]
    kinds = {t["metadata"]["name"]: "claimTemplate"
             for t in doc["spec"].get("volumeClaimTemplates", [])}
    for v in spec.get("volumes", []):
        kinds[v["name"]] = next(k for k in v if k != "name")
    out, problems = {}, []
    for m in c.get("volumeMounts", []):
        if m["name"] not in kinds:
            problems.append(f"mount {m['mountPath']}: no volume or claim template {m['name']!r}")
        out[m["mountPath"]] = (m, kinds.get(m["name"]))
    return out, problems


def _under(path, mounts):
    """The longest mount path that path is in (or is), else None."""
    best = None
    for mp in mounts:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best or ""):
            best = mp
    return best


def _resolve_port(service_port, container):
    """The container port a Service port's targetPort names (by name or number), else None."""
    tp = service_port.get("targetPort", service_port["port"])
    for p in container.get("ports", []):
        if tp in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def fraud_problems(docs):
    """What the fraud example (deploy/k8s-fraud/*.yaml, every document of every file) promises
    onnxd, Redis and itself: [] when it holds. onnxd: --flag=value arguments for the stream
    mode (--feature-events-stream with --redis, --feature-dir on the pod's own claim,
    --feature-stream-trim-ms >= --feature-retention-ms >= 24 h, --feature-bootstrap at a
    Service of ready onnxd pods and the port onnxd listens on, --admin-token-file in a Secret),
    probes on the v2 health paths at the declared port, the grace period longer than preStop +
    drain, a hardened container. Redis: one replica, appendonly yes and appendfsync always on
    its command line (the last occurrence is the one Redis keeps), no eviction policy but
    noeviction, /data on a claim template, redis-cli ping probes, reached by --redis through
    its headless governing Service. Selectors that select, a NetworkPolicy that lets onnxd in.
    Flags `onnxd --help` lists are checked by the test, against the binary."""
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}
    sets = by_kind.get("StatefulSet", [])
    onnxd = [s for s in sets if pod_spec(s)["containers"][0]["name"] == "onnxd"]
    redis = [s for s in sets if pod_spec(s)["containers"][0]["name"] == "redis"]
    if len(onnxd) != 1 or len(redis) != 1:
        return [f"want one onnxd and one redis StatefulSet, found {len(onnxd)} and {len(redis)}"]
    (onnxd,), (redis,) = onnxd, redis

    # --- both StatefulSets: selectors, governing Service, hardening
    for s in (onnxd, redis):
        name = s["metadata"]["name"]
        labels = s["spec"]["template"]["metadata"]["labels"]
        if not selects(s["spec"]["selector"], labels):
            problems.append(f"StatefulSet {name}: selector does not select its pods")
        gov = services.get(s["spec"].get("serviceName"))
        if gov is None:
            problems.append(f"StatefulSet {name}: serviceName {s['spec'].get('serviceName')!r} "
                            "is no Service here")
        elif gov["spec"].get("clusterIP") != "None" or not selects(gov["spec"]["selector"], labels):
            problems.append(f"StatefulSet {name}: governing Service {gov['metadata']['name']} is "
                            "not headless or does not select its pods")
        problems += security_problems(f"StatefulSet {name}", s)

    # --- onnxd
    spec = pod_spec(onnxd)
    (c,) = spec["containers"]
    pod_labels = onnxd["spec"]["template"]["metadata"]["labels"]
    f, ps = arg_flags(c.get("args", []))
    problems += [f"onnxd: {p}" for p in ps]
    need = ["--model-repository", "--host", "--http-port", "--feature-dir", "--redis",
            "--feature-events-stream", "--feature-retention-ms", "--feature-stream-trim-ms",
            "--feature-bootstrap", "--admin-token-file"]
    missing = [n for n in need if n not in f]
    if missing:
        return problems + [f"onnxd: flags missing: {missing}"]
    if f["--host"] != "0.0.0.0":
        problems.append(f"onnxd: --host={f['--host']}, not 0.0.0.0")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != int(f["--http-port"]):
        problems.append(f"onnxd: port http {ports.get('http')} is not --http-port "
                        f"{f['--http-port']}")
    if "--grpc-port" in f and ports.get("grpc") != int(f["--grpc-port"]):
        problems.append(f"onnxd: port grpc {ports.get('grpc')} is not --grpc-port "
                        f"{f['--grpc-port']}")
    for probe, path in (("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live"), ("startupProbe", "/v2/health/live")):
        if probe not in c and probe == "startupProbe":
            continue
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("http", ports.get("http")):
            problems.append(f"onnxd: {probe} is not GET {path} on the http port: {get}")
    retention, trim = int(f["--feature-retention-ms"]), int(f["--feature-stream-trim-ms"])
    if retention < DAY_MS:
        problems.append(f"onnxd: --feature-retention-ms {retention} under 24 h")
    if trim < retention:
        problems.append(f"onnxd: --feature-stream-trim-ms {trim} < --feature-retention-ms "
                        f"{retention}")
    mounts, ps = _mounts(onnxd)
    problems += [f"onnxd: {p}" for p in ps]
    fd = _under(f["--feature-dir"], mounts)
    if fd is None or mounts[fd][1] != "claimTemplate" or mounts[fd][0].get("readOnly"):
        problems.append(f"onnxd: --feature-dir {f['--feature-dir']} is not on a writable "
                        "volumeClaimTemplate (each replica's own store)")
    tok = _under(f["--admin-token-file"], mounts)
    if tok is None or mounts[tok][1] != "secret":
        problems.append(f"onnxd: --admin-token-file {f['--admin-token-file']} is not in a "
                        "Secret volume")
    if "/tmp" not in mounts or mounts["/tmp"][0].get("readOnly"):
        problems.append("onnxd: /tmp is not a writable volume")
    if onnxd["spec"].get("replicas", 1) < 2:
        problems.append("onnxd: fewer than 2 replicas")
    # the grace period outlasts preStop and the drain
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    sleep_s = pre_stop.get("seconds", 0)
    drain_ms = int(f.get("--drain-timeout-ms", 10000))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if not (sleep_s >= 1 and grace > sleep_s + drain_ms / 1000):
        problems.append(f"onnxd: grace period {spec.get('terminationGracePeriodSeconds')} s does "
                        f"not outlast preStop {sleep_s} s + drain {drain_ms} ms")
    # --feature-bootstrap: a Service of ready onnxd pods (never a not-ready one, never headless
    # publishing unready addresses), at a port that reaches --http-port
    m = re.fullmatch(r"http://([a-z0-9.-]+?)(?:\.[a-z0-9-]+(?:\.svc(?:\.[a-z0-9.-]+)?)?)?:(\d+)/?",
                     f["--feature-bootstrap"])
    svc = services.get(m.group(1)) if m else None
    if svc is None:
        problems.append(f"onnxd: --feature-bootstrap {f['--feature-bootstrap']} names no Service "
                        "here (http://<service>:<port>)")
    else:
        sp = [p for p in svc["spec"]["ports"] if p["port"] == int(m.group(2))]
        if not selects(svc["spec"]["selector"], pod_labels):
            problems.append(f"onnxd: bootstrap Service {m.group(1)} does not select the onnxd pods")
        if svc["spec"].get("clusterIP") == "None" or svc["spec"].get("publishNotReadyAddresses"):
            problems.append(f"onnxd: bootstrap Service {m.group(1)} may answer with a pod that is "
                            "not ready (headless or publishNotReadyAddresses)")
        if len(sp) != 1 or _resolve_port(sp[0], c) != int(f["--http-port"]):
            problems.append(f"onnxd: bootstrap port {m.group(2)} of Service {m.group(1)} does not "
                            f"reach --http-port {f['--http-port']}")
    # every Service and PodDisruptionBudget named onnxd-fraud* selects the onnxd pods
    for d in list(services.values()) + by_kind.get("PodDisruptionBudget", []):
        if d["metadata"]["name"].startswith(onnxd["metadata"]["name"]) and \
                not selects(d["spec"]["selector"], pod_labels):
            problems.append(f"{d['kind']} {d['metadata']['name']}: selector does not select the "
                            "onnxd pods")
        if d["kind"] == "Service" and d["metadata"]["name"].startswith(onnxd["metadata"]["name"]):
            for sp in d["spec"]["ports"]:
                if _resolve_port(sp, c) is None:
                    problems.append(f"Service {d['metadata']['name']}: port {sp['port']} targets "
                                    f"{sp.get('targetPort')!r}, no port of the onnxd container")
    pdbs = [d for d in by_kind.get("PodDisruptionBudget", [])
            if selects(d["spec"]["selector"], pod_labels)]
    if len(pdbs) != 1:
        problems.append(f"onnxd: {len(pdbs)} PodDisruptionBudgets select the onnxd pods, want 1")

    # --- Redis
    rspec = pod_spec(redis)
    (rc,) = rspec["containers"]
    r_labels = redis["spec"]["template"]["metadata"]["labels"]
    argv = list(rc.get("command", [])) + list(rc.get("args", []))
    if not argv or argv[0] != "redis-server":
        problems.append(f"redis: the command line does not start with redis-server: {argv[:2]}")
    opts = redis_options(argv)
    if opts.get("appendonly") != "yes":
        problems.append(f"redis: appendonly is {opts.get('appendonly')!r}, not 'yes'")
    if opts.get("appendfsync") != "always":
        problems.append(f"redis: appendfsync is {opts.get('appendfsync')!r}, not 'always' "
                        "(an acknowledged event could be lost)")
    if opts.get("maxmemory-policy", "noeviction") != "noeviction":
        problems.append(f"redis: maxmemory-policy {opts['maxmemory-policy']} may evict the stream")
    if redis["spec"].get("replicas", 1) != 1:
        problems.append("redis: not exactly one replica")
    rmounts, ps = _mounts(redis)
    problems += [f"redis: {p}" for p in ps]
    data = opts.get("dir", "/data")
    if data not in rmounts or rmounts[data][1] != "claimTemplate" or \
            rmounts[data][0].get("readOnly"):
        problems.append(f"redis: its dir {data} is not a writable volumeClaimTemplate")
    if "/tmp" not in rmounts or rmounts["/tmp"][1] != "emptyDir" or \
            rmounts["/tmp"][0].get("readOnly"):
        problems.append("redis: /tmp is not a writable emptyDir")
    for probe in ("readinessProbe", "livenessProbe"):
        cmd = " ".join(((rc.get(probe) or {}).get("exec") or {}).get("command", []))
        if not re.search(r"\bredis-cli\b.*\bping\b", cmd):
            problems.append(f"redis: {probe} is not redis-cli ping: {cmd!r}")
    rports = {p.get("name"): p["containerPort"] for p in rc.get("ports", [])}
    # --redis: <pod>.<governing Service> or the governing Service, at a port reaching Redis
    host, _, port = f["--redis"].rpartition(":")
    gov = redis["spec"].get("serviceName")
    names = {gov} | {f"{redis['metadata']['name']}-{i}.{gov}"
                     for i in range(redis["spec"].get("replicas", 1))}
    short = re.sub(r"\.svc(\..*)?$", "", host)
    short = short if short in names else short.rsplit(".", 1)[0]  # <name>.<namespace>
    if short not in names:
        problems.append(f"onnxd: --redis host {host} is not {sorted(names)}")
    elif gov in services:
        sp = [p for p in services[gov]["spec"]["ports"] if str(p["port"]) == port]
        if len(sp) != 1 or _resolve_port(sp[0], rc) is None:
            problems.append(f"onnxd: --redis port {port} is no port of Service {gov} reaching "
                            "the Redis container")
    # the NetworkPolicy in front of Redis lets the onnxd pods in
    for np in by_kind.get("NetworkPolicy", []):
        if not selects(np["spec"]["podSelector"], r_labels):
            problems.append(f"NetworkPolicy {np['metadata']['name']}: does not select the Redis "
                            "pods")
            continue
        ok = any(any("podSelector" in fr and selects(fr["podSelector"], pod_labels)
                     for fr in rule.get("from", []))
                 and all(p.get("port") in (None, *rports.keys(), *rports.values())
                         for p in rule.get("ports", []))
                 for rule in np["spec"].get("ingress", []))
        if not ok:
            problems.append(f"NetworkPolicy {np['metadata']['name']}: no ingress rule lets the "
                            "onnxd pods reach Redis's port")
    return problems


# ---------------------------------------------------------------------------- KServe kinds

KSERVE_VENV = ROOT / "build" / "bench" / "venv-kserve"
KSERVE_REQ = ROOT / "bench" / "peers" / "kserve" / "requirements.txt"


def kserve_python():
    """The Python of a venv with the kserve SDK (kserve pins fastapi, pydantic and protobuf of
    its own, so it cannot live in .venv): $ONNXD_KSERVE_PYTHON; else .venv-kserve when
    scripts/setup.sh made it; else build/bench/venv-kserve, made here from
    bench/peers/kserve/requirements.txt (pinned) when it is missing or older than that file:
    the venv `make bench` makes for its KServe peer (same place, same stamp), so either one
    makes it for both. Raises RuntimeError saying why it could not be made."""
    env = os.environ.get("ONNXD_KSERVE_PYTHON")
    if env:
        return env
    setup_venv = ROOT / ".venv-kserve" / "bin" / "python"
    if setup_venv.exists():
        return str(setup_venv)
    py = KSERVE_VENV / "bin" / "python"
    stamp = KSERVE_VENV / ".requirements"
    KSERVE_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(KSERVE_VENV.parent / ".venv-kserve.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time (two test runs, or make bench)
        if py.exists() and stamp.exists() and stamp.read_bytes() == KSERVE_REQ.read_bytes():
            return str(py)
        base = shutil.which("python3.11") or shutil.which("python3")
        if not base:
            raise RuntimeError("no python3 to make build/bench/venv-kserve with")
        for cmd in ([base, "-m", "venv", str(KSERVE_VENV)],
                    [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                     str(KSERVE_REQ)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[:4])} failed: "
                                   + (r.stderr.strip()[-800:] or f"exit {r.returncode}"))
        shutil.copyfile(KSERVE_REQ, stamp)
    return str(py)


def kserve_errors(paths):
    """{(path, index): (kind, [problems])} for every document of the KServe manifests at paths,
    checked by kserve_typed_check.py in the kserve venv."""
    script = Path(__file__).with_name("kserve_typed_check.py")
    r = subprocess.run([kserve_python(), str(script), *map(str, paths)], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"kserve_typed_check.py exit {r.returncode}: {r.stderr[-2000:]}")
    out = {}
    for line in r.stdout.splitlines():
        d = json.loads(line)
        out[(d["file"], d["index"])] = (d["kind"], d["errors"])
    return out


# ---------------------------------------------------------------------------- Prometheus Operator

NODE_SRC = Path(__file__).with_name("deploy-node")
NODE_DIR = ROOT / "build" / "deploy-node"


def operator_node_modules():
    """build/deploy-node/node_modules with @kubernetes-models/prometheus-operator, installed
    by `npm ci` from tests/integration/deploy-node/package-lock.json (pinned) when missing or
    when the lock file changed. Raises RuntimeError saying why it could not be installed."""
    lock = NODE_SRC / "package-lock.json"
    stamp = NODE_DIR / ".package-lock.json"
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    with open(NODE_DIR / ".lock", "w") as fl:
        fcntl.flock(fl, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_bytes() == lock.read_bytes():
            return NODE_DIR / "node_modules"
        npm = shutil.which("npm")
        if not npm:
            raise RuntimeError("npm is not installed (scripts/setup.sh installs it)")
        for f in ("package.json", "package-lock.json"):
            shutil.copyfile(NODE_SRC / f, NODE_DIR / f)
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"npm ci failed: {(r.stderr or r.stdout).strip()[-800:]}")
        shutil.copyfile(lock, stamp)
    return NODE_DIR / "node_modules"


GO_SRC = Path(__file__).with_name("deploy-go")
GO_BIN = ROOT / "build" / "deploy-go" / "deploy-go"


def operator_go_checker():
    """build/deploy-go/deploy-go, built from tests/integration/deploy-go (go.mod and go.sum pin
    the Prometheus Operator's API module) when missing or older than its sources. Raises
    RuntimeError saying why it could not be built."""
    srcs = [GO_SRC / f for f in ("main.go", "go.mod", "go.sum")]
    if GO_BIN.exists() and all(GO_BIN.stat().st_mtime >= p.stat().st_mtime for p in srcs):
        return GO_BIN
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go",
                                                                     os.X_OK) else None)
    if not go:
        raise RuntimeError("no Go toolchain (go) to build tests/integration/deploy-go")
    GO_BIN.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([go, "build", "-mod=readonly", "-trimpath", "-o", str(GO_BIN), "."],
                       cwd=GO_SRC, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "GOFLAGS": "-buildvcs=false"})
    if r.returncode != 0:
        raise RuntimeError(f"go build failed: {r.stderr.strip()[-800:]}")
    return GO_BIN


def operator_errors(docs):
    """[(kind, [problems])] of Prometheus Operator documents, checked twice: against the
    operator's CRD schema (servicemonitor_check.js: required fields, types, patterns, enums)
    and decoded into the operator's Go API types with unknown fields refused (deploy-go: a
    misspelled field, which the CRD schema lets through as the API server prunes it)."""
    r = subprocess.run([str(operator_go_checker())], input=json.dumps(docs), capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"deploy-go exit {r.returncode}: {r.stderr[-2000:]}")
    go_results = json.loads(r.stdout)
    modules = operator_node_modules()
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        raise RuntimeError("node is not installed (scripts/setup.sh installs npm and node)")
    script = Path(__file__).with_name("servicemonitor_check.js")
    r = subprocess.run([node, str(script)], input=json.dumps(docs), capture_output=True,
                       text=True, timeout=120, env={**os.environ, "NODE_PATH": str(modules)})
    if r.returncode != 0:
        raise RuntimeError(f"servicemonitor_check.js exit {r.returncode}: {r.stderr[-2000:]}")
    return [(d["kind"], d["errors"] + g["errors"])
            for d, g in zip(json.loads(r.stdout), go_results, strict=True)]


# ---------------------------------------------------------------------------- PromQL

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "atan2"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
RATE_FUNCS = {"rate", "irate", "increase"}
# Labels Prometheus adds when it scrapes: never in the exposition itself.
TARGET_LABELS = {"instance", "job"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<lbrace>\{)
  | (?P<rbrace>\})
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<op>=~|!~|!=|==|<=|>=|=|<|>|\+|-|\*|/|%|\^)
  | (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
""", re.X)


def _tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def _unquote(s):
    return json.loads('"' + s[1:-1].replace('"', '\\"') + '"') if s[0] == "'" else json.loads(s)


def promql_selectors(expr):
    """The series selectors of a PromQL expression: [(metric, [(label, op, value)], funcs)],
    funcs being the functions and aggregations enclosing it, innermost last. Label lists of
    by/without/on/ignoring/group_* are skipped, and so are function and aggregation names,
    keywords, numbers, strings and range or subquery brackets."""
    toks = _tokens(expr)
    out, stack, pending, i = [], [], None, 0  # stack: the function (or None) of each "("
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][0] if i + 1 < len(toks) else None
        if kind == "ident" and text in LABEL_LIST_KEYWORDS and nxt == "lparen":
            while toks[i][0] != "rparen":  # skip "(label, ...)"
                i += 1
        elif kind == "ident" and (nxt == "lparen" or text in AGGREGATIONS):
            pending = text  # a function, or an aggregation whose "(" may follow a by (...)
        elif kind == "ident" and text in KEYWORDS:
            pass
        elif kind == "ident":
            matchers = []
            if nxt == "lbrace":
                i += 2
                while toks[i][0] != "rbrace":
                    if toks[i][0] == "comma":
                        i += 1
                        continue
                    (_, label), (_, op), (_, val) = toks[i], toks[i + 1], toks[i + 2]
                    matchers.append((label, op, _unquote(val)))
                    i += 3
            out.append((text, matchers, [f for f in stack if f]))
        elif kind == "lbrace":
            raise ValueError(f"selector without a metric name in {expr!r}")
        elif kind == "lparen":
            stack.append(pending)
            pending = None
        elif kind == "rparen":
            stack.pop()
        i += 1
    return out


def parse_exposition(text):
    """(types {family: type}, samples {sample name: [labels dict]}) of Prometheus text."""
    types, samples = {}, {}
    line_re = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+\S+")
    label_re = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
        elif line and not line.startswith("#"):
            m = line_re.match(line)
            if m:
                labels = {k: json.loads(f'"{v}"') for k, v in label_re.findall(m.group(2) or "")}
                samples.setdefault(m.group(1), []).append(labels)
    return types, samples


def family_of(sample, types):
    """The metric family a sample name belongs to: a histogram's or summary's _bucket, _sum and
    _count samples belong to the family without the suffix; any other name is its own family
    (nv_inference_count is a counter of its own, not the _count of a histogram)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample[: -len(suffix)]
        if sample.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            return base
    return sample


def _matches(labels, matchers):
    for label, op, val in matchers:
        if "$" in val or label in TARGET_LABELS:
            continue  # a dashboard variable, or a label the scrape adds
        have = labels.get(label, "")
        ok = {"=": have == val, "!=": have != val, "=~": re.fullmatch(val, have) is not None,
              "!~": re.fullmatch(val, have) is None}[op]
        if not ok:
            return False
    return True


def promql_problems(expr, types, samples):
    """What is wrong with expr against one onnxd's /metrics: a metric no sample has, a label no
    sample of it carries, literal matchers no sample satisfies, rate()/increase() over
    something that is not a counter, histogram_quantile() over something that is not a
    histogram's _bucket."""
    problems = []
    for metric, matchers, funcs in promql_selectors(expr):
        fam = family_of(metric, types)
        if metric not in samples:
            problems.append(f"{metric}: no such metric in /metrics (family {fam})")
            continue
        typ = types.get(fam)
        if typ is None:
            problems.append(f"{metric}: family {fam} has no # TYPE line")
        have = set().union(*(s.keys() for s in samples[metric]))
        for label, _, _ in matchers:
            if label not in have and label not in TARGET_LABELS:
                problems.append(f"{metric}: no sample has label {label!r} (it has {sorted(have)})")
        if not any(_matches(s, matchers) for s in samples[metric]):
            problems.append(f"{metric}: no sample matches {matchers}")
        inner = funcs[-1] if funcs else None
        if inner in RATE_FUNCS and not (typ == "counter" or fam != metric):
            problems.append(f"{inner}() over {metric}, a {typ}, not a counter")
        if "histogram_quantile" in funcs and not (typ == "histogram" and metric.endswith("_bucket")):
            problems.append(f"histogram_quantile() over {metric}, not a histogram's _bucket")
    return problems


def dashboard_queries(dash):
    """[(where, PromQL)] of a Grafana dashboard: every panel target's expr (rows' nested panels
    included) and every query variable's label_values() / query_result() query."""
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", q or "")
        if m:
            arg = m.group(1)
            if q.strip().startswith("label_values"):
                arg = arg.rsplit(",", 1)[0] if "," in arg else arg
            out.append((f"variable ${v.get('name')}", arg))
    return out


def dashboard_problems(dash, metrics_text):
    """Every problem of every query of the dashboard against one /metrics document."""
    types, samples = parse_exposition(metrics_text)
    problems = []
    for where, expr in dashboard_queries(dash):
        try:
            problems += [f"{where}: {p}" for p in promql_problems(expr, types, samples)]
        except (ValueError, IndexError) as e:
            problems.append(f"{where}: cannot parse {expr!r}: {e}")
    return problems


def dashboard_metric_names(dash):
    """The metric (sample) names the dashboard's queries use."""
    return sorted({m for _, expr in dashboard_queries(dash) for m, _, _ in promql_selectors(expr)})


if __name__ == "__main__":  # python deploy_check.py metrics.txt: the dashboard against a file
    d = json.loads((DEPLOY / "grafana" / "onnxd.json").read_text())
    for p in dashboard_problems(d, Path(sys.argv[1]).read_text()):
        print(p)
