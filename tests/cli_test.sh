#!/usr/bin/env bash
# End-to-end checks of the ranklm binary: --help everywhere, one-line errors with a non-zero exit
# on corrupt input, and reproducible greedy generation.
set -u
bin="$1"; fixtures="$2"; damage="${3:-}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
fails=0; total=0
check() { total=$((total+1)); if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails+1)); fi; }

for c in generate logits inspect bench; do
  check "$c --help" "'$bin' $c --help | grep -q 'usage: ranklm $c'"
done
printf 'GGUX\003\000\000\000' > "$tmp/bad.gguf"
"$bin" inspect "$tmp/bad.gguf" > /dev/null 2> "$tmp/err"; rc=$?
check "corrupt gguf exits 1" "[ $rc -eq 1 ]"
check "corrupt gguf: one line naming file and field" \
  "[ \$(wc -l < '$tmp/err') -eq 1 ] && grep -q '$tmp/bad.gguf' '$tmp/err' && grep -q 'header.magic' '$tmp/err'"
"$bin" logits --model "$fixtures/models/tiny-llama-q4_0.gguf" --tokens 1,2,x > /dev/null 2> "$tmp/err"; rc=$?
check "bad --tokens exits 2 naming the value" "[ $rc -eq 2 ] && grep -q \"'x'\" '$tmp/err'"
"$bin" generate > /dev/null 2>&1; rc=$?
check "missing options exit 2" "[ $rc -eq 2 ]"
m="$fixtures/models/tiny-llama-q8_0.gguf"
"$bin" generate -m "$m" -p "hello world" --temp 0 -n 12 > "$tmp/a" 2> /dev/null
"$bin" generate -m "$m" -p "hello world" --temp 0 -n 12 -t 1 > "$tmp/b" 2> /dev/null
check "greedy generation is reproducible across thread counts" "cmp -s '$tmp/a' '$tmp/b' && [ -s '$tmp/a' ]"
"$bin" generate -m "$m" -p "hello world" --temp 0.9 --seed 7 -n 12 > "$tmp/c" 2> /dev/null
"$bin" generate -m "$m" -p "hello world" --temp 0.9 --seed 7 -n 12 > "$tmp/d" 2> /dev/null
check "seeded sampling is reproducible" "cmp -s '$tmp/c' '$tmp/d' && [ -s '$tmp/c' ]"
"$bin" generate -m "$m" -p "hello" --chat -n 4 > /dev/null 2> "$tmp/err"; rc=$?
check "--chat without a usable template exits 1 and says what to do" \
  "[ $rc -eq 1 ] && grep -q 'chat_template' '$tmp/err' && grep -q -- '--chat-template' '$tmp/err' && grep -q 'base model' '$tmp/err'"
"$bin" generate -m "$m" -p "hello" --chat --chat-template chatml --temp 0 -n 4 --verbose-prompt > /dev/null 2> "$tmp/chatml"; rc=$?
check "--chat-template takes a built-in template's name" "[ $rc -eq 0 ] && grep -q '<|im_start|>user' '$tmp/chatml'"
data="$(dirname "$0")/data/chat"
"$bin" generate -m "$m" -p "hello" --chat --chat-template "$data/llama3.jinja" --system "Be brief." \
  --temp 0 -n 6 --verbose-prompt > "$tmp/chat" 2> "$tmp/chatlog"
check "--chat-template renders system and user turns" \
  "grep -q 'system<|end_header_id|>' '$tmp/chatlog' && grep -q 'Be brief.<|eot_id|>' '$tmp/chatlog' && grep -q 'token ids: ' '$tmp/chatlog' && [ -s '$tmp/chat' ]"
"$bin" generate -m "$m" -p "hello world" --temp 0 -n 24 > "$tmp/long" 2> /dev/null
cont="$(head -c -1 "$tmp/long" | tail -c +12)"   # the continuation after "hello world"
stop="${cont:6:3}"
"$bin" generate -m "$m" -p "hello world" --temp 0 -n 24 --stop "$stop" > "$tmp/stopped" 2> /dev/null
expect="hello world${cont%%"$stop"*}"
check "--stop ends the output before the stop string ('$stop')" \
  "[ -n '$stop' ] && [ \"\$(head -c -1 '$tmp/stopped')\" = \"\$expect\" ]"

# ranklm-synth and ranklm bench on a small synthetic model.
synth="$(dirname "$bin")/ranklm-synth"
"$synth" --shape test-small --type q4_0 -o "$tmp/s1.gguf" 2> /dev/null
"$synth" --shape test-small --type q4_0 -o "$tmp/s2.gguf" 2> /dev/null
check "ranklm-synth: same seed, same file" "cmp -s '$tmp/s1.gguf' '$tmp/s2.gguf'"
# --no-data: the same header and size as the full file, no disk blocks for the data, and a plan
# of the same model (identity hash) from it.
"$synth" --shape test-small --type q4_0 --no-data -o "$tmp/s0.gguf" 2> /dev/null
check "ranklm-synth --no-data: full size, sparse, the same model for ranklm plan" \
  "[ \$(stat -c %s '$tmp/s0.gguf') = \$(stat -c %s '$tmp/s1.gguf') ] && [ \$(du -k '$tmp/s0.gguf' | cut -f1) -lt \$(du -k '$tmp/s1.gguf' | cut -f1) ] &&
   [ \"\$('$bin' plan -m '$tmp/s0.gguf' -n 2 | grep -o 'model hash [0-9a-f]*')\" = \"\$('$bin' plan -m '$tmp/s1.gguf' -n 2 | grep -o 'model hash [0-9a-f]*')\" ]"
"$synth" --shape test-small --type q4_0 --seed 9 -o "$tmp/s3.gguf" 2> /dev/null
check "ranklm-synth: another seed, other weights" "! cmp -s '$tmp/s1.gguf' '$tmp/s3.gguf'"
"$synth" --shape test-small-tied --type q4_k_m -o "$tmp/km.gguf" 2> /dev/null
"$bin" inspect "$tmp/km.gguf" > "$tmp/km.txt"
check "ranklm-synth q4_k_m: Q4_K base, Q6_K where llama-quantize puts more bits, no output.weight when tied" \
  "grep -q 'blk.0.attn_q.weight *Q4_K' '$tmp/km.txt' && grep -q 'blk.1.ffn_down.weight *Q6_K' '$tmp/km.txt' && ! grep -q '^  output.weight ' '$tmp/km.txt' && grep -q rope_freqs '$tmp/km.txt'"
"$synth" --shape nope --type q4_0 -o "$tmp/x.gguf" > /dev/null 2> "$tmp/err"; rc=$?
check "ranklm-synth: unknown shape exits 2 listing the known ones" "[ $rc -eq 2 ] && grep -q tinyllama-1.1b '$tmp/err' && [ ! -e '$tmp/x.gguf' ]"
"$bin" bench -m "$tmp/s1.gguf" -t 1,2 -p 8 -n 4 -r 2 -o json > "$tmp/b.json" 2> "$tmp/err"
check "bench -o json: one row per threads x test with llama-bench fields" \
  "[ \$(grep -c '\"avg_ts\"' '$tmp/b.json') -eq 4 ] && grep -q '\"n_prompt\": 8' '$tmp/b.json' && grep -q '\"n_gen\": 4' '$tmp/b.json' && grep -q '\"rss_bytes\"' '$tmp/b.json' && ! grep -q '\"avg_ts\": 0' '$tmp/b.json'"
"$bin" bench -m "$tmp/s1.gguf" -t 1 -p 8 -n 0 -r 1 -o csv > "$tmp/b.csv" 2> /dev/null
check "bench -o csv: header and one row" "[ \$(wc -l < '$tmp/b.csv') -eq 2 ] && head -1 '$tmp/b.csv' | grep -q 'n_threads,n_prompt,n_gen'"
"$bin" bench -m "$tmp/s1.gguf" -p 8,x > /dev/null 2> "$tmp/err"; rc=$?
check "bench: bad list value exits 2 naming it" "[ $rc -eq 2 ] && grep -q \"'x'\" '$tmp/err'"

# ranklm plan: table, JSON written whole, refusals.
"$bin" plan -m "$m" -n 4 --tp 2 -o "$tmp/plan.json" > "$tmp/plan.txt" 2> "$tmp/err"; rc=$?
check "plan: 2 stages x TP 2, table and JSON with version, stages and the model hash" \
  "[ $rc -eq 0 ] && grep -q 'embedding' '$tmp/plan.txt' && grep -q 'output head' '$tmp/plan.txt' && grep -q '\"version\": 1' '$tmp/plan.json' && grep -q '\"gguf_hash\"' '$tmp/plan.json' && [ ! -e '$tmp/plan.json.partial' ]"
"$bin" plan -m "$m" -n 3 --tp 3 -o "$tmp/bad.json" > /dev/null 2> "$tmp/err"; rc=$?
check "plan: TP not dividing the heads exits 1 with the reason, writes nothing" \
  "[ $rc -eq 1 ] && grep -q 'does not divide' '$tmp/err' && [ ! -e '$tmp/bad.json' ]"
"$bin" plan -m "$m" -n 2 --layers 1,1 > /dev/null 2> "$tmp/err"; rc=$?
check "plan: --layers that miss layers exits 1 naming the sum" "[ $rc -eq 1 ] && grep -q 'add up to 2' '$tmp/err'"

# Placed plans from a saved inventory: TP inside hosts, the bigger host gets more layers.
cat > "$tmp/inv.json" <<'INV'
{"format": "ranklm-inventory", "version": 1, "links": [],
 "ranks": [{"rank": 0, "host": "big", "cores": 8, "numa_nodes": 1, "memory_bytes": 17179869184, "speed_gbps": 30},
           {"rank": 1, "host": "big", "cores": 8, "numa_nodes": 1, "memory_bytes": 17179869184, "speed_gbps": 30},
           {"rank": 2, "host": "small", "cores": 4, "numa_nodes": 1, "memory_bytes": 8589934592, "speed_gbps": 10},
           {"rank": 3, "host": "small", "cores": 4, "numa_nodes": 1, "memory_bytes": 8589934592, "speed_gbps": 10}]}
INV
"$bin" plan -m "$m" --inventory "$tmp/inv.json" -o "$tmp/placed.json" > "$tmp/out" 2> "$tmp/err"; rc=$?
check "plan --inventory: TP 2 inside each host, hosts and memory in the table, placement in the JSON" \
  "[ $rc -eq 0 ] && grep -q '2 pipeline stages' '$tmp/out' && grep -q 'small' '$tmp/out' && grep -q '16.00 GiB' '$tmp/out' && grep -q '\"placement\"' '$tmp/placed.json'"
sed 's/"speed_gbps": 10}/"speed_gbps": "slow"}/' "$tmp/inv.json" > "$tmp/bad_inv.json"
"$bin" plan -m "$m" --inventory "$tmp/bad_inv.json" > /dev/null 2> "$tmp/err"; rc=$?
check "plan --inventory with a bad field exits 1 naming the file, the rank and the field" \
  "[ $rc -eq 1 ] && grep -q 'bad_inv.json: ranks\[2\]' '$tmp/err' && grep -q 'speed_gbps' '$tmp/err'"

# ranklm-repack: shards for a 2-stage plan, a single rank, and a plan of another model.
repack="$(dirname "$bin")/ranklm-repack"
"$bin" plan -m "$m" -n 2 --pp 2 -o "$tmp/pp2.json" > /dev/null 2>&1
"$repack" -m "$m" --plan "$tmp/pp2.json" -o "$tmp/shards" > /dev/null 2> "$tmp/err"; rc=$?
check "repack: one shard per rank and a complete manifest, no partial files" \
  "[ $rc -eq 0 ] && [ -s '$tmp/shards/rank-00000.h5' ] && [ -s '$tmp/shards/rank-00001.h5' ] && grep -q '\"complete\": true' '$tmp/shards/manifest.json' && ! ls '$tmp/shards' | grep -q partial"
if command -v h5ls > /dev/null; then
  check "repack: h5ls shows tensors by their GGUF names" "h5ls -r '$tmp/shards/rank-00000.h5' | grep -q '^/tensors/blk.0.attn_q.weight'"
fi
"$repack" -m "$m" --plan "$tmp/pp2.json" -o "$tmp/serial" -j 1 > /dev/null 2>&1
"$repack" -m "$m" --plan "$tmp/pp2.json" -o "$tmp/par" -j 2 > /dev/null 2>&1
check "repack -j 1 and -j 2 write the same bytes (same manifest checksums, same files)" \
  "cmp -s '$tmp/serial/manifest.json' '$tmp/par/manifest.json' && cmp -s '$tmp/serial/rank-00001.h5' '$tmp/shards/rank-00001.h5'"
"$repack" -m "$m" --plan "$tmp/pp2.json" -o "$tmp/one" --ranks 1 > /dev/null 2>&1
check "repack --ranks 1: only that shard, manifest not complete" \
  "[ -s '$tmp/one/rank-00001.h5' ] && [ ! -e '$tmp/one/rank-00000.h5' ] && grep -q '\"complete\": false' '$tmp/one/manifest.json'"
"$repack" -m "$fixtures/models/tiny-llama-q4_0.gguf" --plan "$tmp/pp2.json" -o "$tmp/other" > /dev/null 2> "$tmp/err"; rc=$?
check "repack: a plan made for another file exits 1 and says to rerun ranklm plan" \
  "[ $rc -eq 1 ] && grep -q 'another model file' '$tmp/err' && [ ! -e '$tmp/other/rank-00000.h5' ]"

"$bin" plan -m "$m" -n 1 -o "$tmp/p1.json" > /dev/null 2>&1
"$repack" -m "$m" --plan "$tmp/p1.json" -o "$tmp/s1" > /dev/null 2>&1
"$bin" logits -m "$m" --tokens 1,5,9 --greedy 3 > "$tmp/lm.json" 2> /dev/null
"$bin" logits --shards "$tmp/s1" --tokens 1,5,9 --greedy 3 > "$tmp/ls.json" 2> /dev/null
check "logits --shards on a 1-rank plan: the same JSON as --model, byte for byte" "[ -s '$tmp/ls.json' ] && cmp -s '$tmp/lm.json' '$tmp/ls.json'"
"$bin" logits --shards "$tmp/shards" --tokens 1 > /dev/null 2> "$tmp/err"; rc=$?
check "logits --shards of a 2-rank plan in a 1-rank job exits 1 naming both counts" \
  "[ $rc -eq 1 ] && grep -q '2 ranks planned, 1 started: start the job with mpirun -np 2' '$tmp/err'"
"$bin" inspect "$tmp/shards/rank-00001.h5" > "$tmp/insp.txt" 2> /dev/null
check "inspect on a shard: its place in the plan and its tensors" \
  "grep -q 'rank 1 of 2: stage 1' '$tmp/insp.txt' && grep -q 'output_norm.weight' '$tmp/insp.txt' && ! grep -q 'blk.0.attn_q' '$tmp/insp.txt'"

# --- bad command-line values exit 2 naming the option and the bound ---------------------------
for a in "--temp nan" "--top-p 2" "--top-k -1" "--min-p 5" "--repeat-penalty 0" "-c -1"; do
  "$bin" generate -m "$m" -p hi -n 2 $a > /dev/null 2> "$tmp/err"; rc=$?
  opt="${a%% *}"; [ "$opt" = "-c" ] && opt="--ctx-size"
  check "generate $a exits 2 naming $opt" "[ $rc -eq 2 ] && grep -q -- '$opt: ' '$tmp/err'"
done
"$bin" run -m "$m" -f /dev/null -o "$tmp/r.jsonl" --top-p 2 > /dev/null 2> "$tmp/err"; rc=$?
check "run --top-p 2 exits 2 before reading anything" "[ $rc -eq 2 ] && grep -q -- '--top-p: 2 must be in (0, 1]' '$tmp/err' && [ ! -e '$tmp/r.jsonl' ]"
"$bin" logits -m "$m" --tokens 1,,2 > /dev/null 2> "$tmp/err"; rc=$?
check "--tokens 1,,2 exits 2 naming the empty item" "[ $rc -eq 2 ] && grep -q \"'' is not an integer\" '$tmp/err'"
"$bin" generate -m "$m" -p hi -n 2 -t 100000 > /dev/null 2> "$tmp/err"; rc=$?
check "-t 100000 is capped at the usable cores" "[ $rc -eq 0 ] && grep -q 'using $(nproc)' '$tmp/err'"
printf 'hello\n' > "$tmp/p.txt"
"$bin" run -m "$m" -f "$tmp/p.txt" -o "$tmp/r2.jsonl" --parallel 1000000 -n 2 > /dev/null 2> "$tmp/err"; rc=$?
check "--parallel 1000000: refused naming the bound" "[ $rc -eq 2 ] && grep -q 'parallel: 1000000 must be in 1..4096' '$tmp/err'"
"$bin" run -m "$m" -f "$tmp/p.txt" -o "$tmp/r2.jsonl" -c 16000000 -n 2 > /dev/null 2> "$tmp/err"; rc=$?
check "-c 16000000: one context's KV cache does not fit, refused before allocating" \
  "[ $rc -eq 2 ] && grep -q 'one sequence of 16000000 positions' '$tmp/err' && grep -q 'lower --ctx-size' '$tmp/err'"
# Prompts that start alike share their prefix's KV blocks: the same text as computing each
# prompt whole, and the reused tokens in every record's usage and in the summary.
for i in 1 2 3 4 5 6; do echo "the quick brown fox jumps over the lazy dog and then the dog sleeps while the fox runs far away, question $i"; done > "$tmp/shared.txt"
"$bin" run -m "$m" -f "$tmp/shared.txt" -o "$tmp/sh1.jsonl" --temp 0 -n 6 --parallel 3 --progress log 2> "$tmp/sh1.err" > /dev/null
"$bin" run -m "$m" -f "$tmp/shared.txt" -o "$tmp/sh2.jsonl" --temp 0 -n 6 --parallel 3 --no-prefix-sharing --progress none 2> /dev/null > /dev/null
check "shared prompt prefixes: same text as without sharing, cached_tokens in usage and in the summary" "python3 - '$tmp/sh1.jsonl' '$tmp/sh2.jsonl' <<'PY' && grep -q ' from shared prefixes' '$tmp/sh1.err'
import json, sys
a, b = ({(r := json.loads(l))['custom_id']: r['response']['body'] for l in open(p)} for p in sys.argv[1:3])
assert a.keys() == b.keys() and len(a) == 6
assert all(a[k]['choices'][0]['text'] == b[k]['choices'][0]['text'] for k in a)
cached = [a[k]['usage']['prompt_tokens_details']['cached_tokens'] for k in a]
assert sum(1 for c in cached if c >= 16) >= 4, cached
assert all(b[k]['usage']['prompt_tokens_details']['cached_tokens'] == 0 for k in b)
PY"
"$bin" run -m "$m" -f "$tmp/p.txt" -o "$tmp/r3.jsonl" -c 100000 -n 2 --progress none > /dev/null 2> "$tmp/err"; rc=$?
check "a context past the trained one runs with a warning" "[ $rc -eq 0 ] && grep -q 'more than the model was trained on' '$tmp/err'"
"$bin" run -m "$m" -f "$tmp" -o "$tmp/r4.jsonl" > /dev/null 2> "$tmp/err"; rc=$?
check "--prompts DIR: says it is a directory" "[ $rc -eq 1 ] && grep -q 'the prompt file is a directory' '$tmp/err'"
"$bin" plan -m "$m" -n 2 -o "$tmp" > /dev/null 2> "$tmp/err"; rc=$?
check "plan -o DIR: says it is a directory, leaves no partial file" \
  "[ $rc -eq 1 ] && grep -q 'is a directory' '$tmp/err' && ! ls '$tmp' | grep -q partial"

# --- file contents never reach the terminal as control bytes -----------------------------------
python3 - "$tmp/esc.gguf" <<'PY'
import struct, sys
def s(b): return struct.pack("<Q", len(b)) + b
kv = s(b"general.name") + struct.pack("<I", 8) + s(b"evil\x1b]0;pwned\x07\x1b[2J name")
open(sys.argv[1], "wb").write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
PY
"$bin" inspect "$tmp/esc.gguf" > "$tmp/esc.txt" 2>&1; rc=$?
check "inspect shows ESC and BEL from metadata as \\xNN" \
  "[ $rc -eq 0 ] && ! grep -q \$'\\x1b' '$tmp/esc.txt' && ! grep -q \$'\\x07' '$tmp/esc.txt' && grep -qF 'evil\\x1b]0;pwned\\x07' '$tmp/esc.txt'"

# --- damaged models: refused naming the key, or an error record instead of NaN text ----------
if [ -n "$damage" ]; then
  "$damage" "$m" "$tmp/eps.gguf" f32 llama.attention.layer_norm_rms_epsilon nan
  "$bin" generate -m "$tmp/eps.gguf" -p hi -n 2 > /dev/null 2> "$tmp/err"; rc=$?
  check "a NaN RMS epsilon is refused naming the key" "[ $rc -eq 1 ] && grep -q \"metadata 'llama.attention.layer_norm_rms_epsilon': nan\" '$tmp/err'"
  "$damage" "$m" "$tmp/base.gguf" f32 llama.rope.freq_base 0
  "$bin" generate -m "$tmp/base.gguf" -p hi -n 2 > /dev/null 2> "$tmp/err"; rc=$?
  check "rope.freq_base 0 is refused naming the key" "[ $rc -eq 1 ] && grep -q \"metadata 'llama.rope.freq_base': 0\" '$tmp/err'"
  "$damage" "$m" "$tmp/ctx.gguf" u32 llama.context_length 0
  "$bin" generate -m "$tmp/ctx.gguf" -p hi -n 2 > /dev/null 2> "$tmp/err"; rc=$?
  check "context_length 0 is refused naming the key" "[ $rc -eq 1 ] && grep -q \"metadata 'llama.context_length': 0\" '$tmp/err'"
  n_tok=$("$bin" inspect "$m" | grep -o 'tokenizer.ggml.tokens *array *\[[0-9]*' | grep -o '[0-9]*$')
  "$damage" "$m" "$tmp/vocab.gguf" tokens $((n_tok / 2))
  "$bin" run -m "$tmp/vocab.gguf" -f "$tmp/p.txt" -o "$tmp/v.jsonl" -n 2 > /dev/null 2> "$tmp/err"; rc=$?
  check "a vocabulary of half the embedding rows is refused at load, naming both counts" \
    "[ $rc -eq 1 ] && grep -q 'the vocabulary has $((n_tok / 2)) tokens' '$tmp/err' && grep -q \"has $n_tok rows\" '$tmp/err'"
  "$damage" "$m" "$tmp/nan.gguf" nan output_norm.weight
  printf 'one\ntwo\nthree\n' > "$tmp/p3.txt"
  "$bin" run -m "$tmp/nan.gguf" -f "$tmp/p3.txt" -o "$tmp/nan.jsonl" -n 4 --progress none > /dev/null 2> "$tmp/err"; rc=$?
  check "NaN weights: every request gets a model_error record (status 500), no text" \
    "[ $rc -eq 0 ] && [ \$(grep -c '\"code\":\"model_error\"' '$tmp/nan.jsonl') -eq 3 ] && [ \$(grep -c '\"status_code\":500' '$tmp/nan.jsonl') -eq 3 ]"
fi

# --- hostile chat templates: each request gets an error record, the job goes on --------------
printf '%s' "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}" > "$tmp/boom.jinja"
printf 'hello\nworld\n' > "$tmp/two.txt"
timeout 60 "$bin" run -m "$m" -f "$tmp/two.txt" -o "$tmp/boom.jsonl" --chat --chat-template "$tmp/boom.jinja" -n 2 \
  --progress none > /dev/null 2> "$tmp/err"; rc=$?
check "a runaway template: each request an error record naming the bound, exit 0" \
  "[ $rc -eq 0 ] && [ \$(grep -c 'more than 5000000 steps' '$tmp/boom.jsonl') -eq 2 ]"
python3 -c "print('{{ ' + '(' * 100000 + '1' + ')' * 100000 + ' }}')" > "$tmp/deep.jinja"
timeout 60 "$bin" run -m "$m" -f "$tmp/two.txt" -o "$tmp/deep.jsonl" --chat --chat-template "$tmp/deep.jinja" -n 2 \
  --progress none > /dev/null 2> "$tmp/err"; rc=$?
check "a template nested 100000 deep: refused when loaded, naming the bound, nothing written" \
  "[ $rc -eq 1 ] && grep -q 'deep.jinja line 1: a tag of' '$tmp/err' && [ ! -s '$tmp/deep.jsonl' ]"

# --- the README's plan, repack and run sequence under mpirun -np 2 on one host ------------------
# The placed plan may use fewer ranks than were started (one rank with every core); it says so
# loudly, and every later step started with the wrong -np says, first thing, what to start.
if command -v mpirun > /dev/null; then
  mpi=(mpirun --oversubscribe --allow-run-as-root -np 2)
  repack="$(dirname "$bin")/ranklm-repack"
  printf 'one\ntwo\n' > "$tmp/np.txt"
  "${mpi[@]}" "$bin" plan -m "$m" -t 1 -o "$tmp/np.plan.json" > "$tmp/np.plan.out" 2> "$tmp/np.plan.err"; rc=$?
  check "mpirun -np 2 plan on one host: a 1-rank plan says so on stdout and stderr" \
    "[ $rc -eq 0 ] && grep -q 'this plan has 1 rank, not the 2 this job started' '$tmp/np.plan.out' && grep -q 'mpirun -np 1' '$tmp/np.plan.err'"
  "${mpi[@]}" "$repack" --model "$m" --plan "$tmp/np.plan.json" -o "$tmp/np.shards" > /dev/null 2> "$tmp/err"; rc=$?
  check "repack under the wrong -np: '1 rank planned, 2 started', nothing written" \
    "[ $rc -ne 0 ] && grep -q '1 rank planned, 2 started: start ranklm-repack with mpirun -np 1' '$tmp/err' && [ ! -e '$tmp/np.shards/rank-00000.h5' ]"
  "$repack" --model "$m" --plan "$tmp/np.plan.json" -o "$tmp/np.shards" > /dev/null 2>&1
  "${mpi[@]}" "$bin" run --shards "$tmp/np.shards" -f "$tmp/np.txt" -o "$tmp/np.jsonl" -n 2 --progress none > /dev/null 2> "$tmp/err"; rc=$?
  check "run under the wrong -np: '1 rank planned, 2 started', no results" \
    "[ $rc -ne 0 ] && grep -q '1 rank planned, 2 started: start the job with mpirun -np 1' '$tmp/err' && [ ! -s '$tmp/np.jsonl' ]"
  "$bin" plan -m "$m" -n 3 -o "$tmp/np3.plan.json" > /dev/null && "$repack" --model "$m" --plan "$tmp/np3.plan.json" -o "$tmp/np3" > /dev/null 2>&1
  "${mpi[@]}" "$bin" run --shards "$tmp/np3" -f "$tmp/np.txt" -o "$tmp/np3.jsonl" -n 2 --progress none > /dev/null 2> "$tmp/err"; rc=$?
  check "shards of a 3-rank plan under -np 2: '3 ranks planned, 2 started'" \
    "[ $rc -ne 0 ] && grep -q '3 ranks planned, 2 started: start the job with mpirun -np 3' '$tmp/err'"
  "${mpi[@]}" "$bin" plan -m "$m" -t 1 --layout spread -o "$tmp/sp.plan.json" > /dev/null 2>&1 &&
    "${mpi[@]}" "$repack" --model "$m" --plan "$tmp/sp.plan.json" -o "$tmp/sp" > /dev/null 2>&1 &&
    "${mpi[@]}" "$bin" run --shards "$tmp/sp" -f "$tmp/np.txt" -o "$tmp/sp.jsonl" -n 2 --progress none > /dev/null 2> "$tmp/err"; rc=$?
  check "plan --layout spread, repack and run, each under mpirun -np 2: two results" \
    "[ $rc -eq 0 ] && [ \$(wc -l < '$tmp/sp.jsonl') -eq 2 ]"
fi

echo "$((total - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
