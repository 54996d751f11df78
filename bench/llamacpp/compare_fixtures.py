#!/usr/bin/env python3
"""Three-way logits comparison on every fixture model: ranklm, a local llama.cpp build
(llamacpp_logits, see build.sh), and the stored references (../shared/fixtures/{models,new-arch}/*.ref.json).
Prints, per file, the worst per-position normalized RMS error of each pair and the first greedy
step where each run leaves the reference.

    bash bench/llamacpp/build.sh && python3 bench/llamacpp/compare_fixtures.py [--no-repack] [NAME-PART ...]
"""
import glob, json, os, subprocess, sys

from logits_compare import nrmse

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
fixtures = os.path.join(root, "..", "shared", "fixtures")
ranklm = os.path.join(root, "build", "bin", "ranklm")
probe = os.path.join(root, "bench", "llamacpp", ".cache", "llamacpp_logits")
extra = [a for a in sys.argv[1:] if a == "--no-repack"]


def first_diff(g, ref):
    for i, (p, q) in enumerate(zip(g, ref)):
        if p != q:
            return str(i)
    return "-"


print(f"{'file':26s} {'ours-llama.cpp':>15s} {'llama.cpp-ref':>14s} {'ours-ref':>9s}  greedy leaves ref at (ours / llama.cpp)")
paths = sorted(glob.glob(os.path.join(fixtures, "models", "*.gguf"))) + sorted(glob.glob(os.path.join(fixtures, "new-arch", "*.gguf")))
only = [a for a in sys.argv[1:] if not a.startswith("--")]
for path in paths:
    if only and not any(o in os.path.basename(path) for o in only):
        continue
    ref = json.load(open(path.replace(".gguf", ".ref.json")))
    toks = ",".join(map(str, ref["prompt"]))
    n = str(len(ref["greedy"]))
    ours = json.loads(subprocess.run([ranklm, "logits", "-m", path, "--tokens", toks, "--greedy", n],
                                     capture_output=True, text=True, check=True).stdout)
    lcpp = json.loads(subprocess.run([probe, path, toks, "--greedy", n] + extra,
                                     capture_output=True, text=True, check=True).stdout)
    print(f"{os.path.basename(path):26s} {nrmse(ours['logits'], lcpp['logits']):15.1e} "
          f"{nrmse(lcpp['logits'], ref['logits']):14.1e} {nrmse(ours['logits'], ref['logits']):9.1e}  "
          f"{first_diff(ours['greedy'], ref['greedy'])} / {first_diff(lcpp['greedy'], ref['greedy'])}")
