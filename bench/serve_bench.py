#!/usr/bin/env python3
"""Served throughput and latency of an OpenAI-compatible server (ranklm serve, llama-server),
measured by one light asyncio client (standard library only) so both servers face the same load.

    serve_bench.py --url http://127.0.0.1:8080 --clients 1,8,32 --requests 8,32,64 \
                   --max-tokens 64 --prompt-words 80 --label ranklm --out rows.jsonl

Each level runs `clients` concurrent clients that together send `requests` streamed
/v1/completions requests (greedy, "ignore_eos": true, so every request generates exactly
max_tokens on either server). Per level it writes one JSON row: output tokens/s over the wall
time, time to first token (TTFT) p50/p99, and the per-request mean inter-token latency
(ITL = (last token - first token) / (tokens - 1)) p50/p99. Tokens are counted from the final
usage chunk (stream_options.include_usage) when the server sends one, else from the chunks.
"""
import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlparse

WORDS = ("time river garden music planet forest ocean story light city mountain winter summer "
         "machine letter window bridge market silver morning").split()


def prompt(i, n_words):
    rnd = random.Random(i)
    return f"Request {i}. " + " ".join(rnd.choice(WORDS) for _ in range(n_words))


async def one_request(host, port, body):
    """Sends one streamed completion; returns (t_first, t_last, tokens, t_start)."""
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    await writer.drain()
    t_first = t_last = None
    chunks = 0
    usage_tokens = None
    status = await reader.readline()
    if b" 200 " not in status:
        rest = await reader.read()
        writer.close()
        raise RuntimeError(f"HTTP {status!r}: {rest[:200]!r}")
    buf = b""
    while True:
        block = await reader.read(65536)
        if not block:
            break
        now = time.perf_counter()
        buf += block
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            try:
                j = json.loads(line[6:])
            except ValueError:
                continue  # a chunked-encoding size line glued to data is not expected; skip it
            if j.get("usage"):
                usage_tokens = j["usage"].get("completion_tokens")
            for c in j.get("choices", []):
                text = c.get("text")
                if text is None:
                    text = (c.get("delta") or {}).get("content")
                if text:
                    chunks += 1
                    if t_first is None:
                        t_first = now
                    t_last = now
    writer.close()
    return t0, t_first, t_last, usage_tokens if usage_tokens is not None else chunks


async def level(url, clients, n_requests, max_tokens, n_words, seed):
    u = urlparse(url)
    queue = list(range(n_requests))
    results = []

    async def client():
        while queue:
            i = queue.pop(0)
            body = {"model": "m", "prompt": prompt(seed * 100000 + i, n_words), "max_tokens": max_tokens,
                    "temperature": 0, "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
            results.append(await one_request(u.hostname, u.port, body))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return wall, results


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", default="8,32,64")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=80)
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    asyncio.run(level(a.url, 1, a.warmup, 8, a.prompt_words, 999))
    for clients, n in zip(map(int, a.clients.split(",")), map(int, a.requests.split(","))):
        wall, res = asyncio.run(level(a.url, clients, n, a.max_tokens, a.prompt_words, clients))
        tokens = sum(r[3] for r in res)
        ttft = [r[1] - r[0] for r in res if r[1] is not None]
        itl = [(r[2] - r[1]) / (r[3] - 1) for r in res if r[1] is not None and r[3] > 1]
        row = {"server": a.label, "clients": clients, "requests": n, "max_tokens": a.max_tokens,
               "output_tokens": tokens, "wall_s": round(wall, 3), "output_tok_s": round(tokens / wall, 1),
               "ttft_p50_ms": round(1000 * pct(ttft, 50), 1), "ttft_p99_ms": round(1000 * pct(ttft, 99), 1),
               "itl_p50_ms": round(1000 * pct(itl, 50), 2), "itl_p99_ms": round(1000 * pct(itl, 99), 2)}
        print(json.dumps(row), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
