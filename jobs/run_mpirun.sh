#!/usr/bin/env bash
# A ranklm batch job over a hostfile with plain mpirun (no scheduler):
#   HOSTFILE=jobs/hostfiles/two-nodes.hosts NP=8 THREADS=4 MODEL=m.gguf PROMPTS=p.jsonl OUT=r.jsonl \
#     bash jobs/run_mpirun.sh [extra ranklm run options]
# Without HOSTFILE it runs NP ranks on this host. Ranks are mapped by slot (a host's ranks are
# consecutive, so TP groups form inside hosts) with THREADS cores each. The plan is made from
# the ranks' own inventory, shards are written by each rank (SHARDS may be a node-local path:
# every host then holds only its own ranks' shards), and the job resumes: rerunning after a
# crash or a kill answers only the prompts not yet in OUT.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${RANKLM_BIN:-$root/build/bin}"
NP="${NP:-2}"
THREADS="${THREADS:-1}"
MODEL="${MODEL:-$root/models/SmolLM2-135M-Instruct-Q4_1.gguf}"
PROMPTS="${PROMPTS:-$root/jobs/examples/prompts.txt}"
OUT="${OUT:-$PWD/results.jsonl}"
SHARDS="${SHARDS:-$PWD/shards-$(basename "$MODEL" .gguf)-$NP}"
PLAN="${PLAN:-$SHARDS.plan.json}"

mpi=(mpirun -np "$NP" --map-by "slot:PE=$THREADS" --bind-to core)
[ -n "${HOSTFILE:-}" ] && mpi+=(--hostfile "$HOSTFILE")
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
# More ranks x threads than this host has cores (a laptop, CI): share them.
if [ -z "${HOSTFILE:-}" ] && [ $((NP * THREADS)) -gt "$(nproc)" ]; then
  mpi=(mpirun -np "$NP" --oversubscribe --bind-to none); [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
fi

# --layout spread: the job runs the NP ranks it starts (on one host the default layout is one
# rank with every core, for a job started with one rank).
if [ ! -f "$PLAN" ]; then
  echo "[job] plan: ${mpi[*]} ranklm plan --model $MODEL -t $THREADS --layout spread -o $PLAN"
  "${mpi[@]}" "$bin/ranklm" plan --model "$MODEL" -t "$THREADS" --layout spread -o "$PLAN"
fi
if [ ! -f "$SHARDS/manifest.json" ] || ! grep -q '"complete": *true' "$SHARDS/manifest.json"; then
  echo "[job] shards: ${mpi[*]} ranklm-repack --model $MODEL --plan $PLAN -o $SHARDS"
  "${mpi[@]}" "$bin/ranklm-repack" --model "$MODEL" --plan "$PLAN" -o "$SHARDS"
fi
echo "[job] run: ${mpi[*]} ranklm run --shards $SHARDS --prompts $PROMPTS --out $OUT --resume $*"
"${mpi[@]}" "$bin/ranklm" run --shards "$SHARDS" -t "$THREADS" --prompts "$PROMPTS" --out "$OUT" --resume "$@"
