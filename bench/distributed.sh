#!/usr/bin/env bash
# Distributed speed against one rank, side by side on this host (alternating rounds):
#   decode: TP 2 (2 ranks x 1 thread) vs one rank with 2 threads, tg64, one sequence, in both
#           TP modes (exact, the default: gathers; sum: allreduce of partial sums);
#   batch:  PP 2 (2 ranks x 1 thread, placed plan) vs one rank with 2 threads, 16 sequences
#           decoding 32 tokens each.
# Model: a TinyLlama-1.1B-shaped Q4_0 GGUF (made with ranklm-synth when missing).
# Usage: bench/distributed.sh [ROUNDS] > results.txt   (prints one line per round and medians)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rounds="${1:-5}"
bin=build/bin
model=models/synth/tinyllama-1.1b-q4_0.gguf
[ -f "$model" ] || { mkdir -p models/synth; "$bin/ranklm-synth" --shape tinyllama-1.1b --type q4_0 -o "$model"; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mpi=(mpirun -np 2 --bind-to core)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
for cfg in "1 1 1 exact one" "2 1 2 exact tp2" "2 1 2 sum tp2sum"; do
  set -- $cfg
  "$bin/ranklm" plan -m "$model" -n "$1" --pp "$2" --tp "$3" --tp-mode "$4" -o "$work/$5.json" > /dev/null
done
# PP 2 as a user gets it: placed by the ranks themselves (TP 1 forced), so the stage that also
# streams the output head gets fewer layers (12 + 10 here).
"${mpi[@]}" "$bin/ranklm" plan -m "$model" --tp 1 -t 1 -o "$work/pp2.json" | grep -E "^ +[0-9]"
for s in one tp2 tp2sum pp2; do "$bin/ranklm-repack" -m "$model" --plan "$work/$s.json" -o "$work/$s" 2> /dev/null; done
ts() { python3 -c "import json,sys; print(f\"{[r for r in json.load(sys.stdin) if r['n_gen'] > 0][0]['avg_ts']:.2f}\")"; }  # tg t/s
echo "round one_rank_2t_tg64 tp2_exact_tg64 tp2_sum_tg64 ratio_exact ratio_sum one_rank_2t_npl16 pp2_npl16 ratio_pp"
for r in $(seq 1 "$rounds"); do
  a=$("$bin/ranklm" bench --shards "$work/one" -t 2 -p 0 -n 64 -r 3 -o json | ts)
  b=$("${mpi[@]}" "$bin/ranklm" bench --shards "$work/tp2" -t 1 -p 0 -n 64 -r 3 -o json | ts)
  e=$("${mpi[@]}" "$bin/ranklm" bench --shards "$work/tp2sum" -t 1 -p 0 -n 64 -r 3 -o json | ts)
  c=$("$bin/ranklm" bench --shards "$work/one" -t 2 -p 0 -n 32 --npl 16 -r 3 -o json | ts)
  d=$("${mpi[@]}" "$bin/ranklm" bench --shards "$work/pp2" -t 1 -p 0 -n 32 --npl 16 -r 3 -o json | ts)
  echo "$r $a $b $e $(python3 -c "print(f'{$b/$a:.3f} {$e/$a:.3f}')") $c $d $(python3 -c "print(f'{$d/$c:.3f}')")"
done | tee "$work/rounds.txt"
python3 - "$work/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
col = lambda i: statistics.median(float(r[i]) for r in rows)
print(f"median: TP2 decode exact {col(2):.2f} t/s, sum {col(3):.2f} t/s vs one rank 2 threads {col(1):.2f} t/s, "
      f"ratios {col(4):.3f} (exact) {col(5):.3f} (sum); "
      f"PP2 16 sequences {col(7):.2f} t/s vs {col(6):.2f} t/s, ratio {col(8):.3f}")
PY
