#!/usr/bin/env bash
# A longer fuzzing campaign than the test suite's: every target for SECONDS (default 600), two at
# a time, each from its seed corpus plus what earlier campaigns found (kept in OUT/corpus-NAME).
# Crash inputs land in OUT as NAME-crash-*; copy each into tests/fuzz/regress/NAME after fixing.
# Needs build-fuzz (tools/test.sh builds it). Usage: tests/fuzz/long_run.sh [SECONDS] [OUT]
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
secs="${1:-600}"; out="${2:-$root/build-fuzz/long-run}"
fixtures="$root/../shared/fixtures"
export RANKLM_FUZZ_MODEL="$fixtures/models/tiny-llama-q8_0.gguf"
export RANKLM_FUZZ_VOCABS="$fixtures/tokenizer/ggml-vocab-llama-spm.gguf:$fixtures/tokenizer/ggml-vocab-gpt-2.gguf:$fixtures/tokenizer/ggml-vocab-phi-3.gguf"
mkdir -p "$out"
run() {
  local n=$1
  mkdir -p "$out/corpus-$n"
  cp -n "$root/tests/fuzz/corpus/$n"/* "$out/corpus-$n/" 2> /dev/null
  "$root/build-fuzz/bin/fuzz_$n" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -max_total_time="$secs" \
    -print_final_stats=1 -artifact_prefix="$out/$n-" "$out/corpus-$n" > "$out/$n.log" 2>&1
  local rc=$?
  echo "$n: exit $rc, $(grep -o 'number_of_executed_units: *[0-9]*' "$out/$n.log" | grep -o '[0-9]*$') executions," \
       "$(ls "$out/corpus-$n" | wc -l) corpus inputs, peak $(grep -o 'peak_rss_mb: *[0-9]*' "$out/$n.log" | grep -o '[0-9]*$') MB"
}
for pair in "gguf plan" "prompts results" "jinja tokenizer" "shard"; do
  for n in $pair; do run "$n" & done
  wait
done | tee "$out/summary.txt"
