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
