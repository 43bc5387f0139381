#!/usr/bin/env bash
# scripts/minroot.sh: make sure a minimal Debian 12 root file system exists, then print its path.
#
#   root=$(bash scripts/minroot.sh)     # ${ONNXD_CACHE:-~/.cache/onnxd}/minroot-bookworm
#
# The root is what `mmdebstrap --variant=minbase bookworm` makes from Debian's packages: the
# Essential and Priority: required packages (libc6, libstdc++6, bash, coreutils, apt, ...), no
# build tools and no -dev packages. The release tests unpack onnxd's tarball into it and run it
# there, so that every library the tarball fails to bundle shows up as "not found"; `make image`
# imports it as the image's base when no container registry is reachable.
#
# Contract for callers: the root is shared and must never be modified. Copy it, or bind-mount
# it read-only in a private mount namespace (`unshare -m`), as tests/ship/minroot.py does.
#
# The root is built (as root: mmdebstrap's root mode) in a temporary directory next to its final
# place and renamed into place when complete, so a run that is killed leaves no half-made root;
# leftovers of killed runs are removed by the next run. A lock serialises concurrent callers.
# The recipe's identity is written to ROOT/.onnxd-minroot; when RECIPE below changes (bump its
# number with the recipe), the root is rebuilt. mmdebstrap is installed with apt-get if missing.
# The mirror is the first Debian one in the system's apt sources (deb.debian.org otherwise), or
# $ONNXD_DEBIAN_MIRROR. Messages go to stderr; stdout is only the path. Takes 1-3 minutes the
# first time (network), then milliseconds.
set -euo pipefail

RECIPE="onnxd-minroot 1: mmdebstrap --variant=minbase bookworm main"
CACHE=${ONNXD_CACHE:-$HOME/.cache/onnxd}
ROOT=$CACHE/minroot-bookworm
STAMP=.onnxd-minroot

log() { echo "minroot: $*" >&2; }
fresh() { [ -f "$ROOT/$STAMP" ] && [ "$(cat "$ROOT/$STAMP")" = "$RECIPE" ]; }

if fresh; then
  echo "$ROOT"
  exit 0
fi

[ "$(id -u)" = 0 ] || { log "building the root needs root (mmdebstrap --mode=root); run as root"; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/minroot-bookworm.lock"
flock 9
if fresh; then # another caller built it while this one waited for the lock
  echo "$ROOT"
  exit 0
fi
rm -rf "$CACHE"/minroot-bookworm.tmp.* "$CACHE"/minroot-bookworm.old.*

if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends mmdebstrap >&2 ||
    { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends mmdebstrap >&2; }
fi

mirror=${ONNXD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

tmp=$(mktemp -d "$CACHE/minroot-bookworm.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
log "building a Debian 12 minbase root from $mirror (once; cached in $ROOT)"
t0=$SECONDS
mmdebstrap --quiet --mode=root --variant=minbase --format=directory bookworm "$tmp" \
  "deb ${mirror%/} bookworm main" >&2
echo "$RECIPE" >"$tmp/$STAMP"

if [ -e "$ROOT" ]; then
  old=$(mktemp -d "$CACHE/minroot-bookworm.old.XXXXXX")
  mv "$ROOT" "$old/"
  mv "$tmp" "$ROOT"
  rm -rf "$old"
else
  mv "$tmp" "$ROOT"
fi
trap - EXIT
log "made $ROOT in $((SECONDS - t0)) s ($(du -sh "$ROOT" | cut -f1))"
echo "$ROOT"
