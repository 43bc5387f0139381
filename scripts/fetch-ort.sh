#!/usr/bin/env bash
# Fetch ONNX Runtime for onnxd when the system has none (pkg-config libonnxruntime fails).
#   headers: Debian trixie's libonnxruntime-dev .deb, downloaded with a private apt
#            configuration (the system's sources are never touched) and unpacked with dpkg -x;
#   library: bin/napi-v6/linux/x64/libonnxruntime.so.1 from the pinned npm onnxruntime-node.
# Result: $ORT_DIR/include/onnxruntime_c_api.h (+ friends) and $ORT_DIR/lib/libonnxruntime.so.1.
# Downloads are cached in $ONNXD_CACHE (default ~/.cache/onnxd), outside the build folder.
set -euo pipefail
ORT_NODE_VERSION=${ORT_NODE_VERSION:-1.30.0}
ORT_DIR=${1:?usage: fetch-ort.sh OUT_DIR}
CACHE=${ONNXD_CACHE:-$HOME/.cache/onnxd}
mkdir -p "$CACHE" "$ORT_DIR/include" "$ORT_DIR/lib"

# ---- headers from trixie's libonnxruntime-dev
hdr_deb=$(ls "$CACHE"/libonnxruntime-dev_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$hdr_deb" ]; then
  apt_dir="$CACHE/apt-trixie"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  # Use the mirror the system already uses; only the suite differs.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
           | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  [ -n "$mirror" ] || { echo "fetch-ort: no Debian mirror in the system's apt sources" >&2; exit 1; }
  key=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f /usr/share/keyrings/debian-archive-trixie-stable.gpg ] && key=/usr/share/keyrings/debian-archive-trixie-stable.gpg
  printf 'deb [signed-by=%s] %s trixie main\n' "$key" "${mirror%/}" > "$apt_dir/sources.list"
  apt_opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
            -o Dir::Cache::archives="$apt_dir/archives" -o Debug::NoLocking=1 -o APT::Sandbox::User=root
            -o APT::Get::List-Cleanup=0)
  mkdir -p "$apt_dir/cache"
  apt-get "${apt_opts[@]}" -qq update
  (cd "$CACHE" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev)
  hdr_deb=$(ls "$CACHE"/libonnxruntime-dev_*.deb | head -n1)
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dpkg -x "$hdr_deb" "$tmp/deb"
hdir=$(dirname "$(find "$tmp/deb" -name onnxruntime_c_api.h | head -n1)")
cp "$hdir"/*.h "$ORT_DIR/include/"

# ---- library from onnxruntime-node
tgz="$CACHE/onnxruntime-node-$ORT_NODE_VERSION.tgz"
if [ ! -f "$tgz" ]; then
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_NODE_VERSION" >/dev/null && mv onnxruntime-node-*.tgz "$tgz")
fi
tar -xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
cp "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_DIR/lib/"
ln -sf libonnxruntime.so.1 "$ORT_DIR/lib/libonnxruntime.so"

api=$(grep -oE '#define ORT_API_VERSION [0-9]+' "$ORT_DIR/include/onnxruntime_c_api.h" | awk '{print $3}')
echo "fetch-ort: header ORT_API_VERSION $api, library from onnxruntime-node $ORT_NODE_VERSION"
# Header API must not exceed the library's: the library's minor version is its max API version.
lib_minor=${ORT_NODE_VERSION#1.}; lib_minor=${lib_minor%%.*}
[ "$api" -le "$lib_minor" ] || { echo "fetch-ort: header API $api > library API $lib_minor" >&2; exit 1; }
