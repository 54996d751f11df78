#!/usr/bin/env bash
# ranklm serve under the official openai client (tests/serve_test.py): every check on one
# process with SmolLM2-135M-Instruct (fetched by tools/fetch_model.sh, cached under models/),
# then the API, misuse, load, SIGTERM and rank-death checks under mpirun -np 2 (PP 2 shards).
# Usage: serve_test.sh ROOT RANKLM RANKLM_REPACK
set -u
root="$1"; bin="$2"; repack="$3"
source "$(dirname "$0")/shell_lib.sh"
py="$root/.venv/bin/python"
"$py" -c 'import openai' 2> /dev/null || { echo "FAIL: $py has no openai package (run tools/setup.sh)"; exit 1; }
m="$(bash "$root/tools/fetch_model.sh")" || { echo "FAIL: fetching SmolLM2"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$tmp/one" "$tmp/two"
timeout 600 "$py" "$root/tests/serve_test.py" --ranklm "$bin" --model "$m" --tmp "$tmp/one" --full || fails=$((fails + 1))
"$bin" plan -m "$m" -n 2 --pp 2 -o "$tmp/plan.json" > /dev/null 2>&1 &&
  "$repack" -m "$m" --plan "$tmp/plan.json" -o "$tmp/shards" 2> /dev/null || { bad "planning and repacking 2 ranks"; }
timeout 600 "$py" "$root/tests/serve_test.py" --ranklm "$bin" --model "$m" --shards "$tmp/shards" --np 2 --tmp "$tmp/two" ||
  fails=$((fails + 1))
[ "$fails" -eq 0 ] && echo "serve tests passed" || { echo "$fails part(s) failed"; exit 1; }
