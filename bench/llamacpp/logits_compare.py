"""Shared by compare_fixtures.py and compare_variants.py: how two runs' logits are compared."""
import math


def nrmse(a, b):
    """The worst per-position normalized RMS error of logits rows a against reference rows b."""
    worst = 0.0
    for x, y in zip(a, b):
        d = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)) / len(y))
        r = math.sqrt(sum(q * q for q in y) / len(y))
        worst = max(worst, d / r)
    return worst
