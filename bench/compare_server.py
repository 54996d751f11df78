#!/usr/bin/env python3
"""The main job, side by side: `ranklm run` against llama-server fed by a concurrent client.

Both answer the same chat prompts (one a line) from the same GGUF with the same max_tokens,
greedy, on the same cores. llama-server gets N slots and N requests in flight at a time from a
Python standard-library client (threads posting to /v1/chat/completions); ranklm runs the file
as a batch job (`ranklm run --chat --parallel N`, or under mpirun with --shards). Rounds
alternate (ranklm, llama-server, ranklm, ...), so drifts in clock or memory speed hit both; the
table gives each side's median output tokens/s (completion tokens summed over requests / wall
time of the whole job) and the ratio.

    bench/compare_server.py -m models/SmolLM2-135M-Instruct-Q4_1.gguf -f jobs/examples/prompts.txt \\
        -n 64 --parallel 16 -t 2 -r 3
    bench/compare_server.py ... --ranklm-cmd "mpirun -np 2 --allow-run-as-root build/bin/ranklm run --shards S"
    bench/compare_server.py ... --system-file sys.txt   # every request with this system message

Not part of CI. llama-server comes from bench/llamacpp/build.sh.
"""
import argparse
import concurrent.futures
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(url, proc, limit=300):
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            sys.exit(f"compare_server: llama-server exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit("compare_server: llama-server did not become ready")


def messages(prompt, system):
    m = [{"role": "system", "content": system}] if system else []
    return m + [{"role": "user", "content": prompt}]


def run_server(a, prompts, system):
    """One round against llama-server: start it, warm it with one request, then time the job."""
    port = free_port()
    cmd = [a.llama_server, "-m", a.model, "-t", str(a.threads), "-tb", str(a.threads), "-np", str(a.parallel),
           "-c", str(a.ctx * a.parallel), "--host", "127.0.0.1", "--port", str(port), "--log-disable"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        post(url + "/v1/chat/completions", {"messages": messages("hi", system), "max_tokens": 2, "temperature": 0})

        def one(p):
            r = post(url + "/v1/chat/completions",
                     {"messages": messages(p, system), "max_tokens": a.max_tokens, "temperature": 0})
            return r["usage"]["completion_tokens"], r["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.parallel) as ex:
            res = list(ex.map(one, prompts))
        wall = time.time() - t0
        return sum(r[0] for r in res) / wall, sum(r[0] for r in res), sum(r[1] for r in res), wall
    finally:
        proc.terminate()
        proc.wait()


def run_ranklm(a, prompts_file, system):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "results.jsonl")
        base = shlex.split(a.ranklm_cmd) if a.ranklm_cmd else [a.ranklm, "run", "-m", a.model, "-t", str(a.threads)]
        cmd = base + ["-f", prompts_file, "-o", out, "--chat", "-n", str(a.max_tokens), "--temp", "0", "--parallel",
                      str(a.parallel), "-c", str(a.ctx), "--progress", "none"] + a.ranklm_arg
        if system:
            cmd += ["--system", system]
        t0 = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0  # the whole job: start-up and model load included
        recs = [json.loads(line) for line in open(out)]
        usage = [r["response"]["body"]["usage"] for r in recs if r["error"] is None]
        if len(usage) != len(recs):
            sys.exit(f"compare_server: ranklm answered {len(usage)} of {len(recs)} requests")
        out_tok = sum(u["completion_tokens"] for u in usage)
        cached = sum(u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for u in usage)
        return out_tok / wall, out_tok, cached, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-f", "--prompts", default=os.path.join(ROOT, "jobs", "examples", "prompts.txt"))
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16, help="llama-server slots and requests in flight; ranklm --parallel")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--ctx", type=int, default=1024, help="context per sequence")
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="use the prompt file this many times over")
    ap.add_argument("--system-file", help="a system message for every request")
    ap.add_argument("--ranklm", default=os.path.join(ROOT, "build", "bin", "ranklm"))
    ap.add_argument("--ranklm-cmd", help="the ranklm command up to its run options (e.g. under mpirun with --shards)")
    ap.add_argument("--ranklm-arg", action="append", default=[], help="an extra argument for ranklm run (repeatable)")
    ap.add_argument("--llama-server", default=os.path.join(HERE, "llamacpp", ".cache", "llama-server"))
    ap.add_argument("--json", help="also write the samples as JSON to this file")
    a = ap.parse_args()
    if not os.access(a.llama_server, os.X_OK):
        sys.exit(f"compare_server: {a.llama_server} not found (bash bench/llamacpp/build.sh)")
    prompts = [line.rstrip("\n") for line in open(a.prompts) if line.strip()] * a.repeat
    system = open(a.system_file).read().strip() if a.system_file else None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(prompts) + "\n")
        prompts_file = f.name
    samples = {"ranklm": [], "llama-server": []}
    try:
        for rnd in range(a.rounds):
            for side, fn in (("ranklm", lambda: run_ranklm(a, prompts_file, system)),
                             ("llama-server", lambda: run_server(a, prompts, system))):
                ts, out_tok, cached, wall = fn()
                samples[side].append({"tokens_per_s": ts, "completion_tokens": out_tok, "cached_tokens": cached,
                                      "wall_s": wall})
                print(f"round {rnd + 1}: {side}: {out_tok} tokens out in {wall:.2f} s = {ts:.1f} tokens/s "
                      f"({cached} prompt tokens cached)", file=sys.stderr)
    finally:
        os.unlink(prompts_file)
    r = statistics.median(s["tokens_per_s"] for s in samples["ranklm"])
    l = statistics.median(s["tokens_per_s"] for s in samples["llama-server"])
    print(f"| job | ranklm out t/s | llama-server out t/s | ratio |")
    print(f"| --- | ---: | ---: | ---: |")
    print(f"| {len(prompts)} chat prompts x {a.max_tokens} tokens, {a.parallel} in flight, -t {a.threads} "
          f"| {r:.1f} | {l:.1f} | {r / l:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "samples": samples, "ratio": r / l}, f, indent=1)


if __name__ == "__main__":
    main()
