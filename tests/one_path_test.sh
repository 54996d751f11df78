#!/usr/bin/env bash
# One execution path: generate, logits, bench and run each from -m M.gguf, from --shards of a
# 1-rank plan (one process, no mpirun, no GGUF rebuilt), and from shards under mpirun on 2 (PP 2)
# and 4 (PP 2 x TP 2, exact TP) ranks give the same tokens and logits, byte for byte; bench rows
# have the same fields whatever the source.
# Usage: one_path_test.sh RANKLM RANKLM_REPACK FIXTURES
set -u
bin="$1"; repack="$2"; fixtures="$3"
source "$(dirname "$0")/shell_lib.sh"
m="$fixtures/models/tiny-llama-q8_0.gguf"

for cfg in "1 1 1" "2 2 1" "4 2 2"; do
  set -- $cfg
  "$bin" plan -m "$m" -n "$1" --pp "$2" --tp "$3" -o "$tmp/p$1.json" > /dev/null 2>&1 \
    && "$repack" -m "$m" --plan "$tmp/p$1.json" -o "$tmp/s$1" 2> /dev/null || { bad "plan/repack for $1 ranks"; exit 1; }
done
printf 'Once upon a time\nThe river\n\nHello there, my friend\n' > "$tmp/prompts.txt"

# Each source: how to start the command, and a label.
sources=("gguf|$bin|-m $m" "shards-1|$bin|--shards $tmp/s1" "mpirun-2|${mpi[*]} -np 2 $bin|--shards $tmp/s2"
         "mpirun-4|${mpi[*]} -np 4 $bin|--shards $tmp/s4")
for src in "${sources[@]}"; do
  IFS='|' read -r label launch model <<< "$src"
  $launch logits $model --tokens 1,5,9,13,2,7 --greedy 6 -t 1 > "$tmp/logits.$label" 2> "$tmp/err.$label" || { bad "logits ($label):"; tail -3 "$tmp/err.$label"; }
  $launch generate $model -p "Once upon a time" -n 16 --temp 0.8 --seed 5 -t 1 > "$tmp/gen.$label" 2>> "$tmp/err.$label" || { bad "generate ($label):"; tail -3 "$tmp/err.$label"; }
  $launch run $model --prompts "$tmp/prompts.txt" --out "$tmp/run.$label.jsonl" -n 8 --parallel 2 --ctx-size 64 -t 1 --progress none \
    2>> "$tmp/err.$label" || { bad "run ($label):"; tail -3 "$tmp/err.$label"; }
  $launch bench $model -t 1 -p 8 -n 4 -r 1 -o json > "$tmp/bench.$label" 2>> "$tmp/err.$label" || { bad "bench ($label):"; tail -3 "$tmp/err.$label"; }
done

# The results of a batch job, without the fields that name times or ids (custom_id -> text).
texts() { python3 -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 3 and all(r['response']['status_code'] == 200 for r in rows), rows
print(json.dumps(sorted((r['custom_id'], r['response']['body']['choices'][0]['text'], r['response']['body']['choices'][0]['finish_reason']) for r in rows)))" "$1"; }
texts "$tmp/run.gguf.jsonl" > "$tmp/texts.gguf" 2> /dev/null
bench_fields() { python3 -c "
import json, sys
rows = json.load(open(sys.argv[1]))
assert len(rows) == 2 and all(r['avg_ts'] > 0 for r in rows), rows
print(len(rows), sorted(rows[0].keys()), [(r['n_prompt'], r['n_gen'], r['n_parallel']) for r in rows])" "$1"; }
bench_fields "$tmp/bench.gguf" > "$tmp/fields.gguf" 2> /dev/null
[ -s "$tmp/logits.gguf" ] && [ -s "$tmp/gen.gguf" ] && [ -s "$tmp/texts.gguf" ] && [ -s "$tmp/fields.gguf" ] \
  || { bad "the GGUF source gave no output"; tail -5 "$tmp/err.gguf"; exit 1; }
for label in shards-1 mpirun-2 mpirun-4; do
  if cmp -s "$tmp/logits.gguf" "$tmp/logits.$label"; then ok "logits ($label): the GGUF's logits and greedy tokens, byte for byte"
  else bad "logits ($label) differ from the GGUF's"; fi
  if cmp -s "$tmp/gen.gguf" "$tmp/gen.$label"; then ok "generate ($label): the same text (seeded sampling)"
  else bad "generate ($label) differs:"; diff "$tmp/gen.gguf" "$tmp/gen.$label" | head -4; fi
  if texts "$tmp/run.$label.jsonl" 2> /dev/null | cmp -s - "$tmp/texts.gguf"; then ok "run ($label): the same completions for every prompt"
  else bad "run ($label): completions differ"; fi
  if bench_fields "$tmp/bench.$label" 2> /dev/null | cmp -s - "$tmp/fields.gguf"; then ok "bench ($label): rows with the same fields and tests"
  else bad "bench ($label): rows differ in fields"; bench_fields "$tmp/bench.$label" | cut -c1-300; fi
done
# A whole GGUF is one rank's: under mpirun with 2 ranks, run refuses before it opens the results file.
if "${mpi[@]}" -np 2 "$bin" run -m "$m" --prompts "$tmp/prompts.txt" --out "$tmp/never.jsonl" -t 1 > /dev/null 2> "$tmp/err"; then
  bad "run -m under mpirun -np 2 was not refused"
elif grep -q "a GGUF model runs on one rank and this job has 2; under mpirun give --shards" "$tmp/err" && [ ! -e "$tmp/never.jsonl" ]; then
  ok "run -m under mpirun -np 2: refused naming --shards, no results file created"
else
  bad "run -m under mpirun -np 2: refused, but not clearly or after creating the results file"; tail -3 "$tmp/err"
fi
# The 1-rank shard is read as it is: no GGUF image of the whole file is rebuilt.
if ! grep -rq "load_single_rank_model" "$(dirname "$0")/../src"; then ok "no GGUF rebuild path left in src/"; else bad "a GGUF rebuild path is still in src/"; fi
[ "$fails" -eq 0 ]
