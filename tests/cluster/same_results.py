#!/usr/bin/env python3
"""same_results.py REF.jsonl OUT.jsonl: OUT answers every request of REF exactly once, each record
whole, with the same text, finish reason and token counts. Exit 1 (with the first difference)
otherwise."""
import json
import sys


def load(path):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except ValueError:
                sys.exit(f"{path}:{n}: not a whole JSON record: {line[:80]!r}")
            key = r["custom_id"]
            if key in out:
                sys.exit(f"{path}: {key} answered twice")
            b = r["response"]["body"] if r.get("error") is None else None
            out[key] = (b["choices"][0]["text"], b["choices"][0]["finish_reason"],
                        b["usage"]["completion_tokens"]) if b else r["error"]
    return out


ref, out = load(sys.argv[1]), load(sys.argv[2])
if set(ref) != set(out):
    sys.exit(f"requests differ: missing {sorted(set(ref) - set(out))[:5]}, extra {sorted(set(out) - set(ref))[:5]}")
for k in ref:
    if ref[k] != out[k]:
        sys.exit(f"{k}: {out[k]!r} instead of {ref[k]!r}")
