"""Log-probabilities, prompt scoring and the tokenizer endpoints of ranklm serve (called by
serve_test.py on every layout it runs):
  - chat logprobs/top_logprobs: one entry per generated token, alternatives sorted, the greedy
    token the most likely, probabilities summing to at most 1;
  - completions echo + logprobs + max_tokens 0 over a list of token-id prompts (lm-eval's shape):
    every prompt token's log-probability and alternatives equal log_softmax of `ranklm logits`
    for the same tokens (1e-4), the first null; the second prompt shares the first's context;
  - the same request through `ranklm run` gives the same numbers;
  - /tokenize, /detokenize, /tokenizer_info (vLLM's shapes) and llama-server's /tokenize;
  - misuse: top_logprobs 21, echo on chat, n 2, logprobs with stream, bad token ids: 400 naming
    the field, the server unharmed.
"""
import json
import math
import subprocess

from batch_job import run_batch

H = {"Content-Type": "application/json"}


def log_softmax(row):
    m = max(row)
    z = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - z for x in row]


def reference(args, ids):
    """Per position: the log-probabilities of the next token, from ranklm logits (float64)."""
    out = subprocess.run([args.ranklm, "logits", "-m", args.model, "--tokens", ",".join(map(str, ids)), "--greedy", "0"],
                         check=True, capture_output=True, text=True).stdout
    return [log_softmax(row) for row in json.loads(out)["logits"]]


def compare_echo(check, label, what, choice, ids, ref, top_n, detok):
    lp = choice["logprobs"]
    ok = lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None and len(lp["token_logprobs"]) >= len(ids)
    worst = 0.0
    order_ok = True
    for i in range(1, len(ids)):
        want = ref[i - 1]
        worst = max(worst, abs(lp["token_logprobs"][i] - want[ids[i]]))
        best = sorted(range(len(want)), key=lambda t: (-want[t], t))[:top_n]
        got = lp["top_logprobs"][i]
        vals = list(got.values())
        order_ok &= vals == sorted(vals, reverse=True) and len(got) <= top_n
        for t in best:
            key = detok(t)
            if key in got:
                worst = max(worst, abs(got[key] - want[t]))
        order_ok &= detok(best[0]) in got
    check(ok and worst < 1e-4 and order_ok, f"{label}: {what}: prompt log-probabilities equal ranklm logits' (max diff {worst:.2e})",
          json.dumps(lp)[:300])


def run(s, label, args, model, check):
    ctx = [504, 3575, 282, 4649, 314, 253, 3458, 282, 7071, 30, 378, 3575, 282, 1030, 314] * 3
    conts = [[7071, 30], [1030, 314, 253]]
    prompts = [ctx + c for c in conts]
    pieces = {}

    def detok(t):
        if t not in pieces:
            st, j = s.raw("POST", "/detokenize", json.dumps({"tokens": [t]}), H)
            pieces[t] = j["prompt"]
        return pieces[t]

    # Scoring: lm-eval's request (a list of id prompts, echo, logprobs, max_tokens 0 and 1).
    for max_tokens in (0, 1):
        st, j = s.raw("POST", "/v1/completions", json.dumps({"model": model, "prompt": prompts, "echo": True, "logprobs": 5,
                                                            "max_tokens": max_tokens, "temperature": 0}), H)
        if st != 200:
            check(False, f"{label}: scoring request answered", f"{st} {j}")
            return
        check(len(j["choices"]) == 2 and [c["index"] for c in j["choices"]] == [0, 1],
              f"{label}: a list of two prompts gets two choices in order")
        for c, ids in zip(j["choices"], prompts):
            n_tok = len(c["logprobs"]["tokens"])
            check(n_tok == len(ids) + max_tokens, f"{label}: echo returns the prompt's {len(ids)} tokens and "
                  f"{max_tokens} generated ({n_tok})")
            compare_echo(check, label, f"max_tokens {max_tokens}", c, ids, reference(args, ids), 5, detok)
        cached = j["usage"]["prompt_tokens_details"]["cached_tokens"]
        check(cached >= 32, f"{label}: the second prompt shares the first's context ({cached} cached tokens)")
        if max_tokens == 0:
            scored = j
    # Chat: logprobs with top_logprobs on greedy decoding.
    r = s.client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6,
                                         temperature=0, logprobs=True, top_logprobs=4)
    content = r.choices[0].logprobs.content
    ok = len(content) == r.usage.completion_tokens
    for e in content:
        vals = [t.logprob for t in e.top_logprobs]
        ok &= len(vals) == 4 and vals == sorted(vals, reverse=True) and e.token == e.top_logprobs[0].token
        ok &= abs(e.logprob - vals[0]) < 1e-6 and sum(math.exp(v) for v in vals) <= 1 + 1e-5
        ok &= bytes(e.bytes).decode("utf-8", "replace") == e.token
    check(ok, f"{label}: chat logprobs: an entry per token, 4 alternatives sorted, the greedy token the most likely")
    # The same scoring request through ranklm run.
    body = {"prompt": prompts, "echo": True, "logprobs": 5, "max_tokens": 0}
    rec = run_batch(args, "scoring", [{"custom_id": "score", "url": "/v1/completions", "body": body}])[0]
    got = [c["logprobs"] for c in rec["response"]["body"]["choices"]]
    check(got == [c["logprobs"] for c in scored["choices"]], f"{label}: ranklm run gives the same scoring numbers")
    # Tokenizer endpoints.
    st, t = s.raw("POST", "/tokenize", json.dumps({"prompt": "The capital of France", "add_special_tokens": False,
                                                   "return_token_strs": True}), H)
    st2, d = s.raw("POST", "/detokenize", json.dumps({"tokens": t.get("tokens", [])}), H)
    check(st == 200 and st2 == 200 and t["count"] == len(t["tokens"]) and d["prompt"] == "The capital of France" and
          "".join(t["token_strs"]) == "The capital of France", f"{label}: /tokenize and /detokenize round-trip", f"{t} {d}")
    st, info = s.raw("GET", "/tokenizer_info")
    check(st == 200 and info.get("vocab_size") == 49152 and "im_start" in (info.get("chat_template") or ""),
          f"{label}: /tokenizer_info names the vocabulary and the chat template")
    st, c = s.raw("POST", "/tokenize", json.dumps({"messages": [{"role": "user", "content": "Hi"}]}), H)
    check(st == 200 and c["count"] > 3, f"{label}: /tokenize applies the chat template to messages")
    # Misuse: each refused naming the field; the server unharmed.
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    for path, body, field in [("/v1/chat/completions", dict(chat, logprobs=True, top_logprobs=21), "top_logprobs"),
                              ("/v1/chat/completions", dict(chat, echo=True), "echo"),
                              ("/v1/completions", {"prompt": "x", "n": 2}, "n"),
                              ("/v1/completions", {"prompt": "x", "logprobs": 2, "stream": True}, "logprobs"),
                              ("/v1/completions", {"prompt": [[1, 2], [1, 99999999]], "echo": True}, "prompt"),
                              ("/detokenize", {"tokens": [1, "a"]}, "tokens")]:
        st, j = s.raw("POST", path, json.dumps(body), H)
        err = j.get("error", {}) if isinstance(j, dict) else {}
        check(st == 400 and err.get("param") == field, f"{label}: {path} {list(body)[-1]} refused naming {field}: {st} "
              f"{err.get('message')}")
    st, _ = s.raw("GET", "/health")
    check(st == 200, f"{label}: the server is unharmed after the refusals")
