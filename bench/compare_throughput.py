#!/usr/bin/env python3
"""compare_throughput.py A.csv B.csv: two bench/throughput.sh sweeps side by side; prints the ratio
B/A of tokens/s for every (layout, test, n_parallel) and the median and spread of the ratios."""
import csv
import statistics
import sys

load = lambda p: {(r["layout"], r["test"], r["n_parallel"]): float(r["tokens_per_s"])
                  for r in csv.DictReader(l for l in open(p) if not l.startswith("#"))}
a, b = load(sys.argv[1]), load(sys.argv[2])
ratios = []
for k in sorted(a.keys() & b.keys()):
    ratios.append(b[k] / a[k])
    print(f"{k[0]:>7} {k[1]:>5} npl {k[2]:>3}: {a[k]:9.2f} -> {b[k]:9.2f} t/s  ratio {ratios[-1]:.3f}")
q = statistics.quantiles(ratios, n=10) if len(ratios) > 2 else ratios
print(f"{len(ratios)} rows: median ratio {statistics.median(ratios):.3f}, 10th-90th percentile {q[0]:.3f}-{q[-1]:.3f}, "
      f"min {min(ratios):.3f}, max {max(ratios):.3f}")
