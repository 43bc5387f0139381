#!/usr/bin/env bash
# scripts/podman.sh: podman the way onnxd's make targets and tests run it.
#
#   bash scripts/podman.sh ARGS...       (same arguments as podman)
#
# - CONTAINERS_CONF is scripts/containers.conf (runtime runc, cgroupfs, events in a file),
#   unless the caller set one;
# - `run`, `create` and `build` get --ulimit nofile=N:N --ulimit nproc=N:N at the calling
#   shell's hard limits (nproc at most kernel.pid_max): podman's defaults (nofile 1048576) are
#   above what a sandbox that cannot raise rlimits allows, and the container would not start.
#   Arguments given later win.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
command -v podman >/dev/null ||
  { echo "podman.sh: podman is not installed (scripts/setup.sh installs it)" >&2; exit 127; }
# nproc is also capped at kernel.pid_max: a sandbox seen here refuses (EPERM in runc's
# setrlimit) any RLIMIT_NPROC above it, though the shell's hard limit is higher; more
# processes than pids cannot exist anyway.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo unlimited)
if [ "$pid_max" != unlimited ] && { [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; }; then
  nproc=$pid_max
fi
lim=()
[ "$nofile" = unlimited ] || lim+=(--ulimit "nofile=$nofile:$nofile")
[ "$nproc" = unlimited ] || lim+=(--ulimit "nproc=$nproc:$nproc")
case ${1:-} in
run | create | build)
  sub=$1
  shift
  exec podman "$sub" "${lim[@]+"${lim[@]}"}" "$@"
  ;;
*) exec podman "$@" ;;
esac
