#!/usr/bin/env bash
# scripts/podman.sh: podman the way onnxd's make targets and tests run it.
#
#   bash scripts/podman.sh ARGS...       (same arguments as podman)
#
# - CONTAINERS_CONF is scripts/containers.conf (runtime runc, cgroupfs, events in a file),
#   unless the caller set one;
# - `run`, `create` and `build` get --ulimit nofile=N:N --ulimit nproc=N:N at the calling
#   shell's hard limits: podman's defaults (nofile 1048576) are above what a sandbox that cannot
#   raise rlimits allows, and the container would not start. Arguments given later win.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
command -v podman >/dev/null ||
  { echo "podman.sh: podman is not installed (scripts/setup.sh installs it)" >&2; exit 127; }
lim=()
for l in "nofile $(ulimit -Hn)" "nproc $(ulimit -Hu)"; do
  read -r what n <<<"$l"
  [ "$n" = unlimited ] || lim+=(--ulimit "$what=$n:$n")
done
case ${1:-} in
run | create | build)
  sub=$1
  shift
  exec podman "$sub" "${lim[@]+"${lim[@]}"}" "$@"
  ;;
*) exec podman "$@" ;;
esac
