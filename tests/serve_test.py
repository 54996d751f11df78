#!/usr/bin/env python3
"""ranklm serve under the official openai client (PyPI), on one process and under mpirun.

    serve_test.py --ranklm BIN --model M.gguf [--shards DIR --np N] --tmp DIR [--full]

Starts servers on free ports (--port 0, the URL read from --ready-file), and checks:
  - the client works as against any OpenAI endpoint: models, chat and completions, streamed and
    not (the same text both ways), usage with cached_tokens, stop strings, max_completion_tokens;
  - a seeded sampled request gives the same text as the same request through `ranklm run`;
  - misuse: bad JSON, fields of the wrong type, n > 1, a prompt longer than the context, a body
    over the limit, unknown routes: OpenAI-shaped errors naming the field, the server unharmed;
  - an API key: 401 without it or with a wrong one;
  - a full queue: 429; a client that leaves: its slot freed at once;
  - a bounded load test (mixed streaming, clients leaving early): every request answered or
    refused with a proper status, nothing hangs, no slot held at the end;
  - SIGTERM: running requests finish (or get 503 after the grace period), new ones are refused,
    exit status 0, and no KV block left in use.
--full runs everything (one process); without it, the layout checks and a smaller load test.
Prints "ok ..." / "FAIL: ..." lines; exit status 1 if any check failed.
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

from batch_job import run_batch
import serve_scoring
import serve_structured
import serve_lmeval

FAILS = []


def check(cond, what, detail=""):
    if cond:
        print(f"ok   {what}", flush=True)
    else:
        FAILS.append(what)
        print(f"FAIL: {what} {detail}", flush=True)


class Server:
    """One ranklm serve job (one process, or mpirun -np N over shards)."""

    def __init__(self, args, name, *extra, env=None, session=False):
        self.args, self.name = args, name
        self.ready = os.path.join(args.tmp, f"{name}.ready")
        self.log = os.path.join(args.tmp, f"{name}.log")
        if os.path.exists(self.ready):
            os.remove(self.ready)
        if args.shards:
            cmd = ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", str(args.np), args.ranklm, "serve",
                   "--shards", args.shards]
        else:
            cmd = [args.ranklm, "serve", "-m", args.model]
        cmd += ["--port", "0", "-t", "1", "--ready-file", self.ready] + list(extra)
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), env=e,
                                     start_new_session=session)
        deadline = time.time() + 120
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name}: the server did not start:\n" + open(self.log).read())
            time.sleep(0.05)
        url, pid = open(self.ready).read().split()
        self.url, self.pid = url, int(pid)
        self.client = openai.OpenAI(base_url=url + "/v1", api_key=(env or {}).get("RANKLM_API_KEY", "none"),
                                    max_retries=0, timeout=120)

    def raw(self, method, path, body=None, headers=None, timeout=60):
        """(status, parsed JSON or text) of one plain HTTP request."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def metrics(self, headers=None):
        _, text = self.raw("GET", "/metrics", headers=headers)
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def wait_idle(self, headers=None, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.metrics(headers)
            if m.get("ranklm_slots_in_use") == 0 and m.get("ranklm_queue_length") == 0:
                return m
            time.sleep(0.05)
        return self.metrics(headers)

    def stop(self, timeout=60):
        """SIGTERM to rank 0 (unless it has ended); returns (exit status, stderr)."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "hung"
        return rc, open(self.log).read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def chat_text(stream):
    text, finish, usage = "", None, None
    for ch in stream:
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    return text, finish, usage


def completion_text(stream):
    text, finish = "", None
    for ch in stream:
        for c in ch.choices:
            text += c.text or ""
            finish = c.finish_reason or finish
    return text, finish


MSGS = [{"role": "user", "content": "Name three colours of the rainbow."}]


def api_checks(s, label):
    models = s.client.models.list().data
    check(len(models) == 1 and models[0].id, f"{label}: /v1/models lists the model ({models[0].id if models else None})")
    model = models[0].id
    check(s.client.models.retrieve(model).id == model, f"{label}: /v1/models/{{id}} gives the model")
    r = s.client.chat.completions.create(model=model, messages=MSGS, max_tokens=24, temperature=0)
    c = r.choices[0]
    check(r.object == "chat.completion" and c.message.role == "assistant" and c.message.content.strip()
          and c.finish_reason in ("stop", "length"), f"{label}: chat completion: {c.message.content!r}")
    u = r.usage
    check(u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
          and u.prompt_tokens_details.cached_tokens >= 0, f"{label}: chat usage {u.prompt_tokens}+{u.completion_tokens}")
    text, finish, usage = chat_text(s.client.chat.completions.create(
        model=model, messages=MSGS, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}))
    check(text == c.message.content and finish == c.finish_reason and usage and usage.completion_tokens == u.completion_tokens,
          f"{label}: streamed chat gives the same text, finish reason and usage", f"{text!r} {finish} {usage}")
    r = s.client.completions.create(model=model, prompt="The capital of France is", max_tokens=12, temperature=0)
    whole = r.choices[0].text
    text, finish = completion_text(s.client.completions.create(model=model, prompt="The capital of France is", max_tokens=12,
                                                               temperature=0, stream=True))
    check(r.object == "text_completion" and "Paris" in whole and text == whole and finish == r.choices[0].finish_reason,
          f"{label}: completion (streamed and not): {whole!r}")
    r = s.client.completions.create(model=model, prompt="The capital of France is", max_tokens=12, temperature=0, stop=["."])
    check("." not in r.choices[0].text and r.choices[0].finish_reason == "stop" and r.choices[0].text.strip(),
          f"{label}: a stop string ends the text before it: {r.choices[0].text!r}")
    r = s.client.chat.completions.create(model=model, messages=MSGS, max_completion_tokens=3, temperature=0)
    check(r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length", f"{label}: max_completion_tokens 3")
    # The same prompt again shares the KV of the first one's prefix.
    long_msgs = [{"role": "system", "content": "You answer in one short sentence. " * 6}] + MSGS
    s.client.chat.completions.create(model=model, messages=long_msgs, max_tokens=4, temperature=0)
    r = s.client.chat.completions.create(model=model, messages=long_msgs, max_tokens=4, temperature=0)
    check(r.usage.prompt_tokens_details.cached_tokens >= 16, f"{label}: a repeated prompt reports cached_tokens "
          f"({r.usage.prompt_tokens_details.cached_tokens} of {r.usage.prompt_tokens})")
    return model


def seeded_checks(s, label, args, model):
    """A sampled request with a seed: the same text twice, and the same as through ranklm run."""
    body_chat = {"messages": MSGS, "max_tokens": 24, "temperature": 0.9, "top_p": 0.95, "seed": 1234}
    body_cmpl = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.0, "seed": 77}
    a = s.client.chat.completions.create(model=model, **body_chat).choices[0].message.content
    b, _, _ = chat_text(s.client.chat.completions.create(model=model, stream=True, **body_chat))
    c = s.client.completions.create(model=model, **body_cmpl).choices[0].text
    check(a == b, f"{label}: a seeded sampled chat gives the same text twice (streamed and not)", f"{a!r} {b!r}")
    records = run_batch(args, "seeded", [{"custom_id": "chat", "url": "/v1/chat/completions", "body": body_chat},
                                         {"custom_id": "cmpl", "url": "/v1/completions", "body": body_cmpl}])
    got = {}
    for rec in records:
        ch = rec["response"]["body"]["choices"][0]
        got[rec["custom_id"]] = ch["message"]["content"] if "message" in ch else ch["text"]
    check(got.get("chat") == a and got.get("cmpl") == c, f"{label}: the same text as ranklm run gives for the same requests",
          f"{got} vs {a!r} {c!r}")


def field_checks(s, label, model, args):
    """Fields a client asks for are honoured or refused, never ignored; ids are unique; created is now."""
    h = {"Content-Type": "application/json"}
    chat = {"messages": MSGS, "max_tokens": 4}
    for field, value in [
                         ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "required"),
                         ("made_up_field", 1)]:
        st, j = s.raw("POST", "/v1/chat/completions", json.dumps(dict(chat, **{field: value})), h)
        err = j.get("error", {}) if isinstance(j, dict) else {}
        check(st == 400 and err.get("param") == field, f"{label}: {field}={value!r} is refused naming it: {st} {err.get('message')}")
    st, j = s.raw("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 2, "logprobs": 21}), h)
    check(st == 400 and j["error"].get("param") == "logprobs", f"{label}: completions logprobs=21 is refused: {st}")
    st, j = s.raw("POST", "/v1/chat/completions", json.dumps(dict(chat, logprobs=False, response_format={"type": "text"},
                                                                   user="u1", frequency_penalty=0.5)), h)
    check(st == 200, f"{label}: defaults of unimplemented fields (logprobs false, response_format text), user and a "
          f"penalty are accepted: {st} {j}")
    # logit_bias: -100 on the greedy next token (ranklm logits names it) makes the server answer
    # the runner-up, +100 on the 5th-best token makes it answer that one.
    ids = [504, 3458, 282, 1030]
    probe = json.loads(subprocess.run([args.ranklm, "logits", "-m", args.model, "--tokens", ",".join(map(str, ids)),
                                       "--greedy", "1"], check=True, capture_output=True, text=True).stdout)
    top5 = [t[0] for t in probe["greedy_top5"][0]]  # [[id, logit], ...] of the first generated position

    def next_text(bias):
        r = s.client.completions.create(model=model, prompt=ids, max_tokens=1, temperature=0, logit_bias=bias)
        return r.choices[0].text
    plain = next_text({})
    banned = next_text({str(top5[0]): -100})
    fifth = next_text({str(top5[4]): 100})
    check(plain != banned and banned != fifth and plain != fifth,
          f"{label}: logit_bias -100 bans the greedy token and +100 picks the 5th best", f"{plain!r} {banned!r} {fifth!r} {top5}")
    # A strong frequency penalty changes a long greedy answer (repetitions get demoted).
    long = dict(prompt="one two one two one two one two", max_tokens=24, temperature=0)
    a = s.client.completions.create(model=model, **long).choices[0].text
    b = s.client.completions.create(model=model, frequency_penalty=2.0, **long).choices[0].text
    check(a != b, f"{label}: frequency_penalty 2 changes the greedy text", f"{a!r} vs {b!r}")
    # Ids: unique per request; created: the request's time, not the server's start.
    r1 = s.client.chat.completions.create(model=model, messages=MSGS, max_tokens=2, temperature=0)
    time.sleep(1.1)
    r2 = s.client.chat.completions.create(model=model, messages=MSGS, max_tokens=2, temperature=0)
    check(r1.id != r2.id and r1.id.startswith("chatcmpl-") and r2.created > r1.created,
          f"{label}: two requests get two ids and their own created times", f"{r1.id} {r2.id} {r1.created} {r2.created}")
    return r1.id


def misuse_checks(s, label):
    h = {"Content-Type": "application/json"}
    cases = [
        ("bad JSON", "/v1/chat/completions", '{"messages": [', 400, None),
        ("temperature of the wrong type", "/v1/completions", '{"prompt": "x", "temperature": "hot"}', 400, "temperature"),
        ("messages missing", "/v1/chat/completions", '{"model": "m"}', 400, "messages"),
        ("a message without content", "/v1/chat/completions", '{"messages": [{"role": "user"}]}', 400, "messages[0].content"),
        ("n = 2", "/v1/completions", '{"prompt": "x", "n": 2}', 400, "n"),
        ("stream of the wrong type", "/v1/completions", '{"prompt": "x", "stream": "yes"}', 400, "stream"),
        ("max_tokens 0 on chat", "/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
        ("a body that is not an object", "/v1/completions", '[1, 2]', 400, None),
        ("a prompt longer than the context", "/v1/completions", json.dumps({"prompt": "word " * 1000}), 400, "prompt"),
        ("nested JSON beyond the depth bound", "/v1/completions", '{"prompt": "x", "user": ' + "[" * 200 + "]" * 200 + "}", 400, None),
    ]
    for what, path, body, status, param in cases:
        st, j = s.raw("POST", path, body, h)
        err = j.get("error", {}) if isinstance(j, dict) else {}
        check(st == status and err.get("message") and err.get("type") == "invalid_request_error" and
              (param is None or err.get("param") == param), f"{label}: {what}: {st} {err.get('param')}: {err.get('message')}")
    st, j = s.raw("POST", "/v1/completions", json.dumps({"prompt": "word " * 1000}), h)
    check(j["error"].get("code") == "context_length_exceeded", f"{label}: the long prompt's code is context_length_exceeded")
    st, j = s.raw("POST", "/v1/completions", json.dumps({"prompt": "x" * 20000}), h)
    check(st == 413 and "error" in j, f"{label}: a body over --max-body-bytes gets 413")
    st, j = s.raw("GET", "/v1/nothing")
    check(st == 404 and "error" in j, f"{label}: an unknown route gets 404 with an error body")
    try:
        s.client.chat.completions.create(model="m", messages=MSGS, temperature=5)
        check(False, f"{label}: the client raises BadRequestError for temperature 5")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "temperature" in str(e), f"{label}: the client raises BadRequestError for temperature 5")
    st, j = s.raw("GET", "/health")
    r = s.client.completions.create(model="m", prompt="The capital of France is", max_tokens=4, temperature=0)
    check(st == 200 and j == {"status": "ok"} and "Paris" in r.choices[0].text, f"{label}: after all that the server is unharmed")


def auth_checks(args):
    s = Server(args, "auth", env={"RANKLM_API_KEY": "sk-test-123"})
    try:
        r = s.client.completions.create(model="m", prompt="Hi", max_tokens=2)
        check(r.usage.completion_tokens >= 1, "api key: the client with the key is served")
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-wrong", max_retries=0)
        try:
            bad.models.list()
            check(False, "api key: a wrong key gets 401")
        except openai.AuthenticationError as e:
            check(e.status_code == 401, "api key: a wrong key gets 401 (AuthenticationError)")
        st, _ = s.raw("POST", "/v1/completions", '{"prompt": "x"}')
        check(st == 401, "api key: no Authorization header gets 401")
        st, _ = s.raw("GET", "/metrics")
        st2, _ = s.raw("GET", "/health")
        check(st == 401 and st2 == 200, "api key: /metrics needs it, /health does not")
    finally:
        rc, _ = s.stop()
        check(rc == 0, f"api key server: exit status {rc} after SIGTERM")


def raw_leave(s, path, body, after_s):
    """Sends a request on a plain socket and closes it after after_s seconds without reading."""
    host, port = s.url.split("//")[1].split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=10) as so:
        so.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                   .encode() + data)
        time.sleep(after_s)


def probe_checks(args):
    """What a hostile or demanding client tried: long prompts, cut characters."""
    s = Server(args, "probe", "--max-body-bytes", str(4 << 20), "--parallel", "2")
    try:
        # A 1 MB prompt is tokenized in linear time and without a lock: a small request sent
        # while it is being tokenized is answered first, and the long one gets its 400 quickly.
        words = ["river", "mountain", "the", "and", "über", "日本語", "😀", "data"]
        rnd = random.Random(3)
        big = " ".join(rnd.choice(words) for _ in range(150000))
        while len(big.encode()) < (1 << 20):
            big += " river"
        done = {}

        def long_one():
            t0 = time.time()
            st, j = s.raw("POST", "/v1/completions", json.dumps({"prompt": big, "max_tokens": 1}),
                          {"Content-Type": "application/json"})
            done["big"] = (time.time(), time.time() - t0, st, j)

        th = threading.Thread(target=long_one)
        th.start()
        time.sleep(0.05)
        r = s.client.completions.create(model="m", prompt="Hi", max_tokens=2, temperature=0)
        done["small"] = time.time()
        th.join(60)
        t_big, took, st, j = done["big"]
        check(st == 400 and j["error"]["code"] == "context_length_exceeded" and took < 5.0,
              f"a 1 MB prompt is tokenized and refused with its 400 in {took:.2f} s (bound 5 s; 30 s at 512 KB before)")
        check(r.usage.completion_tokens >= 1 and done["small"] <= t_big,
              "a small request sent meanwhile is answered before it (no lock held by the long one)")
        # A length-limited answer never ends in half a character (no U+FFFD), whole or streamed.
        prompt = "Emoji: 😀🎉🚀🌍😀🎉🚀🌍😀🎉🚀🌍 and Japanese: 日本語の文章です。日本語の文章です。"
        bad = []
        for n in range(1, 9):
            w = s.client.completions.create(model="m", prompt=prompt, max_tokens=n, temperature=0).choices[0].text
            st_text, _ = completion_text(s.client.completions.create(model="m", prompt=prompt, max_tokens=n, temperature=0,
                                                                     stream=True))
            if "\ufffd" in w or "\ufffd" in st_text:
                bad.append((n, w, st_text))
        check(not bad, f"answers cut by max_tokens hold back half characters (no U+FFFD), whole and streamed: {bad[:2]}")
        st, j = s.raw("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 99999999}),
                      {"Content-Type": "application/json"})
        check(st == 400 and "outside 0..16777216" in j["error"]["message"],
              f"max_tokens above the bound names the bound: {j['error']['message'] if isinstance(j, dict) else j}")
    finally:
        s.stop()


def raw_http(s, data, timeout=30):
    """Sends raw bytes on a new connection; returns (status, body text) of the answer."""
    host, port = s.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as so:
        so.sendall(data)
        got = b""
        while True:
            try:
                piece = so.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not piece:
                break
            got += piece
            if b"\r\n\r\n" in got:
                head, _, body = got.partition(b"\r\n\r\n")
                m = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if m and len(body) >= int(m[0].split(b":")[1]):
                    break
    line = got.split(b"\r\n", 1)[0].decode(errors="replace")
    status = int(line.split()[1]) if line.startswith("HTTP/1.1 ") else 0
    return status, got.partition(b"\r\n\r\n")[2].decode(errors="replace")


def transport_checks(args):
    """Slow and hostile connections: bounded, and real clients keep being served."""
    s = Server(args, "transport", "--max-body-bytes", "65536", "--parallel", "4", "--request-timeout", "6")
    try:
        host, port = s.url.split("//")[1].split(":")
        # A chunked body over --max-body-bytes: 413, the rest never read.
        chunk = b"x" * 16384
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
        st, text = raw_http(s, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n" + body)
        check(st == 413 and "max-body-bytes" in text, f"a chunked body over --max-body-bytes gets 413 ({st} {text[:80]})")
        # 100,000 header lines: 431 once the head passes its bound.
        hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(100000))
        st, text = raw_http(s, b"GET /health HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n")
        check(st == 431, f"100000 header lines get 431 ({st} {text[:80]})")
        # curl -d: form-urlencoded Content-Type, a JSON body over 8 KB (whitespace, so the prompt
        # stays short): read as JSON.
        big = '{"prompt": "the river", ' + " " * 12000 + '"max_tokens": 1}'

        p = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"{s.url}/v1/completions", "-d", big],
                           capture_output=True, text=True, timeout=60)
        code = p.stdout.rsplit("\n", 1)[-1]
        check(code == "200" and '"text_completion"' in p.stdout, f"curl -d with a {len(big)}-byte JSON body is served ({code})")
        # 200 slow connections (a header line every 2 s) while 20 normal requests all succeed.
        slow = []
        for i in range(200):
            so = socket.create_connection((host, int(port)), timeout=10)
            so.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            slow.append(so)
        stop = threading.Event()

        def drip():
            while not stop.is_set():
                for so in slow:
                    try:
                        so.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass
                stop.wait(2)

        th = threading.Thread(target=drip)
        th.start()
        t0 = time.time()
        with cf.ThreadPoolExecutor(10) as ex:
            codes = list(ex.map(lambda i: s.raw("POST", "/v1/completions", json.dumps({"prompt": f"Hi {i}", "max_tokens": 4}),
                                                {"Content-Type": "application/json"}, timeout=30)[0], range(20)))
        took = time.time() - t0
        time.sleep(7)  # past --request-timeout: the slow ones are closed
        closed = 0
        for so in slow:
            try:
                so.settimeout(0.2)
                closed += so.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except socket.timeout:
                pass
        stop.set()
        th.join()
        for so in slow:
            so.close()
        check(codes == [200] * 20, f"200 slow connections: 20 normal requests all answered 200 in {took:.1f} s ({sorted(set(codes))})")
        check(closed >= 190, f"the slow connections are closed once their request is past --request-timeout ({closed} of 200)")
        # A streaming client that half-closes its socket after the request still gets the whole
        # stream (an SSE comment tells a half-close from a close).
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 24, "stream": True, "ignore_eos": True}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as so:
            so.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            so.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                piece = so.recv(65536)
                if not piece:
                    break
                got += piece
        text = got.decode(errors="replace")
        check("data: [DONE]" in text and text.count('"text"') >= 20,
              f"a streaming client that half-closes its socket gets the whole stream ({text.count(chr(34) + 'text' + chr(34))} chunks)")
        st, _ = s.raw("GET", "/health")
        check(st == 200, "after all that /health answers 200")
    finally:
        s.stop()
    # Over --max-connections the connection waiting longest for its request makes room, so idle
    # connections cannot lock a new client out.
    s = Server(args, "maxconn", "--max-connections", "8")
    try:
        host, port = s.url.split("//")[1].split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(12)]
        time.sleep(0.3)
        st, j = s.raw("POST", "/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 2}),
                      {"Content-Type": "application/json"}, timeout=20)
        first_closed = False
        try:
            idle[0].settimeout(1)
            first_closed = idle[0].recv(1) == b""
        except ConnectionResetError:
            first_closed = True
        except socket.timeout:
            first_closed = False
        for so in idle:
            so.close()
        check(st == 200 and first_closed, f"12 idle connections over --max-connections 8: the oldest are closed and a "
              f"new client is served ({st})")
    finally:
        s.stop()


def limits_checks(args):
    s = Server(args, "limits", "--parallel", "1", "--max-queue", "1", "--shutdown-grace", "150")  # (slow sanitizer builds)
    try:
        port = s.url.rsplit(":", 1)[1]
        p = subprocess.run([args.ranklm, "serve", "-m", args.model, "--port", port, "-t", "1"], capture_output=True,
                           text=True, timeout=60)
        check(p.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in p.stderr,
              f"a second server on a port in use is refused (exit {p.returncode}): {p.stderr.strip()[-160:]}")
        def long_one(i):
            try:
                s.client.completions.create(model="m", prompt=f"Story {i}:", max_tokens=150, temperature=0.8, seed=i,
                                            extra_body={"ignore_eos": True})
                return 200
            except openai.RateLimitError as e:
                return e.status_code
        with cf.ThreadPoolExecutor(4) as ex:
            codes = sorted(ex.map(long_one, range(4)))
        check(429 in codes and 200 in codes and set(codes) <= {200, 429}, f"queue full: 429 beyond --max-queue (codes {codes})")
        m = s.wait_idle()
        check(m.get("ranklm_slots_in_use") == 0, "queue full: every slot free afterwards")
        # A client that leaves: its slot is freed at once, streaming or not.
        before = s.metrics().get("ranklm_requests_cancelled_total", 0)
        st = s.client.completions.create(model="m", prompt="Once upon a time", max_tokens=3000, stream=True,
                                         extra_body={"ignore_eos": True})
        next(iter(st))
        st.close()
        t0 = time.time()
        m = s.wait_idle(timeout=5)
        freed = time.time() - t0
        check(m.get("ranklm_slots_in_use") == 0 and m["ranklm_requests_cancelled_total"] == before + 1,
              f"a streaming client that leaves frees its slot ({freed:.2f} s)")
        raw_leave(s, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 3000, "ignore_eos": True}, 0.5)
        t0 = time.time()
        m = s.wait_idle(timeout=5)
        check(m.get("ranklm_slots_in_use") == 0 and m["ranklm_requests_cancelled_total"] == before + 2,
              f"a non-streaming client that leaves frees its slot ({time.time() - t0:.2f} s)")
        # One that leaves while it waits in the queue (the only slot busy) leaves the queue at once.
        with cf.ThreadPoolExecutor(1) as ex:
            body = '{"prompt": "Once", "max_tokens": 600, "ignore_eos": true}'  # still running 1 s later
            busy = ex.submit(lambda: s.raw("POST", "/v1/completions", body, timeout=180))
            time.sleep(0.3)
            raw_leave(s, "/v1/completions", {"prompt": "Queued", "max_tokens": 5}, 0.3)
            time.sleep(0.1)
            m = s.metrics()
            check(m["ranklm_queue_length"] == 0 and m["ranklm_slots_in_use"] == 1 and
                  m["ranklm_requests_cancelled_total"] == before + 3, "a queued client that leaves leaves the queue at once",
                  f"queue {m['ranklm_queue_length']}, slots {m['ranklm_slots_in_use']}, cancelled "
                  f"{m['ranklm_requests_cancelled_total']} (before {before})")
            raw_leave(s, "/v1/completions", {"prompt": "x", "max_tokens": 1}, 0)  # (not waited for)
            os.kill(s.pid, signal.SIGTERM)
            st, _ = busy.result(timeout=180)
            check(st == 200, f"... while the running one finishes after SIGTERM ({st})")
    finally:
        rc, err = s.stop()
        check(rc == 0 and "0 KV blocks in use" in err, f"limits server: exit status {rc}, no KV block left")


def load_test(s, label, n, conc, seed):
    """n requests, conc at a time; some streamed, some leaving early. Every one accounted for."""
    rnd = random.Random(seed)
    plan = []
    for i in range(n):
        kind = rnd.choices(["whole", "stream", "leave-stream", "leave-whole", "chat"], [35, 30, 8, 7, 20])[0]
        plan.append((i, kind, rnd.randint(2, 20)))

    def one(p):
        i, kind, mt = p
        try:
            if kind == "whole":
                r = s.client.completions.create(model="m", prompt=f"Fact {i}:", max_tokens=mt, seed=i)
                return "200" if r.usage.completion_tokens >= 1 else "empty"
            if kind == "chat":
                r = s.client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"Say {i}"}],
                                                     max_tokens=mt, seed=i)
                return "200" if r.choices[0].finish_reason in ("stop", "length") else "bad"
            if kind == "stream":
                text, finish = completion_text(s.client.completions.create(model="m", prompt=f"Item {i}:", max_tokens=mt,
                                                                           stream=True, seed=i))
                return "200" if finish in ("stop", "length") else "no finish"
            if kind == "leave-stream":
                st = s.client.completions.create(model="m", prompt=f"Tale {i}:", max_tokens=400, stream=True)
                next(iter(st))
                st.close()
                return "left"
            raw_leave(s, "/v1/completions", {"prompt": f"Tale {i}:", "max_tokens": 400}, 0.1)
            return "left"
        except openai.RateLimitError:
            return "429"
        except StopIteration:
            return "left"
        except Exception as e:  # noqa: BLE001 (anything else is a failure of the check)
            return f"error {type(e).__name__}: {e}"

    t0 = time.time()
    with cf.ThreadPoolExecutor(conc) as ex:
        futs = [ex.submit(one, p) for p in plan]
        done, pending = cf.wait(futs, timeout=600)
    outcomes = {}
    for f in done:
        outcomes[f.result()] = outcomes.get(f.result(), 0) + 1
    bad = {k: v for k, v in outcomes.items() if k not in ("200", "429", "left")}
    check(outcomes.get("429", 0) < n // 5, f"{label}: load test: most requests are served (the queue holds them all)")
    check(not pending and not bad and sum(outcomes.values()) == n,
          f"{label}: load test, {n} requests {conc} at a time in {time.time() - t0:.1f} s: {outcomes}", f"{bad} pending {len(pending)}")
    m = s.wait_idle(timeout=10)
    check(m.get("ranklm_slots_in_use") == 0 and m.get("ranklm_queue_length") == 0,
          f"{label}: after the load test no slot is held and nothing is queued (KV blocks kept for prefixes: "
          f"{m.get('ranklm_kv_blocks_in_use'):.0f} of {m.get('ranklm_kv_blocks'):.0f})")
    served = sum(v for k, v in m.items() if k.startswith("ranklm_requests_total"))
    check(served >= n, f"{label}: /metrics counts every request ({served:.0f})")


def sigterm_checks(args, label):
    s = Server(args, "term")
    box = {}

    def run():
        try:
            r = s.client.completions.create(model="m", prompt="Once upon a time", max_tokens=60, temperature=0.8, seed=3,
                                            extra_body={"ignore_eos": True})
            box["r"] = r.usage.completion_tokens
        except Exception as e:  # noqa: BLE001
            box["r"] = repr(e)
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(run)
        time.sleep(0.3)
        os.kill(s.pid, signal.SIGTERM)
        time.sleep(0.05)
        try:
            st, _ = s.raw("POST", "/v1/completions", '{"prompt": "x", "max_tokens": 2}', timeout=10)
        except (urllib.error.URLError, ConnectionError, OSError):
            st = "refused"
        fut.result(timeout=120)
    rc = s.proc.wait(timeout=60)
    err = open(s.log).read()
    check(box.get("r") == 60, f"{label}: SIGTERM lets the running request finish ({box.get('r')})")
    check(st in (503, "refused"), f"{label}: a request after SIGTERM is refused ({st})")
    check(rc == 0 and "0 KV blocks in use" in err, f"{label}: exit status {rc} after SIGTERM, no KV block left", err[-300:])
    # A request still running when the grace period ends gets 503.
    s = Server(args, "grace", "--shutdown-grace", "0.5")
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(lambda: s.raw("POST", "/v1/completions", '{"prompt": "Once", "max_tokens": 3000, "ignore_eos": true}',
                                      timeout=60))
        time.sleep(0.5)
        os.kill(s.pid, signal.SIGTERM)
        st, j = fut.result(timeout=60)
    rc = s.proc.wait(timeout=60)
    check(st == 503 and "grace" in j["error"]["message"] and rc == 0,
          f"{label}: past --shutdown-grace a running request gets 503 and the server exits 0 ({st}, {rc})")


def ctrl_c_checks(args, label):
    """Ctrl-C at the terminal (SIGINT to mpirun's whole process group): mpirun kills the job 1 s
    later, so rank 0 ends running requests at once, each with an error (a stream with its error
    event), and says so on stderr."""
    s = Server(args, "ctrlc", session=True)
    box = {}

    def streamed():
        host, port = s.url.split("//")[1].split(":")
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 3000, "stream": True, "ignore_eos": True}).encode()
        with socket.create_connection((host, int(port)), timeout=30) as so:
            so.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            got = b""
            try:
                while True:
                    piece = so.recv(65536)
                    if not piece:
                        break
                    got += piece
            except OSError:
                pass
            box["stream"] = got.decode(errors="replace")

    th = threading.Thread(target=streamed)
    th.start()
    time.sleep(1.5)
    os.killpg(os.getpgid(s.proc.pid), signal.SIGINT)
    th.join(30)
    try:
        s.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        s.kill()
    err = open(s.log).read()
    check('data: {"error"' in box.get("stream", "") and "odls_base_sigkill_timeout" in box.get("stream", ""),
          f"{label}: Ctrl-C to mpirun ends a running stream with an error event naming why", box.get("stream", "")[-300:])
    check("stop signal: no new requests are taken" in err, f"{label}: ... and rank 0 says it is stopping", err[-300:])


def rank_pid(ready, rank):
    """The pid of the ranklm process of MPI rank `rank` started with --ready-file `ready`."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if ready.encode() in cmd and b"serve" in cmd and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(d)
    return None


def rank_death_checks(args, label):
    """A rank killed while requests run: they get 503 (an error event when streamed), and the
    launcher ends the job naming the rank."""
    s = Server(args, "death")
    box = {}

    def whole():
        box["whole"] = s.raw("POST", "/v1/completions", '{"prompt": "Once", "max_tokens": 3000, "ignore_eos": true}', timeout=60)

    def streamed():
        body = '{"prompt": "Once", "max_tokens": 3000, "stream": true, "ignore_eos": true}'
        st, text = s.raw("POST", "/v1/completions", body, timeout=60)
        box["stream"] = text

    with cf.ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(whole), ex.submit(streamed)]
        time.sleep(0.8)
        victim = rank_pid(s.ready, args.np - 1)
        os.kill(victim, signal.SIGKILL)
        for f in futs:
            f.result(timeout=90)
    rc = s.proc.wait(timeout=90)
    err = open(s.log).read()
    st, j = box["whole"]
    check(st == 503 and "error" in j, f"{label}: a rank killed mid-request: the request gets 503 ({st}: {str(j)[:120]})")
    check('data: {"error"' in box["stream"], f"{label}: ... and a streamed one ends with an error event")
    check(rc != 0 and f"rank {args.np - 1}" in err, f"{label}: ... and the job ends ({rc}) naming the rank",
          err[-400:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranklm", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--shards")
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    label = f"mpirun -np {args.np}" if args.shards else "one process"
    s = Server(args, "main", "--ctx-size", "512", "--max-body-bytes", "16384", "--parallel", "8", "--max-queue", "32")
    try:
        model = api_checks(s, label)
        seeded_checks(s, label, args, model)
        first_id = field_checks(s, label, model, args)
        serve_scoring.run(s, label, args, model, check)
        serve_structured.run(s, label, args, model, check)
        serve_lmeval.run(s, label, args, model, check)
        misuse_checks(s, label)
        load_test(s, label, 300 if args.full else 80, 32 if args.full else 16, 5)
        rc, err = s.stop()
        check(rc == 0 and "0 KV blocks in use" in err, f"{label}: exit status {rc} after SIGTERM, no KV block left",
              err[-300:])
        # A restarted server does not repeat the ids of the last one.
        s = Server(args, "restart", "--ctx-size", "512")
        r = s.client.chat.completions.create(model=model, messages=MSGS, max_tokens=2, temperature=0)
        check(r.id != first_id, f"{label}: a restarted server's first id differs from the last one's ({r.id} {first_id})")
        s.stop()
    finally:
        s.kill()
    if args.full:
        auth_checks(args)
        limits_checks(args)
        probe_checks(args)
        transport_checks(args)
    sigterm_checks(args, label)
    if args.shards:
        rank_death_checks(args, label)
        ctrl_c_checks(args, label)
    print(f"{len(FAILS)} failed" if FAILS else "all passed")
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
