#!/usr/bin/env bash
# ranklm logits --shards under mpirun, one process per rank, against one rank on the GGUF, for
# layouts 2 (PP), 2 (TP), 3 (PP uneven), 4 (PP 2 x TP 2), 4 (TP 4 with replicated KV heads on a
# model with 2 KV heads), 5 and 7 (PP, on an 8-layer model), 6 (PP 3 x TP 2), 8 (PP 2 x TP 4),
# the MoE fixtures under PP, TP, EP 2 / 4 and PP 2 x EP 2,
# in exact TP mode (the default) bit-identical logits, and in sum mode with f32 and Q8_0
# allreduce within the bounds of tests/test_executor.cpp (under the 1e-2 summation-order floor;
# printed). Then a rank killed mid-run: the job ends within seconds
# with a message naming the rank. Usage: dist_mpi_test.sh RANKLM RANKLM_REPACK RANKLM_SYNTH FIXTURES
set -u
bin="$1"; repack="$2"; synth="$3"; fixtures="$4"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mpi=(mpirun --oversubscribe --allow-run-as-root)
fails=0
toks=1,5,9,13,2,7
"$synth" --shape test-small --type q8_0 -o "$tmp/small.gguf" > /dev/null 2>&1 || { echo "FAIL: ranklm-synth"; exit 1; }
"$synth" --shape test-deep --type q4_0 -o "$tmp/deep.gguf" > /dev/null 2>&1 || { echo "FAIL: ranklm-synth"; exit 1; }
"$synth" --shape test-gemma3 --type q4_k_m -o "$tmp/gemma.gguf" > /dev/null 2>&1 || { echo "FAIL: ranklm-synth test-gemma3"; exit 1; }

run_case() {  # model ranks pp tp layers allreduce bound [tp-mode [hops [group-flag]]]; bound 0: bit-identical
  local m="$1" n="$2" pp="$3" tp="$4" layers="$5" z="$6" bound="$7" mode="${8:-exact}" hops="${9:-f32}" group="${10:---tp}"
  local label; label="$(basename "$m") n=$n pp=$pp ${group#--}=$tp ${layers:+layers=$layers }tp-mode=$mode allreduce=$z hops=$hops"
  local extra=(--tp-mode "$mode"); [ -n "$layers" ] && extra+=(--layers "$layers")
  "$bin" plan -m "$m" -n "$n" --pp "$pp" "$group" "$tp" "${extra[@]}" -o "$tmp/p.json" > /dev/null 2>&1 || { echo "FAIL: plan $label"; fails=$((fails + 1)); return; }
  rm -rf "$tmp/s"
  "$repack" -m "$m" --plan "$tmp/p.json" -o "$tmp/s" 2> /dev/null || { echo "FAIL: repack $label"; fails=$((fails + 1)); return; }
  "$bin" logits -m "$m" --tokens "$toks" --greedy 6 -t 1 > "$tmp/ref.json" 2> /dev/null
  if ! timeout 120 "${mpi[@]}" -np "$n" "$bin" logits --shards "$tmp/s" --tokens "$toks" --greedy 6 -t 1 --allreduce "$z" --hops "$hops" > "$tmp/out.json" 2> "$tmp/err"; then
    echo "FAIL: $label: mpirun failed"; tail -5 "$tmp/err"; fails=$((fails + 1)); return
  fi
  if python3 "$here/compare_logits.py" "$tmp/ref.json" "$tmp/out.json" "$bound" > "$tmp/cmp"; then
    echo "ok   $label: $(cat "$tmp/cmp")"
  else
    echo "FAIL: $label: $(cat "$tmp/cmp")"; fails=$((fails + 1))
  fi
}

q8="$fixtures/models/tiny-llama-q8_0.gguf"
kq="$fixtures/models/tiny-llama-q4_k_m.gguf"
# Exact TP (the default): every layout gives one rank's logits bit for bit.
run_case "$q8" 2 2 1 "" f32 0
run_case "$q8" 2 1 2 "" f32 0
run_case "$kq" 2 1 2 "" f32 0
run_case "$q8" 3 3 1 "1,2,1" f32 0
run_case "$kq" 4 2 2 "1,3" f32 0
run_case "$q8" 4 1 4 "" f32 0
run_case "$tmp/small.gguf" 4 1 4 "" f32 0   # 2 KV heads over 4 ranks: each KV head on two
run_case "$q8" 6 3 2 "" f32 0             # 6 ranks: 3 stages of TP 2
run_case "$q8" 8 2 4 "" f32 0             # 8 ranks: 2 stages of TP 4
run_case "$tmp/deep.gguf" 5 5 1 "" f32 0       # 5 and 7 ranks: pipelines over an 8-layer model
run_case "$tmp/deep.gguf" 7 7 1 "2,1,1,1,1,1,1" f32 0
# qwen3 (per-head Q/K norms, Q wider than the residual stream) and gemma3 (sliding-window and
# global layers, post norms, GELU; 6 prompt + 6 greedy positions against a window of 8).
q3="$fixtures/new-arch/tiny-qwen3-q4_k_m.gguf"
g3="$fixtures/new-arch/tiny-gemma3-q8_0.gguf"
run_case "$q3" 2 1 2 "" f32 0
run_case "$q3" 4 2 2 "" f32 0
run_case "$g3" 2 1 2 "" f32 0
run_case "$g3" 2 2 1 "5,1" f32 0            # the global layer 5 alone on the last stage
run_case "$g3" 4 2 2 "4,2" f32 0
run_case "$g3" 4 1 4 "" f32 0               # 1 KV head on each of 4 ranks
run_case "$tmp/gemma.gguf" 3 3 1 "3,3,1" f32 0   # ranklm-synth's test-gemma3: windowed, global, windowed
# Mixtures of experts (qwen3moe: 8 experts, top 2; Mixtral-style llama: 4 experts, top 2):
# pipeline, attention by heads with the experts by expert (--tp), expert-parallel groups
# (--ep: attention whole on every member), exact mode bit-identical; sum mode within 1e-2.
qm="$fixtures/moe/tiny-qwen3moe-q4_k_m.gguf"
mx="$fixtures/moe/tiny-mixtral-q8_0.gguf"
run_case "$qm" 2 2 1 "" f32 0
run_case "$qm" 2 1 2 "" f32 0
run_case "$qm" 2 1 2 "" f32 0 exact f32 --ep
run_case "$qm" 4 1 4 "" f32 0 exact f32 --ep
run_case "$qm" 4 2 2 "" f32 0 exact f32 --ep      # PP 2 x EP 2
run_case "$mx" 4 1 4 "" f32 0 exact f32 --ep      # one expert per rank
run_case "$mx" 4 2 2 "" f32 0
run_case "$qm" 4 1 4 "" f32 1e-2 sum f32 --ep
run_case "$mx" 2 1 2 "" q8_0 2e-2 sum f32 --ep
# Sum mode: partial sums added by the ring allreduce (f32 or Q8_0 payloads).
run_case "$q8" 2 1 2 "" f32 1e-2 sum
run_case "$kq" 2 1 2 "" f32 1e-2 sum          # attn_output whole on each rank: heads gathered
run_case "$q8" 4 2 2 "" f32 1e-2 sum
run_case "$q8" 2 1 2 "" q8_0 2e-2 sum
run_case "$q8" 4 2 2 "" q8_0 2e-2 sum
# Q8_0 hidden states on pipeline hops (for slow links): about 1% from f32 hops.
run_case "$q8" 2 2 1 "" f32 2e-2 exact q8_0
run_case "$kq" 4 2 2 "1,3" f32 2e-2 exact q8_0
run_case "$g3" 3 3 1 "2,3,1" f32 3e-2 exact q8_0   # two hops: 1.8%

# A compressed allreduce asked of an exact-mode plan (which has no allreduce) is refused clearly.
"$bin" plan -m "$q8" -n 2 --tp 2 -o "$tmp/p.json" > /dev/null 2>&1
rm -rf "$tmp/s"; "$repack" -m "$q8" --plan "$tmp/p.json" -o "$tmp/s" 2> /dev/null
if ! timeout 60 "${mpi[@]}" -np 2 "$bin" logits --shards "$tmp/s" --tokens "$toks" -t 1 --allreduce q8_0 > /dev/null 2> "$tmp/err" \
   && grep -q "tp-mode sum" "$tmp/err"; then
  echo "ok   --allreduce q8_0 on an exact-mode plan: refused, naming --tp-mode sum"
else
  echo "FAIL: --allreduce q8_0 on an exact plan was not refused clearly"; tail -3 "$tmp/err"; fails=$((fails + 1))
fi

# ranklm generate --shards under mpirun prints the same text as one rank (PP 2 x TP 2, seeded sampling).
"$bin" plan -m "$kq" -n 4 --pp 2 --tp 2 -o "$tmp/p.json" > /dev/null 2>&1
rm -rf "$tmp/s"; "$repack" -m "$kq" --plan "$tmp/p.json" -o "$tmp/s" 2> /dev/null
"$bin" generate -m "$kq" -p "Once upon a time" -n 24 --temp 0.8 --seed 5 -t 1 > "$tmp/g1.txt" 2> /dev/null
timeout 120 "${mpi[@]}" -np 4 "$bin" generate --shards "$tmp/s" -p "Once upon a time" -n 24 --temp 0.8 --seed 5 -t 1 > "$tmp/g4.txt" 2> "$tmp/err"
if [ -s "$tmp/g1.txt" ] && cmp -s "$tmp/g1.txt" "$tmp/g4.txt"; then
  echo "ok   generate --shards on 4 ranks (PP 2 x TP 2): the same text as one rank"
else
  echo "FAIL: generate --shards differs from one rank"; diff "$tmp/g1.txt" "$tmp/g4.txt" | head -5; tail -3 "$tmp/err"; fails=$((fails + 1))
fi

# ranklm bench --shards under mpirun: 4 sequences through the scheduler (sampling on the last
# stage), a JSON row per test with n_parallel and every rank's time split.
"$bin" plan -m "$q8" -n 2 --pp 2 -o "$tmp/p.json" > /dev/null 2>&1
rm -rf "$tmp/s"; "$repack" -m "$q8" --plan "$tmp/p.json" -o "$tmp/s" 2> /dev/null
if timeout 120 "${mpi[@]}" -np 2 "$bin" bench --shards "$tmp/s" -t 1 -p 8 -n 8 --npl 1,4 -r 1 -o json > "$tmp/bench.json" 2> "$tmp/err" \
   && python3 -c "
import json, sys
rows = json.load(open('$tmp/bench.json'))
assert [(r['n_parallel'], r['n_prompt'], r['n_gen']) for r in rows] == [(1, 8, 0), (1, 0, 8), (4, 8, 0), (4, 0, 8)], rows
assert all(r['avg_ts'] > 0 and r['n_ranks'] == 2 and r['compute_s_max'] >= r['compute_s_min'] > 0 for r in rows), rows
"; then
  echo "ok   bench --shards --npl 1,4 on 2 ranks: four JSON rows with n_parallel and per-rank time split"
else
  echo "FAIL: bench --shards under mpirun"; tail -5 "$tmp/err"; fails=$((fails + 1))
fi

# ranklm plan under mpirun: every rank reports (here as the 2-socket machine of an hwloc XML
# topology), rank 0 writes a placed plan and the inventory; shards of that plan run. On one
# host it picks one rank with every core (and says why); --layout spread uses both ranks.
topo="$here/data/topologies/two-socket-32c-128g.xml"
if timeout 120 "${mpi[@]}" -np 2 "$bin" plan -m "$q8" -t 1 --topology "$topo" -o "$tmp/one.json" > "$tmp/out" 2> "$tmp/err" \
   && grep -q 'layout: one rank with all' "$tmp/out" && grep -q '"world_size": 1' "$tmp/one.json" && grep -q 'KV blocks' "$tmp/out"; then
  echo "ok   plan under mpirun on one host: one rank with every core, the reason and KV blocks in the table"
else
  echo "FAIL: plan under mpirun on one host (auto layout)"; cat "$tmp/out"; tail -5 "$tmp/err"; fails=$((fails + 1))
fi
if timeout 120 "${mpi[@]}" -np 2 "$bin" plan -m "$q8" -t 1 --layout spread --topology "$topo" --save-inventory "$tmp/inv.json" -o "$tmp/placed.json" > "$tmp/out" 2> "$tmp/err" \
   && grep -q '"memory_bytes": 137438953472' "$tmp/inv.json" && grep -q '"placement"' "$tmp/placed.json" && grep -q '128.00 GiB' "$tmp/out"; then
  rm -rf "$tmp/s"; "$repack" -m "$q8" --plan "$tmp/placed.json" -o "$tmp/s" 2> /dev/null
  "$bin" logits -m "$q8" --tokens "$toks" --greedy 6 -t 1 > "$tmp/ref.json" 2> /dev/null
  timeout 120 "${mpi[@]}" -np 2 "$bin" logits --shards "$tmp/s" --tokens "$toks" --greedy 6 -t 1 > "$tmp/out.json" 2> /dev/null
  if python3 "$here/compare_logits.py" "$tmp/ref.json" "$tmp/out.json" 1e-2 > "$tmp/cmp"; then
    echo "ok   plan under mpirun: inventory gathered, placed plan written and run: $(cat "$tmp/cmp")"
  else
    echo "FAIL: placed plan: $(cat "$tmp/cmp")"; fails=$((fails + 1))
  fi
else
  echo "FAIL: plan under mpirun"; cat "$tmp/out"; tail -5 "$tmp/err"; fails=$((fails + 1))
fi

# A rank killed while the job runs: rank 0 names it, every rank ends, no hang.
"$synth" --shape test-medium --type q8_0 -o "$tmp/medium.gguf" > /dev/null 2>&1
"$bin" plan -m "$tmp/medium.gguf" -n 2 --pp 2 -o "$tmp/p.json" > /dev/null 2>&1
rm -rf "$tmp/s"; "$repack" -m "$tmp/medium.gguf" --plan "$tmp/p.json" -o "$tmp/s" 2> /dev/null
long=$(seq -s, 1 200)
# fault_case LABEL SIGNAL TIMEOUT PATTERN: rank 1 gets SIGNAL 1.5 s into a long run; the job must
# end with an error within 30 s whose stderr matches PATTERN (grep -E).
fault_case() {
  local label="$1" sig="$2" timeout_s="$3" pattern="$4" start rc took
  start=$(date +%s)
  RANKLM_COMM_TIMEOUT="$timeout_s" timeout 60 "${mpi[@]}" -np 2 bash -c \
    "if [ \"\$OMPI_COMM_WORLD_RANK\" = 1 ]; then (sleep 1.5; kill -$sig \$\$) & fi; exec \"\$0\" \"\$@\"" \
    "$bin" logits --shards "$tmp/s" --tokens "$long" --greedy 3000 -t 1 > /dev/null 2> "$tmp/err"
  rc=$?
  took=$(( $(date +%s) - start ))
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$took" -lt 30 ] && grep -qiE "$pattern" "$tmp/err"; then
    echo "ok   $label: the job ended in ${took} s (exit $rc): $(grep -oiE "$pattern" "$tmp/err" | head -1)"
  else
    echo "FAIL: $label: exit $rc after ${took} s"; tail -8 "$tmp/err"; fails=$((fails + 1))
  fi
}
# A rank killed while the job runs: rank 0 names it, every rank ends, no hang.
fault_case "a rank killed mid-run" 9 5 "rank 1|process rank 1"
# A rank that hangs (stopped): rank 0's wait times out and names it and its host; the job ends.
fault_case "a hung rank" STOP 3 "error on rank 0 \(host [^)]*\): .*rank 1 \(host .*\) .*within 3 s"
[ "$fails" -eq 0 ]
