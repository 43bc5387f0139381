#!/usr/bin/env bash
# scripts/image.sh: build onnxd's OCI image from Containerfile with podman (`make image`).
#
#   bash scripts/image.sh dist/onnxd-<version>-linux-<arch>.tar.gz onnxd:<version>
#
# Base: $ONNXD_IMAGE_BASE when set; else docker.io/library/debian:bookworm-slim when it is
# present or can be pulled (within 60 s); else localhost/onnxd-base:bookworm, the Debian 12
# minbase root of scripts/minroot.sh imported with `podman import` (re-imported when the root's
# recipe changes). The image is rebuilt only when the tarball, the Containerfile or the base
# changed (their digest is the image's label org.onnxd.inputs). Podman runs through
# scripts/podman.sh (runc, current rlimits). Prints each step's time, the image's size and the
# size of each layer; the last line is "image: TAG: N bytes".
set -euo pipefail
cd "$(dirname "$0")/.."
TGZ=${1:?usage: image.sh TARBALL TAG}
TAG=${2:?usage: image.sh TARBALL TAG}
P=(bash scripts/podman.sh)
REGISTRY_BASE=docker.io/library/debian:bookworm-slim
LOCAL_BASE=localhost/onnxd-base:bookworm
name=$(basename "$TGZ" .tar.gz)
version=${name#onnxd-}
version=${version%-linux-*}

base=${ONNXD_IMAGE_BASE:-}
if [ -z "$base" ]; then
  t0=$SECONDS
  if "${P[@]}" image exists "$REGISTRY_BASE" ||
    timeout 60 "${P[@]}" pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then
    base=$REGISTRY_BASE
  else
    echo "image: $REGISTRY_BASE cannot be pulled ($((SECONDS - t0)) s): base $LOCAL_BASE"
    base=$LOCAL_BASE
  fi
fi
if [ "$base" = "$LOCAL_BASE" ]; then
  root=$(bash scripts/minroot.sh)
  recipe=$(cat "$root/.onnxd-minroot")
  have=$("${P[@]}" image inspect -f '{{index .Labels "org.onnxd.minroot"}}' "$LOCAL_BASE" 2>/dev/null || true)
  if [ "$have" != "$recipe" ]; then
    t0=$SECONDS
    tar -C "$root" --numeric-owner --exclude=./.onnxd-minroot -cf - . |
      "${P[@]}" import --quiet --change "LABEL org.onnxd.minroot=\"$recipe\"" - "$LOCAL_BASE" >/dev/null
    echo "image: imported $root as $LOCAL_BASE ($((SECONDS - t0)) s)"
  fi
fi

base_id=$("${P[@]}" image inspect -f '{{.Id}}' "$base")
inputs=$({ sha256sum "$TGZ" Containerfile | cut -d' ' -f1; echo "$base_id"; } | sha256sum | cut -c1-64)
have=$("${P[@]}" image inspect -f '{{index .Labels "org.onnxd.inputs"}}' "$TAG" 2>/dev/null || true)
if [ "$have" = "$inputs" ]; then
  echo "image: $TAG is up to date (org.onnxd.inputs $inputs)"
else
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$TGZ" "$ctx/"
  t0=$SECONDS
  old_id=$("${P[@]}" image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
  "${P[@]}" build --quiet -f Containerfile \
    --build-arg BASE="$base" --build-arg TARBALL="$(basename "$TGZ")" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u -d "@$(git log -1 --format=%ct 2>/dev/null || echo 0)" +%Y-%m-%dT%H:%M:%SZ)" \
    --label org.onnxd.inputs="$inputs" -t "$TAG" "$ctx" >/dev/null
  echo "image: built $TAG on $base ($((SECONDS - t0)) s)"
  # the image this one replaced, unless something still uses it (a container, another tag), and
  # the first stages left by builds of this Containerfile (~300 MB each; labelled in it)
  [ -z "$old_id" ] || "${P[@]}" rmi "$old_id" >/dev/null 2>&1 || true
  for id in $("${P[@]}" images -q --filter dangling=true --filter label=org.onnxd.stage=rootfs); do
    "${P[@]}" rmi "$id" >/dev/null 2>&1 || true
  done
fi
# the Containerfile's three file layers, in order
"${P[@]}" history --format json "$TAG" | python3 -c "
import json, sys
sizes = [h['size'] for h in reversed(json.load(sys.stdin)) if h['size']]
names = ['loader and libraries from the base', 'state directory', 'onnxd (the tarball tree)']
for n, s in zip(names, sizes):
    print('image: layer %10d bytes  %s' % (s, n))"
echo "image: $TAG: $("${P[@]}" image inspect -f '{{.Size}}' "$TAG") bytes"
