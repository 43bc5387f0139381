#!/usr/bin/env bash
# Layering check: every `#include "dir/..."` in src/ must point down the module order below (or
# into its own module). Prints one line "check-layers: OK ..." and exits 0, or lists each
# offending include as file:line with the rule it breaks and exits 1. `make check-layers`.
#
# The order, lowest first (docs/design.md explains it). Modules on one level must not include
# each other:
#   0 core                                 no project dependencies
#   1 metrics                              counters any layer may record into; core only
#   2 loop                                 event loop, timers, wake-ups
#   3 http grpc proto runtime features     HTTP/1.1, gRPC over HTTP/2, codecs, ONNX Runtime
#     image                                adapter, feature tiers, JPEG/PNG bytes to tensor rows
#   4 sched                                worker pool and batcher (joins runtime to the loop)
#   5 infer                                the wire-neutral inference core
#   6 server                               front ends (REST today) and the application
#   7 main.c                               wires everything
# Explicit rules on top of the order:
#   - only server/ and main.c include http/ and grpc/ (the inference core and everything below
#     it know nothing of HTTP or gRPC);
#   - only runtime/ includes onnxruntime_c_api.h (ORT's types never escape the adapter).
# A directory of src/ that is not in the table is an error: give it a level here first.
set -uo pipefail
cd "$(dirname "$0")/.."

declare -A level=([core]=0 [metrics]=1 [loop]=2 [http]=3 [grpc]=3 [proto]=3 [runtime]=3 [features]=3 [image]=3
                  [sched]=4 [infer]=5 [server]=6 [main.c]=7)
order="core < metrics < loop < http|grpc|proto|runtime|features|image < sched < infer < server < main.c"

bad=0 n=0
fail() { echo "$1: $2" >&2; bad=$((bad + 1)); }

for d in src/*/; do
  d=${d%/}; d=${d#src/}
  [ -n "${level[$d]+x}" ] || fail "src/$d" "module '$d' has no level in scripts/check-layers.sh"
done

while IFS= read -r f; do
  rel=${f#src/}
  case $rel in
  */*) from=${rel%%/*} ;;
  *) from=$rel ;; # files directly in src/ (main.c)
  esac
  [ -n "${level[$from]+x}" ] || continue # reported above
  # "line:target" for every #include, quoted or angled (-Isrc makes both reach our headers)
  while IFS=: read -r line target; do
    n=$((n + 1))
    if [ "${target##*/}" = onnxruntime_c_api.h ]; then
      [ "$from" = runtime ] ||
        fail "$f:$line" "includes $target: only runtime/ includes ONNX Runtime's header"
      continue
    fi
    case $target in
    */*) to=${target%%/*} ;;
    *) continue ;; # same-directory or system header
    esac
    [ "$to" = "$from" ] && continue
    if [ -z "${level[$to]+x}" ]; then
      [ -d "src/$to" ] && fail "$f:$line" "includes $target: module '$to' has no level"
      continue # not one of ours (sys/..., a dependency's header)
    fi
    if { [ "$to" = http ] || [ "$to" = grpc ]; } && [ "$from" != server ] && [ "$from" != main.c ]; then
      fail "$f:$line" "includes $target: only server/ and main.c include $to/"
    elif [ "${level[$to]}" -gt "${level[$from]}" ]; then
      fail "$f:$line" "includes $target: $from/ (level ${level[$from]}) must not include $to/ (level ${level[$to]}, higher)"
    elif [ "${level[$to]}" -eq "${level[$from]}" ]; then
      fail "$f:$line" "includes $target: $from/ and $to/ share level ${level[$to]} and must not include each other"
    fi
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' "$f" |
             sed -E 's/^([0-9]+):[^<"]*[<"]([^>"]+)[>"].*/\1:\2/')
done < <(find src -type f \( -name '*.c' -o -name '*.h' -o -name '*.cc' \) | sort)

if [ "$bad" -ne 0 ]; then
  echo "check-layers: $bad violation(s); order: $order (scripts/check-layers.sh, docs/design.md)" >&2
  exit 1
fi
echo "check-layers: OK ($n includes; $order; http/ and grpc/ only from server/ and main.c)"
