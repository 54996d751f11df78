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

# MPIRUN: another launcher command (a wrapper script); BIND=none: no core binding (hosts that
# share cores, as the virtual cluster of tests/cluster does).
if [ "${BIND:-core}" = none ]; then
  mpi=("${MPIRUN:-mpirun}" -np "$NP" --map-by slot --bind-to none)
else
  mpi=("${MPIRUN:-mpirun}" -np "$NP" --map-by "slot:PE=$THREADS" --bind-to "${BIND:-core}")
fi
[ -n "${HOSTFILE:-}" ] && mpi+=(--hostfile "$HOSTFILE")
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
# More ranks x threads than this host has cores (a laptop, CI): share them.
if [ -z "${HOSTFILE:-}" ] && [ $((NP * THREADS)) -gt "$(nproc)" ]; then
  mpi=(mpirun -np "$NP" --oversubscribe --bind-to none); [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
fi

# Preflight: every host of the hostfile must answer the launcher's remote shell (ssh, or the agent
# Open MPI is told to use) within 20 s. One that does not is named with the ranks it would run,
# at once, instead of mpirun's "unable to reliably start one or more daemons" much later.
if [ -n "${HOSTFILE:-}" ] && [ "${PREFLIGHT:-1}" != 0 ]; then
  agent="${OMPI_MCA_plm_rsh_agent:-ssh -o BatchMode=yes -o ConnectTimeout=15}"
  dead="" first=0
  while read -r h rest; do
    case "$h" in '' | '#'*) continue ;; esac
    slots="$(echo "$rest" | sed -n 's/.*slots=\([0-9]*\).*/\1/p')"
    last=$((first + ${slots:-1} - 1)); [ "$last" -ge "$NP" ] && last=$((NP - 1))
    if [ "$first" -le "$last" ] && [ "$h" != "$(hostname)" ] && [ "$h" != localhost ] &&
      ! timeout 20 $agent "$h" true > /dev/null 2>&1; then
      if [ "$first" -eq "$last" ]; then dead="$dead, $h (rank $first)"; else dead="$dead, $h (ranks $first-$last)"; fi
    fi
    first=$((first + ${slots:-1}))
  done < "$HOSTFILE"
  if [ -n "$dead" ]; then
    echo "[job] error: host ${dead#, } did not answer '$agent HOST true' within 20 s: bring it back, or remove it" \
      "from $HOSTFILE and make a new plan (rm $PLAN); the results so far are kept in $OUT" >&2
    exit 1
  fi
fi

# --layout spread: the job runs the NP ranks it starts (on one host the default layout is one
# rank with every core, for a job started with one rank).
if [ ! -f "$PLAN" ]; then
  echo "[job] plan: ${mpi[*]} ranklm plan --model $MODEL -t $THREADS --layout spread -o $PLAN"
  "${mpi[@]}" "$bin/ranklm" plan --model "$MODEL" -t "$THREADS" --layout spread -o "$PLAN"
fi
# Every rank checks its own shard and writes it only when missing: with node-local SHARDS each
# host's directory holds (and its manifest lists) only its own ranks' shards, and a
# resubmission writes nothing that is already there.
echo "[job] shards: ${mpi[*]} ranklm-repack --model $MODEL --plan $PLAN -o $SHARDS --missing"
"${mpi[@]}" "$bin/ranklm-repack" --model "$MODEL" --plan "$PLAN" -o "$SHARDS" --missing
echo "[job] run: ${mpi[*]} ranklm run --shards $SHARDS --prompts $PROMPTS --out $OUT --resume $*"
"${mpi[@]}" "$bin/ranklm" run --shards "$SHARDS" -t "$THREADS" --prompts "$PROMPTS" --out "$OUT" --resume "$@"
