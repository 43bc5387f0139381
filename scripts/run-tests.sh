#!/usr/bin/env bash
# Runs every test suite against the build in $ONNXD_BUILD (default build) and prints one
# summary; the last line is "N passed, N failed[, N skipped]". Exit status 1 on any failure.
#   unit tests (C), fuzz corpus replay (C), integration tests (pytest + tritonclient, real
#   server on loopback), ONNX node-test conformance (real server vs in-process ONNX Runtime),
#   the fraud example's offline pipeline (pytest), what onnxd ships (tests/ship: the release
#   tarball in a minimal Debian 12 root, the OCI image under podman).
# ONNXD_SUITES limits the suites (e.g. "unit fuzz"); ONNXD_PYTEST_ARGS replaces the integration
# suite's default argument tests/integration (e.g. a list of test files).
# Each unit-test and fuzz-replay binary runs in its own process under `timeout`
# (ONNXD_UNIT_TIMEOUT seconds, default 300; SIGKILL 5 s after the SIGTERM): a binary that hangs
# is reported as a failure that says "timed out after N s" and the run carries on.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${ONNXD_BUILD:-build}
PY=.venv/bin/python
SUITES=${ONNXD_SUITES:-unit fuzz integration conformance fraud ship}
export ONNXD_BIN=$PWD/$B/onnxd
export ONNXD_TEST_MODELS=$PWD/$B/test-models
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# TSan (make test SANITIZE=thread): ORT's own frames are suppressed (tests/tsan.supp); the first
# report ends the process, so that a race fails its test.
export TSAN_OPTIONS=${TSAN_OPTIONS:-suppressions=$PWD/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1}
[ -f tests/lsan.supp ] && export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

UNIT_TIMEOUT=${ONNXD_UNIT_TIMEOUT:-300}

total_pass=0 total_fail=0 total_skip=0
summary=()
log_dir=$B/test-logs
mkdir -p "$log_dir"

# count NAME PASSED FAILED SKIPPED
count() {
  total_pass=$((total_pass + $2)); total_fail=$((total_fail + $3)); total_skip=$((total_skip + ${4:-0}))
  summary+=("$(printf '%-28s %5d passed, %d failed, %d skipped' "$1" "$2" "$3" "${4:-0}")")
}

# Reads the last "N passed[, N failed][, N skipped]" figures from a log (pytest's or ours).
parse_counts() {
  local line p f s
  line=$(grep -E '[0-9]+ (passed|failed|skipped)' "$1" | tail -n1) # "13 skipped in 0.4s" too
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')
  s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+'); local e
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+')
  echo "${p:-0} $(( ${f:-0} + ${e:-0} )) ${s:-0}"
}

# timed_out RC LOG: true if RC is timeout(1)'s (124: killed by SIGTERM at the limit, 137: by
# SIGKILL 5 s later); then appends the verdict to LOG so that the failure's tail says so.
timed_out() {
  case $1 in
  124 | 137) echo "timed out after $UNIT_TIMEOUT s (exit $1)" >>"$2"; return 0 ;;
  *) return 1 ;;
  esac
}

if [ -f tools/make_test_models.py ]; then
  $PY tools/make_test_models.py "$ONNXD_TEST_MODELS" >"$log_dir/test-models.log" 2>&1 ||
    { echo "test models: generation failed"; cat "$log_dir/test-models.log"; }
fi

for s in $SUITES; do
  case $s in
  unit)
    for t in "$B"/tests/*_test; do
      [ -x "$t" ] || continue
      n=$(basename "$t")
      timeout -k 5 "$UNIT_TIMEOUT" "$t" >"$log_dir/$n.log" 2>&1; rc=$?
      read -r p f sk < <(parse_counts "$log_dir/$n.log")
      to=; timed_out "$rc" "$log_dir/$n.log" && { f=$((f + 1)); to=" (timed out)"; }
      [ $rc -ne 0 ] && [ "$f" = 0 ] && f=1
      [ "$f" != 0 ] && { echo "--- unit $n failed:"; tail -n 30 "$log_dir/$n.log"; }
      count "unit/$n$to" "$p" "$f" "$sk"
    done ;;
  fuzz)
    for t in "$B"/fuzz-replay/fuzz_*; do
      [ -x "$t" ] || continue
      n=$(basename "$t")
      timeout -k 5 "$UNIT_TIMEOUT" "$t" "tests/fuzz/corpus/$n" >"$log_dir/$n.log" 2>&1; rc=$?
      read -r p f sk < <(parse_counts "$log_dir/$n.log")
      to=; timed_out "$rc" "$log_dir/$n.log" && { f=$((f + 1)); to=" (timed out)"; }
      [ $rc -ne 0 ] && [ "$f" = 0 ] && f=1
      [ "$f" != 0 ] && { echo "--- fuzz replay $n failed:"; tail -n 30 "$log_dir/$n.log"; }
      count "fuzz-replay/$n$to" "$p" "$f" "$sk"
    done ;;
  integration)
    if [ -d tests/integration ]; then
      # shellcheck disable=SC2086 # ONNXD_PYTEST_ARGS is a word list
      $PY -m pytest -q -p no:cacheprovider ${ONNXD_PYTEST_ARGS:-tests/integration} >"$log_dir/integration.log" 2>&1; rc=$?
      read -r p f sk < <(parse_counts "$log_dir/integration.log")
      [ $rc -ne 0 ] && [ $rc -ne 5 ] && [ "$f" = 0 ] && f=1
      [ "$f" != 0 ] && { echo "--- integration failed:"; grep -E '^(FAILED|ERROR)|Error' "$log_dir/integration.log" | head -n 40; }
      count integration "$p" "$f" "$sk"
    fi ;;
  fraud)
    if [ -d tests/fraud ]; then
      $PY -m pytest -q -p no:cacheprovider tests/fraud >"$log_dir/fraud.log" 2>&1; rc=$?
      read -r p f sk < <(parse_counts "$log_dir/fraud.log")
      [ $rc -ne 0 ] && [ $rc -ne 5 ] && [ "$f" = 0 ] && f=1
      [ "$f" != 0 ] && { echo "--- fraud failed:"; grep -E '^(FAILED|ERROR)' "$log_dir/fraud.log" | head -n 20; }
      count fraud "$p" "$f" "$sk"
    fi ;;
  ship)
    # what onnxd ships: the release tarball in a minimal Debian 12 root, the OCI image with
    # podman (tests/ship/; skipped under sanitizer builds)
    if [ -d tests/ship ]; then
      $PY -m pytest -q -s -p no:cacheprovider tests/ship >"$log_dir/ship.log" 2>&1; rc=$?
      read -r p f sk < <(parse_counts "$log_dir/ship.log")
      [ $rc -ne 0 ] && [ $rc -ne 5 ] && [ "$f" = 0 ] && f=1
      [ "$f" != 0 ] && { echo "--- ship failed:"; grep -E '^(FAILED|ERROR)|Error' "$log_dir/ship.log" | head -n 40; }
      grep -E '^(tarball|image|cold start|container|bare|bundled|systemd|single)' "$log_dir/ship.log"
      count ship "$p" "$f" "$sk"
    fi ;;
  conformance)
    if [ -f tests/conformance/run_conformance.py ]; then
      $PY tests/conformance/run_conformance.py --bin "$ONNXD_BIN" >"$log_dir/conformance.log" 2>&1; rc=$?
      read -r p f sk < <(parse_counts "$log_dir/conformance.log")
      [ $rc -ne 0 ] && [ "$f" = 0 ] && f=1
      grep -E '^conformance:' "$log_dir/conformance.log" | tail -n1
      [ "$f" != 0 ] && { echo "--- conformance failures:"; grep -E '^FAIL' "$log_dir/conformance.log" | head -n 40; }
      count conformance "$p" "$f" "$sk"
    fi ;;
  esac
done

echo "== test summary ($B)"
printf '%s\n' "${summary[@]}"
echo "logs: $log_dir"
if [ "$total_skip" -gt 0 ]; then
  echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
  echo "$total_pass passed, $total_fail failed"
fi
[ "$total_fail" -eq 0 ]
