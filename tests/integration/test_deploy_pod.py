"""Pod simulation: onnxd's image run exactly as deploy/kserve/cluster-serving-runtime.yaml
declares it, for the example InferenceService of deploy/kserve/inference-service.yaml.

What KServe and the kubelet would do, done here with podman (scripts/podman.sh: runc, rlimits
at the current hard limits) and a small prober:
- the runtime's container: its image (`make image` builds it; the tag must be the one the
  manifest names), its args after KServe's templating ({{.Name}} -> the InferenceService's
  name), its env, its port published on a free loopback port;
- the model where the storage initializer leaves it: a bare model.onnx in /mnt/models,
  mounted read-only;
- the runtime's volumes: each emptyDir as a tmpfs of its sizeLimit at its mountPath;
- its securityContext: runAsUser/runAsGroup, readOnlyRootFilesystem (--read-only, and no tmpfs
  of podman's own: only the declared volumes are writable), capabilities drop ALL,
  allowPrivilegeEscalation false (no-new-privileges), RuntimeDefault seccomp (podman's
  default profile); its CPU and memory limits;
- the declared readiness and liveness probes polled at their paths and ports with their
  initialDelaySeconds, periodSeconds, timeoutSeconds and thresholds: the pod must turn ready
  before liveness would have restarted it, and no probe may fail while it serves;
- inference through the InferenceService's name (model "mlp16", version 1) with Triton's
  client, equal to ONNX Runtime's own output, and /metrics where the runtime's prometheus.kserve.io
  annotations point;
- SIGTERM, as the kubelet sends it, and the pod's grace period (the InferenceService's
  terminationGracePeriodSeconds): onnxd must exit 0 within it, its readiness never 200 again.
"""

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, free_port
from deploy_check import DEPLOY, load_yaml

PODMAN = ["bash", str(ROOT / "scripts" / "podman.sh")]
MODEL = ROOT / "models" / "mlp16" / "1" / "model.onnx"


def _env():  # under `make test`: the outer make's jobserver is not ours
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def podman(*args, timeout=120, check=True):
    r = subprocess.run([*PODMAN, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=_env())
    if check and r.returncode != 0:
        pytest.fail(f"podman {' '.join(map(str, args[:3]))}: exit {r.returncode}\n"
                    f"{r.stderr[-2000:]}", pytrace=False)
    return r


@pytest.fixture(scope="module")
def runtime():
    (doc,) = load_yaml(DEPLOY / "kserve" / "cluster-serving-runtime.yaml")
    return doc


@pytest.fixture(scope="module")
def isvc():
    (doc,) = load_yaml(DEPLOY / "kserve" / "inference-service.yaml")
    return doc


@pytest.fixture(scope="module")
def image(runtime):
    """The image the runtime names, built by `make image` (quick when up to date)."""
    if "/san-" in os.environ.get("ONNXD_BIN", ""):
        pytest.skip("the image holds the release build; the release suite runs this")
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (scripts/setup.sh installs it)")
    r = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "image"],
                       capture_output=True, text=True, timeout=1800, env=_env())
    out = r.stdout + r.stderr
    if r.returncode != 0:
        pytest.fail(f"make image: exit {r.returncode}\n{out[-3000:]}", pytrace=False)
    m = re.search(r"^image: (\S+): (\d+) bytes$", out, re.M)
    assert m, f"make image printed no 'image: TAG: N bytes' line:\n{out[-2000:]}"
    (c,) = runtime["spec"]["containers"]
    assert c["image"] == m.group(1), f"the runtime names {c['image']}, make image built {m.group(1)}"
    return m.group(1)


def templated(args, isvc):
    """KServe's templating of a runtime's args: {{.Name}} is the InferenceService's name."""
    out = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in args]
    left = [a for a in out if "{{" in a]
    assert not left, f"templates this simulation does not fill: {left}"
    return out


def podman_run_argv(runtime, isvc, image, name, model_dir, host_port):
    """podman run arguments for the runtime's container as a pod would run it."""
    spec = runtime["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    argv = ["run", "-d", "--name", name, "--pull=never"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    argv += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    if sc.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if sc["capabilities"]["drop"] == ["ALL"]:
        argv += ["--cap-drop=ALL"]
    if sc.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"  # podman's default profile
    assert not sc.get("privileged")
    lim = c["resources"]["limits"]
    argv += ["--cpus", str(float(lim["cpu"])), "--memory", lim["memory"].replace("Gi", "g")
             .replace("Mi", "m")]
    for e in c.get("env", []):
        argv += ["-e", f"{e['name']}={e['value']}"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        # an emptyDir starts empty and writable by all: no copy of the image's directory
        v = volumes[m["name"]]
        assert "emptyDir" in v, f"volume {m['name']}: only emptyDir volumes are simulated"
        size = v["emptyDir"].get("sizeLimit", "64Mi").replace("Gi", "g").replace("Mi", "m")
        argv += ["--mount", f"type=tmpfs,destination={m['mountPath']},tmpfs-size={size},"
                            "tmpfs-mode=0777,notmpcopyup"]
    # KServe's storage initializer leaves the model in an emptyDir mounted read-only here.
    argv += ["-v", f"{model_dir}:/mnt/models:ro"]
    (port,) = c["ports"]
    argv += ["-p", f"127.0.0.1:{host_port}:{port['containerPort']}"]
    return argv + [image, *templated(c["args"], isvc)]


class Prober(threading.Thread):
    """One Kubernetes HTTP probe, run as the kubelet runs it: first after initialDelaySeconds,
    then every periodSeconds, each with timeoutSeconds; success is a status in [200, 400).
    Records every result; `ok` turns True after successThreshold successes in a row and False
    after failureThreshold failures in a row."""

    def __init__(self, name, probe, container_port, host_port):
        super().__init__(daemon=True, name=name)
        get = probe["httpGet"]
        assert get["port"] in (container_port["containerPort"], container_port["name"]), get
        self.path = get["path"]
        self.host_port = host_port
        self.delay = probe.get("initialDelaySeconds", 0)
        self.period = probe.get("periodSeconds", 10)
        self.timeout = probe.get("timeoutSeconds", 1)
        self.success_threshold = probe.get("successThreshold", 1)
        self.failure_threshold = probe.get("failureThreshold", 3)
        self.results = []  # (seconds since start, status or error)
        self.ok = None
        self.flipped_false = False
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def probe_once(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.host_port, timeout=self.timeout)
            c.request("GET", self.path)
            r = c.getresponse()
            r.read()
            c.close()
            return r.status
        except (OSError, http.client.HTTPException) as e:
            return type(e).__name__

    def run(self):
        if self.stop.wait(self.delay):
            return
        succ = fail = 0
        while not self.stop.is_set():
            res = self.probe_once()
            self.results.append((round(time.monotonic() - self.t0, 2), res))
            good = isinstance(res, int) and 200 <= res < 400
            succ, fail = (succ + 1, 0) if good else (0, fail + 1)
            if succ >= self.success_threshold:
                self.ok = True
            if fail >= self.failure_threshold:
                if self.ok:
                    self.flipped_false = True
                self.ok = False
            if self.stop.wait(self.period):
                return


def test_runtime_runs_as_declared(runtime, isvc, image, tmp_path):
    import tritonclient.http as httpclient

    name = f"onnxd-podsim-{os.getpid()}"
    model_dir = tmp_path / "mnt-models"
    model_dir.mkdir()
    shutil.copyfile(MODEL, model_dir / "model.onnx")  # a bare model.onnx: single-model mode
    os.chmod(model_dir, 0o755)
    os.chmod(model_dir / "model.onnx", 0o644)
    host_port = free_port()
    (c,) = runtime["spec"]["containers"]
    (cport,) = c["ports"]
    isvc_name = isvc["metadata"]["name"]
    grace = isvc["spec"]["predictor"].get("terminationGracePeriodSeconds", 30)
    podman("rm", "-f", name, check=False)
    ready = Prober("readiness", c["readinessProbe"], cport, host_port)
    live = Prober("liveness", c["livenessProbe"], cport, host_port)
    try:
        podman(*podman_run_argv(runtime, isvc, image, name, model_dir, host_port))
        ready.start()
        live.start()
        # ready before liveness would have had the kubelet restart the container
        live_budget = live.delay + live.period * live.failure_threshold
        deadline = time.monotonic() + live_budget + ready.period
        while ready.ok is not True and time.monotonic() < deadline:
            state = podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", (state, podman("logs", name, check=False).stderr[-2000:])
            assert live.ok is not False, f"liveness failed: {live.results}"
            time.sleep(0.05)
        assert ready.ok is True, (f"not ready within {live_budget} s: readiness {ready.results}"
                                  f"\n{podman('logs', name, check=False).stderr[-2000:]}")
        t_ready = time.monotonic() - ready.t0
        user = podman("inspect", "-f", "{{.Config.User}}", name).stdout.strip()
        assert user == f"{c['securityContext']['runAsUser']}:{c['securityContext']['runAsGroup']}"

        # served under the InferenceService's name, version 1, as ONNX Runtime computes it
        import onnxruntime as ort

        x = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
        want = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(
            ["output"], {"input": x})[0]
        cl = httpclient.InferenceServerClient(f"127.0.0.1:{host_port}", network_timeout=30)
        try:
            meta = cl.get_model_metadata(isvc_name)
            assert meta["name"] == isvc_name and "1" in meta["versions"], meta
            for binary in (False, True):
                inp = httpclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                out = cl.infer(isvc_name, [inp], outputs=[
                    httpclient.InferRequestedOutput("output", binary_data=binary)])
                np.testing.assert_allclose(out.as_numpy("output"), want, rtol=1e-5, atol=1e-6)
            assert cl.is_model_ready(isvc_name, "1")
        finally:
            cl.close()
        ann = runtime["spec"]["annotations"]
        assert int(ann["prometheus.kserve.io/port"]) == cport["containerPort"]
        mc = http.client.HTTPConnection("127.0.0.1", host_port, timeout=10)
        mc.request("GET", ann["prometheus.kserve.io/path"])
        mr = mc.getresponse()
        text = mr.read().decode()
        mc.close()
        assert mr.status == 200 and f'nv_inference_request_success{{model="{isvc_name}"' in text

        # two more periods of both probes while serving: no failure
        time.sleep(2 * max(ready.period, live.period) + 0.5)
        for p in (ready, live):
            bad = [r for r in p.results if r[0] >= t_ready and r[1] != 200]
            assert not bad and p.ok is True, (p.name, p.results)

        # SIGTERM as the kubelet sends it; exit 0 within the grace period
        n_ready = len(ready.results)
        live.stop.set()
        t_term = time.monotonic()
        podman("kill", "--signal", "TERM", name)
        after = []
        while time.monotonic() - t_term < grace:
            state = podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                           name).stdout.split()
            if state[0] == "exited":
                break
            after.append(ready.probe_once())
            time.sleep(0.05)
        took = time.monotonic() - t_term
        ready.stop.set()
        state = podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
        logs = podman("logs", name, check=False)
        assert state == ["exited", "0"], (state, took, (logs.stdout + logs.stderr)[-2000:])
        assert took < grace, took
        assert 200 not in after + [r[1] for r in ready.results[n_ready:]
                                   if r[0] >= t_term - ready.t0], after
        print(f"pod simulation: ready {t_ready:.2f} s after start; exit 0 {took:.2f} s after "
              f"SIGTERM (grace {grace} s); readiness {ready.results[:3]}...")
    finally:
        ready.stop.set()
        live.stop.set()
        podman("rm", "-f", name, check=False)
