#!/usr/bin/env bash
# Batch throughput across rank layouts, batch sizes and prompt/output lengths, on a synthetic
# model of a real shape (TinyLlama-1.1B, Q4_0, random weights: speed only). For each layout it
# plans, repacks and runs `ranklm bench --shards` under mpirun with --npl (sequences decoded
# together, llama-batched-bench style) and writes one CSV row per test with provenance, then
# draws the plots (bench/plot_throughput.py).
#
#   bash bench/throughput.sh [OUT_DIR]            # default bench/results/throughput
#   LAYOUTS="1x2 pp2 tp2" NPL=1,4,16 PP=64 TG=32 REPS=2 bash bench/throughput.sh
#
# Layouts: 1x2 (one rank, 2 threads), pp2 / tp2 (2 ranks x 1 thread), pp4 / tp4 / pp2tp2
# (4 ranks x 1 thread; on a 2-core host they share the cores: --oversubscribe).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:-bench/results/throughput}"
LAYOUTS="${LAYOUTS:-1x2 pp2 tp2 pp4 tp4 pp2tp2}"
NPL="${NPL:-1,4,16}"
PP="${PP:-16,64}"
TG="${TG:-16,64}"
REPS="${REPS:-2}"
SHAPE="${SHAPE:-tinyllama-1.1b}"
TYPE="${TYPE:-q4_0}"
bin=build/bin
model="models/synth/$SHAPE-$TYPE.gguf"
[ -f "$model" ] || { mkdir -p models/synth; "$bin/ranklm-synth" --shape "$SHAPE" --type "$TYPE" -o "$model"; }
mkdir -p "$out"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
csv="$out/throughput.csv"
{
  echo "# ranklm throughput sweep"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# commit: $(git rev-parse --short HEAD 2> /dev/null || echo unknown)$(git diff --quiet 2> /dev/null || echo ' (modified)')"
  echo "# host: $(hostname -s), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "# model: $model ($SHAPE $TYPE, random weights), $(stat -c %s "$model") bytes"
  echo "# command: LAYOUTS=\"$LAYOUTS\" NPL=$NPL PP=$PP TG=$TG REPS=$REPS bash bench/throughput.sh $out"
  echo "layout,ranks,pp,tp,threads,test,n_prompt,n_gen,n_parallel,tokens_per_s,stddev,compute_s_avg,comm_s_avg,comm_share"
} > "$csv"
for l in $LAYOUTS; do
  case "$l" in
    1x2) n=1 pp=1 tp=1 t=2 ;;
    pp2) n=2 pp=2 tp=1 t=1 ;;
    tp2) n=2 pp=1 tp=2 t=1 ;;
    pp4) n=4 pp=4 tp=1 t=1 ;;
    tp4) n=4 pp=1 tp=4 t=1 ;;
    pp2tp2) n=4 pp=2 tp=2 t=1 ;;
    *) echo "unknown layout $l" >&2; exit 2 ;;
  esac
  "$bin/ranklm" plan -m "$model" -n "$n" --pp "$pp" --tp "$tp" -o "$work/$l.json" > /dev/null
  "$bin/ranklm-repack" -m "$model" --plan "$work/$l.json" -o "$work/$l" 2> /dev/null
  mpi=(mpirun -np "$n")
  [ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
  if [ $((n * t)) -gt "$(nproc)" ]; then mpi+=(--oversubscribe --bind-to none); else mpi+=(--bind-to core); fi
  [ "$n" = 1 ] && mpi=()
  echo "[throughput] $l: ${mpi[*]} ranklm bench --shards ... -t $t -p $PP -n $TG --npl $NPL -r $REPS" >&2
  "${mpi[@]}" "$bin/ranklm" bench --shards "$work/$l" -t "$t" -p "$PP" -n "$TG" --npl "$NPL" -r "$REPS" -o json > "$work/$l.rows.json"
  python3 - "$work/$l.rows.json" "$l" "$n" "$pp" "$tp" "$t" >> "$csv" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
l, n, pp, tp, t = sys.argv[2:7]
for r in rows:
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    c, m = r["compute_s_avg"], r["comm_s_avg"]
    print(f"{l},{n},{pp},{tp},{t},{test},{r['n_prompt']},{r['n_gen']},{r['n_parallel']},{r['avg_ts']:.3f},{r['stddev_ts']:.3f},"
          f"{c:.4f},{m:.4f},{m / (c + m) if c + m > 0 else 0:.4f}")
PY
done
echo "[throughput] wrote $csv" >&2
# The plots need matplotlib (Debian's python3-matplotlib, installed by tools/setup.sh): use the
# system Python when the first python3 on PATH lacks it.
py=python3
python3 -c "import matplotlib" 2> /dev/null || py=/usr/bin/python3
"$py" bench/plot_throughput.py "$csv" "$out"
