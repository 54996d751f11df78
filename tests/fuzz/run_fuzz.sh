#!/usr/bin/env bash
# Runs one libFuzzer target as a test: first every regression input (each once), then a bounded
# fuzzing run from a copy of the seed corpus (new inputs go to a temporary directory, never to
# the source tree). A crash, a leak, a timeout (10 s for one input) or more than 2 GB of memory
# fails the test; the input that did it is kept in $RANKLM_FUZZ_ARTIFACTS (default: /tmp).
# Usage: run_fuzz.sh FUZZER FUZZ_DIR NAME SECONDS
set -u
fuzzer="$1"; dir="$2"; name="$3"; seconds="$4"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
artifacts="${RANKLM_FUZZ_ARTIFACTS:-/tmp}/fuzz-$name-"
opts=(-rss_limit_mb=2048 -timeout=10 -max_len=65536 -artifact_prefix="$artifacts")
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if [ -d "$dir/regress/$name" ] && [ -n "$(ls -A "$dir/regress/$name")" ]; then
  "$fuzzer" "${opts[@]}" "$dir/regress/$name"/* > "$work/regress.log" 2>&1 || { tail -40 "$work/regress.log"; echo "FAIL: a regression input of $name crashes again"; exit 1; }
  echo "ok   $name: $(ls "$dir/regress/$name" | wc -l) regression inputs"
fi
mkdir -p "$work/corpus"
cp "$dir/corpus/$name"/* "$work/corpus/" 2> /dev/null
"$fuzzer" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 "$work/corpus" > "$work/run.log" 2>&1
rc=$?
grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$work/run.log" | tr '\n' ' '; echo
if [ "$rc" != 0 ]; then
  grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$work/run.log" | head -20
  tail -30 "$work/run.log"
  echo "FAIL: fuzz_$name found a crash (input kept under ${artifacts}*)"
  exit 1
fi
echo "ok   fuzz_$name: $seconds s, no crash ($(ls "$work/corpus" | wc -l) corpus inputs)"
