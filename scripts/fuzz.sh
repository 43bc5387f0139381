#!/usr/bin/env bash
# Runs one libFuzzer harness with clang (ASan+UBSan) on a copy of its committed corpus.
#   scripts/fuzz.sh fuzz_http [SECONDS]      (make fuzz FUZZER=fuzz_http SECONDS=60)
# New inputs land in build/fuzz/<name>/corpus; minimize and copy interesting ones into
# tests/fuzz/corpus/<name>/ by hand (keep the committed corpus small).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/fuzz.sh fuzz_NAME [SECONDS]}
secs=${2:-60}
out=build/fuzz/$name
mkdir -p "$out/corpus"
cp -n tests/fuzz/corpus/"$name"/* "$out/corpus/" 2>/dev/null || true
srcs=$(find src -name '*.c' ! -name main.c ! -name ort_embed.c | sort) # ort_embed.c: the single file's
ort_inc=$( [ -d deps/ort/include ] && echo "-Ideps/ort/include" || pkg-config --cflags libonnxruntime)
clang++ -std=gnu++17 -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-exceptions -fno-rtti \
  -isystem /usr/include/dragonbox-1.1.3 -Isrc -c src/proto/numconv.cc -o "$out/numconv.o"
clang -std=gnu11 -O1 -g -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Isrc $ort_inc $(pkg-config --cflags libpq libnghttp2 libturbojpeg spng) \
  "tests/fuzz/$name.c" $srcs "$out/numconv.o" -o "$out/$name" \
  -Ldeps/ort/lib -lonnxruntime -Wl,-rpath,"$PWD/deps/ort/lib" -llmdb -lhiredis $(pkg-config --libs libnghttp2 libturbojpeg spng) -lpq -lpthread -lm
dict=tests/fuzz/$name.dict
"$out/$name" -max_total_time="$secs" ${dict:+$( [ -f "$dict" ] && echo -dict="$dict")} "$out/corpus"
