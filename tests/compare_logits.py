#!/usr/bin/env python3
"""compare_logits.py REF.json OUT.json BOUND: the same greedy tokens and logits within BOUND
normalized RMS error (rms(out - ref) / rms(ref) over every prompt position); BOUND 0 asks for
bit-identical logits. Exit 1 otherwise."""
import json
import math
import sys

ref, out = (json.load(open(p)) for p in sys.argv[1:3])
bound = float(sys.argv[3])
num = sum((x - y) ** 2 for ra, rb in zip(ref["logits"], out["logits"]) for x, y in zip(ra, rb))
den = sum(x * x for ra in ref["logits"] for x in ra)
err = math.sqrt(num / den)
same = ref["greedy"] == out["greedy"] and len(ref["logits"]) == len(out["logits"])
print(f"nRMSE {err:.3g} (bound {bound:g}{' = bit-identical' if bound == 0 else ''}), greedy {'same' if same else 'DIFFERENT'}")
sys.exit(0 if same and (err < bound or (bound == 0 and err == 0)) else 1)
