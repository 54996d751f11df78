#!/usr/bin/env python3
"""plot_throughput.py THROUGHPUT.csv OUT_DIR: the PNG plots of a bench/throughput.sh sweep.

  tokens_vs_ranks.png       decode and prefill tokens/s against rank count, one line per kind of
                            layout (PP, TP, PP x TP; 1 rank is the shared start), at the largest batch
  tokens_vs_batch.png       decode tokens/s against sequences in flight (n_parallel), per layout
  compute_vs_comm.png       share of each rank's time computing vs communicating or waiting, per
                            layout, decode at batch 1 and at the largest batch
The provenance lines of the CSV (# ...) are printed under each title."""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

path, out = sys.argv[1], sys.argv[2]
prov = [l[2:].strip() for l in open(path) if l.startswith("# ")]
rows = list(csv.DictReader(l for l in open(path) if not l.startswith("#")))
for r in rows:
    for k in ("ranks", "pp", "tp", "threads", "n_prompt", "n_gen", "n_parallel"):
        r[k] = int(r[k])
    for k in ("tokens_per_s", "stddev", "compute_s_avg", "comm_s_avg", "comm_share"):
        r[k] = float(r[k])
layouts = list(dict.fromkeys(r["layout"] for r in rows))
max_npl = max(r["n_parallel"] for r in rows)
tg = sorted({r["n_gen"] for r in rows if r["n_gen"]})[-1]
pp = sorted({r["n_prompt"] for r in rows if r["n_prompt"]})[-1]
subtitle = "\n".join(p for p in prov if p.startswith(("commit", "host", "model")))


def pick(layout, test, npl):
    for r in rows:
        if r["layout"] == layout and r["test"] == test and r["n_parallel"] == npl:
            return r
    return None


def finish(fig, name, title):
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.005, subtitle, fontsize=6.5, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(f"{out}/{name}", dpi=110)
    plt.close(fig)
    print(f"wrote {out}/{name}")


# 1. tokens/s vs ranks
families = {"PP": ["1x2", "pp2", "pp4"], "TP": ["1x2", "tp2", "tp4"], "PP x TP": ["1x2", "pp2tp2"]}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, test, label in ((axes[0], f"tg{tg}", f"decode (tg{tg})"), (axes[1], f"pp{pp}", f"prefill (pp{pp})")):
    for fam, ls in families.items():
        pts = [(pick(l, test, max_npl)["ranks"], pick(l, test, max_npl)["tokens_per_s"]) for l in ls if pick(l, test, max_npl)]
        if len(pts) > 1:
            ax.plot(*zip(*pts), marker="o", label=fam)
    ax.set_xlabel("ranks")
    ax.set_ylabel("tokens/s (all sequences)")
    ax.set_xticks([1, 2, 4])
    ax.set_title(f"{label}, {max_npl} sequences")
    ax.grid(alpha=0.3)
    ax.legend()
finish(fig, "tokens_vs_ranks.png", "Throughput against rank count")

# 2. tokens/s vs batch size
fig, ax = plt.subplots(figsize=(6.5, 4.4))
for l in layouts:
    pts = sorted((r["n_parallel"], r["tokens_per_s"]) for r in rows if r["layout"] == l and r["test"] == f"tg{tg}")
    if pts:
        ax.plot(*zip(*pts), marker="o", label=l)
ax.set_xscale("log", base=2)
ax.set_xlabel("sequences in flight (n_parallel)")
ax.set_ylabel(f"decode tokens/s (tg{tg}, all sequences)")
ax.grid(alpha=0.3)
ax.legend(title="layout")
finish(fig, "tokens_vs_batch.png", "Decode throughput against batch size")

# 3. compute vs communication share
fig, ax = plt.subplots(figsize=(8, 4.4))
labels, comp, comm = [], [], []
for l in layouts:
    for npl in sorted({1, max_npl}):
        r = pick(l, f"tg{tg}", npl)
        if r:
            labels.append(f"{l}\nnpl {npl}")
            comp.append(1 - r["comm_share"])
            comm.append(r["comm_share"])
x = range(len(labels))
ax.bar(x, comp, label="compute")
ax.bar(x, comm, bottom=comp, label="communication + waiting")
ax.set_xticks(list(x))
ax.set_xticklabels(labels, fontsize=8)
ax.set_ylabel("share of rank time (average over ranks)")
ax.set_ylim(0, 1)
ax.legend(loc="lower right")
finish(fig, "compute_vs_comm.png", f"Where a rank's time goes, decode (tg{tg})")
