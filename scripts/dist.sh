#!/usr/bin/env bash
# scripts/dist.sh: assemble the release tarball (called by `make dist`, which links BIN first).
#
#   bash scripts/dist.sh BIN ORT_LIB OUT.tar.gz
#
# BIN      onnxd linked for release with the rpath $ORIGIN/../lib and LMDB, hiredis, nghttp2 static
#          (the Makefile's build/onnxd-dist); it is stripped into the tarball and its debug
#          information kept beside the tarball (OUT without .tar.gz, plus .debug; the stripped
#          binary names it in .gnu_debuglink, so `gdb` finds it when both sit in one directory).
# ORT_LIB  the libonnxruntime.so.1 onnxd was linked against (deps/ort's or the system's).
# OUT      dist/onnxd-<version>-linux-<arch>.tar.gz; <arch> is `uname -m` (x86_64, aarch64).
#
# The tarball holds one directory, onnxd-<version>-linux-<arch>/:
#   bin/onnxd                 the server
#   lib/                      libonnxruntime.so.1 and every shared library in onnxd's ldd
#                             closure that a minimal Debian 12 system (mmdebstrap --variant=
#                             minbase bookworm) lacks (BASE_LIBS below are what it has)
#   LICENSES/                 the licence of each bundled library (ONNX Runtime's LICENSE and
#                             ThirdPartyNotices.txt; Debian's copyright file of each package)
#   models/mlp16/1/model.onnx an example model repository (13 KB)
#   systemd/onnxd.service     a hardened unit (deploy/systemd/onnxd.service)
#   README.md                 quick-start (deploy/tarball/README.md)
# Archive members are owned by 0:0 and dated at the last commit, so the same inputs give the
# same bytes. tests/ship/test_dist.py runs the result in a minimal Debian 12 root and checks
# that the bundle is exactly what that root lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?usage: dist.sh BIN ORT_LIB OUT.tar.gz}
ORT_LIB=${2:?usage: dist.sh BIN ORT_LIB OUT.tar.gz}
OUT=${3:?usage: dist.sh BIN ORT_LIB OUT.tar.gz}
PY=${PY:-.venv/bin/python}

# Sonames a Debian 12 minbase root provides (Essential and Priority: required packages: glibc,
# GCC's runtime, and what apt links), so they are not bundled. A library missing from this list
# is bundled needlessly; one listed but absent from the root shows as "not found" there. The
# test checks both ways against the real root.
BASE_LIBS=(
  linux-vdso.so.1 libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 libresolv.so.2 # glibc
  libstdc++.so.6 libgcc_s.so.1                                                              # GCC
  libgnutls.so.30 libp11-kit.so.0 libidn2.so.0 libunistring.so.2 libtasn1.so.6 libnettle.so.8
  libhogweed.so.6 libgmp.so.10 libffi.so.8                                      # apt's GnuTLS
  libcom_err.so.2 libz.so.1 libzstd.so.1 liblzma.so.5 libbz2.so.1.0 liblz4.so.1 libgcrypt.so.20
  libgpg-error.so.0 libsystemd.so.0 libcap.so.2 libselinux.so.1 libpcre2-8.so.0 libcrypt.so.1
  libmd.so.0 libacl.so.1 libattr.so.1 libdb-5.3.so
)
in_base() { # SONAME: true if the minimal root has it (the dynamic loader always)
  [[ $1 == ld-linux* ]] && return 0
  local b
  for b in "${BASE_LIBS[@]}"; do [ "$b" = "$1" ] && return 0; done
  return 1
}

name=$(basename "$OUT" .tar.gz)
stage=build/dist/$name
dbg=${OUT%.tar.gz}.debug
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/LICENSES" "$stage/models/mlp16/1" "$stage/systemd" \
  "$(dirname "$OUT")"

# ---- the binary: nothing may point into this machine
runpath=$(readelf -d "$BIN" | sed -n 's/.*(\(RPATH\|RUNPATH\)).*\[\(.*\)\]/\1 \2/p')
[ "$runpath" = 'RPATH $ORIGIN/../lib' ] ||
  { echo "dist: $BIN has '$runpath', expected RPATH \$ORIGIN/../lib" >&2; exit 1; }
objcopy --only-keep-debug "$BIN" "$dbg"
chmod 0644 "$dbg"
strip --strip-all -o "$stage/bin/onnxd" "$BIN"
(cd "$(dirname "$dbg")" && objcopy --add-gnu-debuglink="$(basename "$dbg")" "$OLDPWD/$stage/bin/onnxd")
chmod 0755 "$stage/bin/onnxd"

# ---- licences: LICENSES/<debian package>.copyright for what dpkg owns
license_of() { # FILE: copies the copyright file of the Debian package that owns FILE
  local pkg doc
  pkg=$(dpkg -S "$(realpath "$1")" 2>/dev/null | head -n1 | cut -d: -f1) ||
    pkg=$(dpkg -S "$1" 2>/dev/null | head -n1 | cut -d: -f1) || true
  [ -n "$pkg" ] || { echo "dist: no Debian package owns $1: cannot find its licence" >&2; exit 1; }
  doc=/usr/share/doc/$pkg/copyright
  [ -f "$doc" ] || { echo "dist: $pkg has no $doc" >&2; exit 1; }
  cp "$doc" "$stage/LICENSES/$pkg.copyright"
  echo "$pkg"
}

# ---- ONNX Runtime and the shared libraries a minimal Debian 12 lacks
cp -L "$ORT_LIB" "$stage/lib/libonnxruntime.so.1"
if dpkg -S "$(realpath "$ORT_LIB")" >/dev/null 2>&1; then
  license_of "$ORT_LIB" >/dev/null
else
  # deps/ort: the npm package onnxruntime-node carries no licence files; the PyPI wheel of the
  # same release (requirements.txt pins it to the library's version) has both.
  ort_ver=$("$stage/bin/onnxd" --version | sed -n 's/.*ONNX Runtime library \([0-9.]*\).*/\1/p')
  read -r whl_ver whl_dir < <("$PY" -c 'import importlib.metadata as m, pathlib
d = m.distribution("onnxruntime")
print(d.version, pathlib.Path(d.locate_file("onnxruntime")))')
  [ "$ort_ver" = "$whl_ver" ] ||
    { echo "dist: library is ONNX Runtime $ort_ver, the venv's wheel $whl_ver: licences would not match" >&2; exit 1; }
  cp "$whl_dir/LICENSE" "$stage/LICENSES/onnxruntime.LICENSE"
  cp "$whl_dir/ThirdPartyNotices.txt" "$stage/LICENSES/onnxruntime.ThirdPartyNotices.txt"
fi
bundled=()
while read -r soname path; do
  in_base "$soname" && continue
  [ "$soname" = libonnxruntime.so.1 ] && continue
  [ -f "$path" ] || { echo "dist: ldd cannot resolve $soname" >&2; exit 1; }
  cp -L "$path" "$stage/lib/$soname"
  chmod 0644 "$stage/lib/$soname"
  pkg=$(license_of "$path")
  bundled+=("$soname ($pkg)")
done < <(ldd "$stage/bin/onnxd" | awk '$2 == "=>" { print $1, $3 }')
chmod 0644 "$stage/lib/libonnxruntime.so.1"
# statically linked: their licences travel with the binary
for a in liblmdb.a libhiredis.a libnghttp2.a; do
  f=$(cc -print-file-name="$a")
  [ -f "$f" ] || { echo "dist: $a not found (liblmdb-dev, libhiredis-dev, libnghttp2-dev)" >&2; exit 1; }
  license_of "$f" >/dev/null
done

# ---- example repository, unit, quick-start
install -m 0644 models/mlp16/1/model.onnx "$stage/models/mlp16/1/model.onnx"
install -m 0644 deploy/systemd/onnxd.service "$stage/systemd/onnxd.service"
sed -e "s/@NAME@/$name/g" deploy/tarball/README.md >"$stage/README.md"
chmod 0644 "$stage/README.md" "$stage"/LICENSES/*

# ---- the archive: reproducible (sorted, 0:0, dated at the last commit, gzip without a name)
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tmp=$OUT.tmp.$$
trap 'rm -f "$tmp"' EXIT
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" --format=gnu \
  -C build/dist -cf - "$name" | gzip -9n >"$tmp"
mv "$tmp" "$OUT"
trap - EXIT
echo "dist: bundled libonnxruntime.so.1${bundled[*]:+ ${bundled[*]}}"
