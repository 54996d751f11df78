#!/usr/bin/env python3
"""ranklm serve against llama-server: the same GGUF, the same cores, the same slots, the same
client (bench/serve_bench.py) at 1, 8 and 32 concurrent clients. Rounds alternate (ranklm,
llama-server, ranklm, ...) so drifts hit both; the table gives each side's median per level and
the ratios (output tokens/s: ranklm / llama-server; p99 TTFT: ranklm / llama-server).

    python3 bench/compare_serve.py -m models/SmolLM2-135M-Instruct-Q4_1.gguf -t 2 --parallel 32 -r 3
    python3 bench/compare_serve.py ... --ranklm-cmd "mpirun -np 2 --allow-run-as-root build/bin/ranklm serve --shards S"

Writes bench/results/serve.jsonl (every row) and serve.md (the table). Not part of CI;
llama-server comes from bench/llamacpp/build.sh.
"""
import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 (not up yet)
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512, help="positions per slot")
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", default="8,32,64")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=80)
    ap.add_argument("--ranklm-cmd", default=os.path.join(root, "build", "bin", "ranklm") + " serve -m {model}")
    ap.add_argument("--llama-server", default=os.path.join(root, "bench", "llamacpp", ".cache", "llama-server"))
    ap.add_argument("--out", default=os.path.join(root, "bench", "results", "serve"))
    a = ap.parse_args()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    rows_path = a.out + ".jsonl"
    open(rows_path, "w").close()
    sides = {
        "ranklm": lambda port: shlex.split(a.ranklm_cmd.format(model=a.model)) + [
            "--port", str(port), "-t", str(a.threads), "--parallel", str(a.parallel), "--ctx-size", str(a.ctx),
            "--max-queue", "256"],
        "llama-server": lambda port: [
            a.llama_server, "-m", a.model, "--port", str(port), "-t", str(a.threads), "-tb", str(a.threads),
            "-np", str(a.parallel), "-c", str(a.parallel * a.ctx), "--no-webui"],
    }
    for rnd in range(a.rounds):
        for name, cmd in sides.items():
            port = free_port()
            log = open(f"{a.out}.{name}.log", "w")
            proc = subprocess.Popen(cmd(port), stdout=log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_health(url, proc)
                subprocess.run([sys.executable, os.path.join(root, "bench", "serve_bench.py"), "--url", url,
                                "--clients", a.clients, "--requests", a.requests, "--max-tokens", str(a.max_tokens),
                                "--prompt-words", str(a.prompt_words), "--label", name, "--out", rows_path], check=True)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    rows = [json.loads(l) for l in open(rows_path)]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if " avx512f " in flags else "AVX2" if " avx2 " in flags else "SSE"
    out = [f"CPU: {cpu} ({isa}), {a.threads} threads each, {a.parallel} slots of {a.ctx} positions, "
           f"{a.max_tokens} tokens per request (ignore_eos), prompts of {a.prompt_words} words; medians of {a.rounds} "
           f"alternating rounds.", "",
           "| clients | server | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |",
           "|---|---|---|---|---|---|---|"]
    ratios = []
    for c in map(int, a.clients.split(",")):
        med = {}
        for name in sides:
            rs = [r for r in rows if r["server"] == name and r["clients"] == c]
            med[name] = {k: statistics.median(r[k] for r in rs) for k in
                         ("output_tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")}
            m = med[name]
            out.append(f"| {c} | {name} | {m['output_tok_s']:.1f} | {m['ttft_p50_ms']:.0f} | {m['ttft_p99_ms']:.0f} | "
                       f"{m['itl_p50_ms']:.1f} | {m['itl_p99_ms']:.1f} |")
        ratios.append(f"| {c} | {med['ranklm']['output_tok_s'] / med['llama-server']['output_tok_s']:.2f} | "
                      f"{med['ranklm']['ttft_p99_ms'] / med['llama-server']['ttft_p99_ms']:.2f} |")
    out += ["", "| clients | output tok/s ranklm / llama-server | TTFT p99 ranklm / llama-server |", "|---|---|---|"] + ratios
    text = "\n".join(out) + "\n"
    open(a.out + ".md", "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
