#!/usr/bin/env bash
# Builds libspng as a static archive for the statically linked artefacts (make dist, the single
# file): Debian ships libspng only as a shared library. The source is Debian's own source package
# of the installed libspng version (so that the archive is the library the dynamic build uses),
# fetched with a private apt configuration (the system's sources are never touched; apt checks
# the signed Release file and the .dsc checksums) and cached in $ONNXD_CACHE.
#   scripts/build-spng-static.sh OUT.a
set -euo pipefail
out=${1:?usage: build-spng-static.sh OUT.a}
ver=$(dpkg-query -W -f='${source:Upstream-Version}' libspng-dev 2>/dev/null || true)
[ -n "$ver" ] || { echo "build-spng-static: libspng-dev is not installed (scripts/setup.sh)" >&2; exit 1; }
CACHE=${ONNXD_CACHE:-$HOME/.cache/onnxd}
src="$CACHE/libspng-$ver"
if [ ! -f "$src/spng/spng.c" ]; then
  apt_dir="$CACHE/apt-src"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache" "$apt_dir/dl"
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
           | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "${mirror%/}" "$suite" >"$apt_dir/sources.list"
  opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
        -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  apt-get "${opts[@]}" update -qq
  (cd "$apt_dir/dl" && apt-get "${opts[@]}" source --download-only "libspng=$(dpkg-query -W -f='${Version}' libspng-dev)")
  mkdir -p "$src"
  tar -xzf "$apt_dir"/dl/libspng_"$ver".orig.tar.gz -C "$src" --strip-components=1
fi
mkdir -p "$(dirname "$out")"
obj="${out%.a}.o"
${CC:-cc} -std=c99 -O2 -fPIE -fstack-protector-strong -DSPNG_STATIC -I"$src/spng" -c "$src/spng/spng.c" -o "$obj"
rm -f "$out"
ar rcs "$out" "$obj"
echo "build-spng-static: $out (libspng $ver)"
