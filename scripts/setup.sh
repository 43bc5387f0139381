#!/usr/bin/env bash
# Install what onnxd needs to build, test and benchmark on a fresh Debian/Ubuntu machine.
# Idempotent: each step checks before it installs. As root it runs apt-get itself; otherwise
# it prints the exact command to run and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(build-essential pkg-config clang libclang-rt-14-dev clang-format libfast-float-dev
          libdragonbox-dev libonnx-testdata gnuplot-nox liblmdb-dev libhiredis-dev libpq-dev libnghttp2-dev
          libturbojpeg0-dev libspng-dev zlib1g-dev
          redis-server postgresql
          python3-venv curl ca-certificates npm)
# make dist / make image and their tests (tests/ship): a minimal Debian 12 root (mmdebstrap), the
# OCI image built and run with podman (runc; CNI networking named, not left to apt's choice of
# a provider; slirp4netns and uidmap as the recommends bring them), systemd-analyze for the unit
APT_PKGS+=(mmdebstrap podman runc systemd containernetworking-plugins slirp4netns uidmap)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm may come from another source (nodesource); accept any working npm.
if command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [ "$p" = npm ] || tmp+=("$p"); done; missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing Debian packages; run as root:" >&2
    echo "  $cmd" >&2
    exit 1
  fi
fi

# ONNX Runtime: the system's if pkg-config knows it, else fetch the pinned header + library.
if pkg-config --exists libonnxruntime 2>/dev/null; then
  echo "setup: using system ONNX Runtime $(pkg-config --modversion libonnxruntime)"
elif [ ! -f deps/ort/lib/libonnxruntime.so.1 ]; then
  bash scripts/fetch-ort.sh "$PWD/deps/ort"
fi

# Python tooling in a venv inside the repo (git-ignored), pinned by requirements.txt.
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! cmp -s requirements.txt .venv/.requirements 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt .venv/.requirements
fi
# KServe's Python SDK (tests/integration/test_kserve_sdk.py) in a venv of its own, pinned by
# tests/integration/requirements-kserve.txt: kserve pins protobuf < 7, .venv holds protobuf 7.
if [ ! -x .venv-kserve/bin/python ]; then
  "$PYTHON" -m venv .venv-kserve
fi
if ! cmp -s tests/integration/requirements-kserve.txt .venv-kserve/.requirements 2>/dev/null; then
  .venv-kserve/bin/pip install -q --disable-pip-version-check \
    -r tests/integration/requirements-kserve.txt
  cp tests/integration/requirements-kserve.txt .venv-kserve/.requirements
fi
echo "setup: ok"
