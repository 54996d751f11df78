#!/usr/bin/env python3
"""Side-by-side speed of two ranklm builds on the same models, threads and tests.

Runs `A bench ...` and `B bench ...` alternately, one repetition each per round (so drifts in
the machine's speed hit both alike), and prints the median tokens/s of each per model, thread
count and test, and the ratio B / A. For "is this change slower?": build the old commit in a
worktree, then

  git worktree add /tmp/old OLD && cmake -S /tmp/old -B /tmp/old/build && cmake --build /tmp/old/build --target ranklm
  bench/compare_builds.py --a /tmp/old/build/bin/ranklm --b build/bin/ranklm \\
      -m models/synth/tinyllama-1.1b-q4_0.gguf -t 1,2 -p 128 -n 64 --rounds 5

Extra arguments after `--` go to both (`-- --npl 4`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return json.loads(out)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="the first ranklm binary (the baseline)")
    ap.add_argument("--b", required=True, help="the second ranklm binary")
    ap.add_argument("-m", "--model", required=True, help="GGUF file(s), comma-separated")
    ap.add_argument("-t", "--threads", default="2")
    ap.add_argument("-p", "--n-prompt", default="128")
    ap.add_argument("-n", "--n-gen", default="64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("rest", nargs="*", help="more bench arguments, after --")
    a = ap.parse_args()
    for exe in (a.a, a.b):
        if not os.access(exe, os.X_OK):
            sys.exit(f"compare_builds: {exe}: not an executable")
    samples = {}  # (model, threads, test) -> {"a": [...], "b": [...]}
    isa = "?"
    for r in range(a.rounds):
        for model in a.model.split(","):
            for which, exe in (("a", a.a), ("b", a.b)) if r % 2 == 0 else (("b", a.b), ("a", a.a)):
                rows = run_json([exe, "bench", "-m", model, "-t", a.threads, "-p", a.n_prompt, "-n", a.n_gen,
                                 "-r", "1", "-o", "json", *a.rest])
                for row in rows:
                    test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
                    key = (os.path.basename(model), row["n_threads"], test)
                    samples.setdefault(key, {"a": [], "b": []})[which].append(row["avg_ts"])
                    isa = row.get("isa", isa)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"CPU: {cpu_name()}, instruction set used: {isa}; {a.rounds} rounds, alternating; medians")
    print(f"A = {a.a}\nB = {a.b}\n")
    print("| model | threads | test | A t/s | B t/s | B / A |")
    print("|---|---:|---|---:|---:|---:|")
    ratios = []
    for (model, t, test), s in sorted(samples.items()):
        ma, mb = statistics.median(s["a"]), statistics.median(s["b"])
        ratios.append(mb / ma)
        print(f"| {model} | {t} | {test} | {ma:.2f} | {mb:.2f} | {mb / ma:.3f} |")
    print(f"\nmedian B / A over {len(ratios)} rows: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
