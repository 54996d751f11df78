#!/usr/bin/env bash
# ranklm on a virtual cluster (cluster.sh): 4 hosts in 2 sites, about 10 ms one way between the
# sites (200 Mbit/s), Open MPI over TCP between the hosts, node-local shard directories.
#   - ranklm plan under mpirun, with the hostfile in the order h0 h2 h1 h3: the pipeline
#     crosses between the sites once; TP 2 (--tp-latency-us 5000) pairs h0 with h1 and h2 with
#     h3; the probe run twice and replanning from the saved inventory give the same plan;
#   - shards on each host's own disk; logits identical to one rank for the PP plan, the TP plan,
#     8 ranks (2 per host, TP inside hosts) and a mixture of experts on 8 ranks (EP 2 inside hosts);
#   - a batch job through jobs/run_mpirun.sh, resumed: the shards are not written again, every
#     prompt is answered once;
#   - faults (fault part, see below).
# Usage: cluster_test.sh RANKLM_BIN_DIR FIXTURES
set -u
bindir="$1"; fixtures="$2"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/../shell_lib.sh"
source "$here/cluster.sh"
trap 'cluster_down; cleanup' EXIT
bin="$bindir/ranklm"
model="$fixtures/models/tiny-llama-q8_0.gguf"
toks="1,450,49,173,170,299,125,97,278,17,112"

# Hosts listed h0 h2 h1 h3: the hostfile's order crosses the sites three times.
CLUSTER_SLOTS=1 cluster_up "$tmp/c" "a:h0 b:h2 a:h1 b:h3" 10 200 || { bad "the virtual cluster does not start"; exit 1; }
ok "virtual cluster: $(tr '\n' ' ' < "$tmp/c/hosts")"
local_dir="$tmp/c/local"  # each host's own disk there

plan_hosts() {  # the hosts of a plan's stages, in order: "h0,h1 h2,h3"
  python3 - "$1" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
host = {x["rank"]: x["host"] for x in p["placement"]}
print(" ".join(",".join(host[r] for r in s["ranks"]) for s in p["stages"]))
PY
}

# --- placement that reads the network -----------------------------------------------------------
if timeout 300 "$here/mpirun" --hostfile "$tmp/c/hosts" -np 4 "$bin" plan -m "$model" -t 1 --layout spread \
    --save-inventory "$tmp/inv.json" -o "$tmp/pp.json" > "$tmp/plan.out" 2> "$tmp/err"; then
  hosts="$(plan_hosts "$tmp/pp.json")"
  if [[ "$hosts" == "h0 h1 h2 h3" ]] && grep -q "crosses between sites 1 time" "$tmp/plan.out"; then
    ok "PP plan from h0 h2 h1 h3: stages on $hosts, the slow link crossed once"
  else
    bad "PP plan: stages on '$hosts'"; cat "$tmp/plan.out"
  fi
else
  bad "ranklm plan under mpirun"; cat "$tmp/err"
fi
pp_hash="$(grep -o 'plan hash [0-9a-f]*' "$tmp/plan.out")"
# The same cluster measured again gives the same plan; so does the saved inventory.
timeout 300 "$here/mpirun" --hostfile "$tmp/c/hosts" -np 4 "$bin" plan -m "$model" -t 1 --layout spread > "$tmp/plan2.out" 2> "$tmp/err"
again="$(grep -o 'plan hash [0-9a-f]*' "$tmp/plan2.out")"
from_inv="$("$bin" plan -m "$model" --inventory "$tmp/inv.json" --layout spread 2> "$tmp/err" | grep -o 'plan hash [0-9a-f]*')"
if [[ -n "$pp_hash" && "$again" == "$pp_hash" && "$from_inv" == "$pp_hash" ]]; then
  ok "the same plan from a second probe and from the saved inventory ($pp_hash)"
else
  bad "plans differ: '$pp_hash' / second probe '$again' / inventory '$from_inv'"; cat "$tmp/plan2.out"
fi
if "$bin" plan -m "$model" --inventory "$tmp/inv.json" --tp 2 --tp-latency-us 5000 -o "$tmp/tp.json" > "$tmp/plan.out" 2> "$tmp/err" \
    && [[ "$(plan_hosts "$tmp/tp.json")" == "h0,h1 h2,h3" ]]; then
  ok "TP 2 on h0 h2 h1 h3 forms {h0,h1} {h2,h3}"
else
  bad "TP 2 groups: $(plan_hosts "$tmp/tp.json" 2>&1)"; cat "$tmp/plan.out" "$tmp/err"
fi
if ! "$bin" plan -m "$model" --inventory "$tmp/inv.json" --tp 2 > /dev/null 2> "$tmp/err" \
    && grep -q "would put ranks of h0 and h1 in one group" "$tmp/err"; then
  ok "TP 2 over hosts without --tp-latency-us is refused naming h0 and h1"
else
  bad "TP 2 without --tp-latency-us"; cat "$tmp/err"
fi

# --- shards on node-local disks, logits identical to one rank ------------------------------------
"$bin" logits -m "$model" --tokens "$toks" --greedy 6 -t 1 > "$tmp/ref.json" 2> /dev/null
logits_on_cluster() {  # name plan np
  local name="$1" plan="$2" np="$3" hostfile="${4:-$tmp/c/hosts}"
  if ! timeout 120 "$here/mpirun" --hostfile "$hostfile" -np "$np" "$bindir/ranklm-repack" -m "$model" --plan "$plan" \
      -o "$local_dir/$name" > /dev/null 2> "$tmp/err"; then
    bad "$name: repack on the hosts' disks"; cat "$tmp/err"; return
  fi
  if ! timeout 120 "$here/mpirun" --hostfile "$hostfile" -np "$np" "$bin" logits --shards "$local_dir/$name" \
      --tokens "$toks" --greedy 6 -t 1 > "$tmp/out.json" 2> "$tmp/err"; then
    bad "$name: logits under mpirun"; cat "$tmp/err"; return
  fi
  if python3 "$root/tests/compare_logits.py" "$tmp/ref.json" "$tmp/out.json" 0 > "$tmp/cmp"; then
    ok "$name: logits bit-identical to one rank ($(cat "$tmp/cmp"))"
  else
    bad "$name: $(cat "$tmp/cmp")"
  fi
}
logits_on_cluster pp4 "$tmp/pp.json" 4
logits_on_cluster tp2 "$tmp/tp.json" 4
# Each host's disk holds only its own rank's shard.
n_h2="$(ls "$tmp/c/disk-h2/pp4" | grep -c '\.h5$')"
if [[ "$n_h2" == 1 && ! -e "$tmp/c/disk-h0/pp4/rank-00002.h5" ]]; then
  ok "node-local shards: h2's disk holds one shard, h0's not h2's"
else
  bad "node-local shards: h2 holds $n_h2"; ls -R "$tmp/c"/disk-*
fi

# 8 ranks, 2 per host (the hostfile still h0 h2 h1 h3): TP 2 inside each host.
sed 's/slots=1/slots=2/' "$tmp/c/hosts" > "$tmp/hosts8"
if timeout 300 "$here/mpirun" --hostfile "$tmp/hosts8" -np 8 "$bin" plan -m "$model" -t 1 --layout spread -o "$tmp/p8.json" \
    > "$tmp/plan.out" 2> "$tmp/err"; then
  hosts="$(plan_hosts "$tmp/p8.json")"
  if [[ "$hosts" == "h0,h0 h1,h1 h2,h2 h3,h3" ]] && grep -q "crosses between sites 1 time" "$tmp/plan.out"; then
    ok "8 ranks: TP 2 inside each host, stages on $hosts"
  else
    bad "8 ranks: stages on '$hosts'"; cat "$tmp/plan.out"
  fi
  logits_on_cluster p8 "$tmp/p8.json" 8 "$tmp/hosts8"
else
  bad "8-rank plan"; cat "$tmp/err"
fi

# A mixture of experts (3 layers) on 2 ranks of h0 and 2 of h1: expert-parallel groups inside
# each host (each rank half of the experts, attention whole), a pipeline stage per host;
# bit-identical to one rank.
dense="$model"
model="$fixtures/moe/tiny-qwen3moe-q4_k_m.gguf"
grep -E '^h[01] ' "$tmp/hosts8" > "$tmp/hosts-ep"
"$bin" logits -m "$model" --tokens "$toks" --greedy 6 -t 1 > "$tmp/ref.json" 2> /dev/null
if timeout 300 "$here/mpirun" --hostfile "$tmp/hosts-ep" -np 4 "$bin" plan -m "$model" -t 1 --layout spread --ep 2 \
    -o "$tmp/ep.json" > "$tmp/plan.out" 2> "$tmp/err" && grep -q '"ep": true' "$tmp/ep.json" \
    && [[ "$(plan_hosts "$tmp/ep.json")" == "h0,h0 h1,h1" ]]; then
  ok "MoE: EP 2 inside each host, stages on $(plan_hosts "$tmp/ep.json")"
  logits_on_cluster ep4 "$tmp/ep.json" 4 "$tmp/hosts-ep"
else
  bad "MoE EP plan on 8 ranks"; cat "$tmp/plan.out" "$tmp/err"
fi
model="$dense"
"$bin" logits -m "$model" --tokens "$toks" --greedy 6 -t 1 > "$tmp/ref.json" 2> /dev/null

# --- a batch job, resumed -------------------------------------------------------------------------
python3 -c "
for i in range(12): print(f'Prompt {i}: tell me about the river and the mountain number {i}')" > "$tmp/prompts.txt"
job() {  # out extra-args...
  local out="$1"; shift
  MPIRUN="$here/mpirun" HOSTFILE="$tmp/c/hosts" NP=4 THREADS=1 BIND=none MODEL="$model" PROMPTS="$tmp/prompts.txt" \
    OUT="$out" SHARDS="$local_dir/job" PLAN="$tmp/job-plan.json" RANKLM_BIN="$bindir" \
    timeout 300 bash "$root/jobs/run_mpirun.sh" -n 6 --temp 0 --progress none "$@"
}
"$bin" run -m "$model" --prompts "$tmp/prompts.txt" --out "$tmp/job-ref.jsonl" -n 6 --temp 0 --progress none -t 1 2> /dev/null
rm -f "$tmp/job.jsonl"
if job "$tmp/job.jsonl" > "$tmp/job.out" 2>&1 && job "$tmp/job.jsonl" > "$tmp/job2.out" 2>&1; then
  if grep -q "already there for this plan" "$tmp/job2.out" && ! grep -q "MB in" "$tmp/job2.out" \
      && python3 "$here/same_results.py" "$tmp/job-ref.jsonl" "$tmp/job.jsonl"; then
    ok "batch job over the cluster and its resubmission: same results as one process, shards not rewritten"
  else
    bad "batch job results or repack"; tail -20 "$tmp/job2.out"
  fi
else
  bad "batch job"; tail -30 "$tmp/job.out" "$tmp/job2.out"
fi

source "$here/cluster_faults.sh"

echo "$fails failure(s)"
[[ $fails -eq 0 ]]
