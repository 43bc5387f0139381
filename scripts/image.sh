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
      "${P[@]}" import --change "LABEL org.onnxd.minroot=\"$recipe\"" - "$LOCAL_BASE" >/dev/null
    echo "image: imported $root as $LOCAL_BASE ($((SECONDS - t0)) s)"
  fi
fi

base_id=$("${P[@]}" image inspect -f '{{.Id}}' "$base")
inputs=$({ sha256sum "$TGZ" Containerfile | cut -d' ' -f1; echo "$base_id"; } | sha256sum | cut -c1-64)
have=$("${P[@]}" image inspect -f '{{index .Labels "org.onnxd.inputs"}}' "$TAG" 2>/dev/null || true)
if [ "$have" = "$inputs" ]; then
  echo "image: $TAG is up to date"
else
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$TGZ" "$ctx/"
  t0=$SECONDS
  "${P[@]}" build --quiet -f Containerfile \
    --build-arg BASE="$base" --build-arg TARBALL="$(basename "$TGZ")" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u -d "@$(git log -1 --format=%ct 2>/dev/null || echo 0)" +%Y-%m-%dT%H:%M:%SZ)" \
    --label org.onnxd.inputs="$inputs" -t "$TAG" "$ctx" >/dev/null
  echo "image: built $TAG on $base ($((SECONDS - t0)) s)"
fi
"${P[@]}" history --human=false --format '{{.Size}}	{{.CreatedBy}}' "$TAG" |
  awk -F'\t' '$1 > 0 { printf "image: layer %10d bytes  %s\n", $1, substr($2, 1, 90) }'
echo "image: $TAG: $("${P[@]}" image inspect -f '{{.Size}}' "$TAG") bytes"
