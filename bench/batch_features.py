#!/usr/bin/env python3
"""What log-probabilities and structured output cost a batch job, measured with `ranklm run`.

  constrained: N sequences decode with response_format (a JSON schema whose array never ends
      within max_tokens, so every sequence decodes max_tokens tokens under its mask) against the
      same N prompts unconstrained (ignore_eos, the same max_tokens): output tokens/s, and the ratio.
  scoring: P prompts of L random token ids, echo + logprobs 1 + max_tokens 0 (lm-eval's
      log-likelihood request, one prefill each): prompt tokens/s, against `ranklm bench`'s
      batched prefill of L-token prompts (--npl = --parallel).

    bench/batch_features.py -m models/SmolLM2-135M-Instruct-Q4_1.gguf -t 2 --seqs 64 -n 128 --prompts 200 -L 200

Rounds alternate (constrained, unconstrained, ...); the table gives medians. Not part of CI.
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_job(args, lines, tmp, name):
    jl, out = os.path.join(tmp, name + ".jsonl"), os.path.join(tmp, name + ".out.jsonl")
    with open(jl, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.run([args.ranklm, "run", "-m", args.model, "--prompts", jl, "--out", out, "-t", str(args.threads),
                        "--parallel", str(args.parallel), "--progress", "log", "--ctx-size", "1024"],
                       capture_output=True, text=True, check=True)
    m = re.search(r"tokens in (\d+).*out (\d+); wall ([0-9.]+) s", p.stderr)
    if not m:
        sys.exit("cannot read the job's summary:\n" + p.stderr[-2000:])
    records = [json.loads(x) for x in open(out)]
    return int(m.group(1)), int(m.group(2)), float(m.group(3)), records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--ranklm", default=os.path.join(ROOT, "build/bin/ranklm"))
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--seqs", type=int, default=64)
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("-L", "--prompt-len", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=64)
    ap.add_argument("-r", "--rounds", type=int, default=2)
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--items", choices=["integer", "object"], default="object",
                    help="the array's items: integers, or objects of a string, an enum and a number (the costlier masks)")
    args = ap.parse_args()
    rng = random.Random(1)
    msgs = [[{"role": "user", "content": f"List the numbers you like, request {i}."}] for i in range(args.seqs)]
    item = {"type": "integer", "minimum": 0, "maximum": 999999}
    if args.items == "object":
        item = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                                 "kind": {"type": "string", "enum": ["alpha", "beta", "gamma"]},
                                                 "score": {"type": "number"}}, "required": ["name", "kind", "score"]}
    schema = {"type": "object", "properties": {"values": {"type": "array", "items": item, "minItems": 10000}},
              "required": ["values"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "Values", "schema": schema}}
    con = [{"custom_id": f"c{i}", "url": "/v1/chat/completions",
            "body": {"messages": m, "max_tokens": args.max_tokens, "temperature": 0.8, "seed": i, "response_format": fmt}}
           for i, m in enumerate(msgs)]
    free = [{"custom_id": f"u{i}", "url": "/v1/chat/completions",
             "body": {"messages": m, "max_tokens": args.max_tokens, "temperature": 0.8, "seed": i, "ignore_eos": True}}
            for i, m in enumerate(msgs)]
    rates = {"constrained": [], "unconstrained": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, lines in (("constrained", con), ("unconstrained", free)):
                _, out, wall, recs = run_job(args, lines, tmp, name)
                assert out == args.seqs * args.max_tokens, (name, out)
                rates[name].append(out / wall)
        c, u = statistics.median(rates["constrained"]), statistics.median(rates["unconstrained"])
        print(f"| {args.seqs} sequences x {args.max_tokens} tokens, items {args.items} | constrained {c:.1f} t/s | unconstrained {u:.1f} t/s "
              f"| ratio {c / u:.2f} |")
        if args.skip_scoring:
            return
        score = [{"custom_id": f"s{i}", "url": "/v1/completions",
                  "body": {"prompt": [rng.randint(100, 30000) for _ in range(args.prompt_len)], "echo": True, "logprobs": 1,
                           "max_tokens": 0}} for i in range(args.prompts)]
        tok_in, _, wall, _ = run_job(args, score, tmp, "scoring")
        b = subprocess.run([args.ranklm, "bench", "-m", args.model, "-t", str(args.threads), "-p", str(args.prompt_len),
                            "-n", "0", "--npl", str(min(args.parallel, 16)), "-r", "1", "-o", "json"],
                           capture_output=True, text=True, check=True)
        rows = json.loads(b.stdout)
        rows = rows if isinstance(rows, list) else rows.get("rows", [])
        pp = max(r.get("avg_ts", r.get("tokens_per_s", 0)) for r in rows)
        print(f"| scoring {args.prompts} x {args.prompt_len} tokens | {tok_in / wall:.1f} prompt t/s | ranklm bench "
              f"pp{args.prompt_len} npl {min(args.parallel, 16)}: {pp:.1f} t/s | ratio {tok_in / wall / pp:.2f} |")


if __name__ == "__main__":
    main()
