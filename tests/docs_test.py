#!/usr/bin/env python3
"""Every command of README.md and docs/CLI.md, run on one host with the tiny fixtures.

The docs' command blocks are synopses: placeholders (M.gguf, DIR, N), optional parts in
brackets, alternatives with |. For each line that starts with a program of the project
(ranklm, ranklm-repack, ranklm-synth, under mpirun or not):
  - every option it names, brackets included, must be one that program's --help lists;
  - its required form (brackets dropped, the first alternative, placeholders filled with
    fixture files prepared here, each in a fresh directory) must run and exit 0; a line whose
    subcommand is a list of alternatives (generate|logits|bench|run) runs each of them.
`ranklm serve` lines start the server, wait for it to be ready and stop it with SIGTERM (exit
0). Lines that cannot run inside the suite are listed in SKIP with the reason. A drifted doc
fails the test: an option renamed or removed, a placeholder form that no longer runs.

Usage: docs_test.py REPO BINDIR FIXTURES
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = {
    "bash tools/test.sh": "it is this test suite",
    "bash tools/run.sh": "the main job on the real model (its own steps are checked here one by one)",
    "bash tools/setup.sh": "the suite has run it",
    "cmake": "the suite has built the tree",
    "ctest": "the suite runs the tests",
    "CC=clang": "the suite builds the fuzz targets",
}
PROGRAMS = ("ranklm", "ranklm-repack", "ranklm-synth")
SUBCOMMANDS = ("run", "serve", "generate", "logits", "inspect", "bench", "plan")


def blocks(path):
    text = open(path, encoding="utf-8").read()
    for lang, body in re.findall(r"```([a-z]*)\n(.*?)```", text, re.S):
        if lang in ("", "sh", "bash", "console"):
            # Continuation lines (indented under the command) join their command.
            lines = []
            for line in body.splitlines():
                if line.startswith("  ") and lines and line.strip().startswith("["):
                    lines[-1] += " " + line.strip()
                elif line.strip():
                    lines.append(line.strip())
            yield from lines


def strip_comment(line):
    out, quote = [], None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] == " "):
            break
        out.append(c)
    return "".join(out).strip()


def drop_brackets(line):
    """The line without its [optional] parts, nested ones included."""
    out, depth = [], 0
    for c in line:
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(c)
    return " ".join("".join(out).split())


def first_alternatives(line):
    """(A | B) and A|B: the first alternative."""
    while "(" in line:
        line = re.sub(r"\(([^()]*)\)", lambda m: m.group(1).split("|")[0].strip(), line)
    line = re.sub(r"\s+\|\s+\S+", "", line)  # "M.gguf | DIR/rank-00000.h5"
    return line


def options_named(line):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?=[\s=,\]/|]|$)", line))


class World:
    """Prepared fixture files, copied into a fresh directory for each command."""

    def __init__(self, bindir, fixtures, tmp):
        self.bin, self.tmp = bindir, tmp
        self.model = os.path.join(fixtures, "models", "tiny-llama-q8_0.gguf")
        self.model2 = os.path.join(fixtures, "models", "tiny-llama-q4_0.gguf")
        base = os.path.join(tmp, "base")
        os.makedirs(base)
        run([self.exe("ranklm"), "plan", "-m", self.model, "-n", "2", "-o", os.path.join(base, "plan.json")])
        run([self.exe("ranklm-repack"), "-m", self.model, "--plan", os.path.join(base, "plan.json"), "-o",
             os.path.join(base, "shards")])
        with open(os.path.join(base, "P.txt"), "w") as f:
            f.write("the river\nthe mountain\n")
        with open(os.path.join(base, "P.jsonl"), "w") as f:
            f.write('{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "the river", "max_tokens": 4}}\n')
        run(mpirun(2) + [self.exe("ranklm"), "plan", "-m", self.model, "-t", "1", "--save-inventory",
                         os.path.join(base, "inv.json")])
        self.base, self.n = base, 0

    def exe(self, name):
        return os.path.join(self.bin, name)

    def fresh(self):
        self.n += 1
        d = os.path.join(self.tmp, f"c{self.n}")
        shutil.copytree(self.base, d)
        return d

    def fill(self, words, d):
        table = {
            "M.gguf": self.model, "M.gguf[,M2.gguf]": self.model, "M2.gguf": self.model2, "TEXT": "hello",
            "N": "2", "S": "1", "T": "1", "P": "0.9", "K": "5", "STR": "zz",
            "shards/": os.path.join(d, "shards"), "DIR": os.path.join(d, "shards"), "shards": os.path.join(d, "shards"),
            "DIR/rank-00000.h5": os.path.join(d, "shards", "rank-00000.h5"),
            "shards/rank-00000.h5": os.path.join(d, "shards", "rank-00000.h5"),
            "P.txt": os.path.join(d, "P.txt"), "P.jsonl": os.path.join(d, "P.jsonl"),
            "FILE": os.path.join(d, "P.txt"), "R.jsonl": os.path.join(d, "R.jsonl"),
            "RESULTS.jsonl": os.path.join(d, "R.jsonl"), "plan.json": os.path.join(d, "plan.json"),
            "inv.json": os.path.join(d, "inv.json"), "OUT.gguf": os.path.join(d, "out.gguf"),
            "NAME": "test-small",
        }
        return [table.get(w, w) for w in words]


def mpirun(n):
    return ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", str(n)]


def run(cmd, timeout=120):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}")
    return p


HELP = {}


def help_text(world, prog, sub):
    key = (prog, sub)
    if key not in HELP:
        cmd = [world.exe(prog)] + ([sub] if sub and sub != "--list" else []) + ["--list" if sub == "--list" else "--help"]
        HELP[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30, errors="replace").stdout
    return HELP[key]


# Arguments a subcommand needs that a synopsis line may leave to "...".
NEEDS = {
    "generate": [("--prompt", ["--prompt", "hello"]), ("-n", ["-n", "4"])],
    "logits": [("--tokens", ["--tokens", "1,5,9"])],
    "run": [("--prompts", ["--prompts", "P.txt"]), ("--out", ["--out", "R.jsonl"]), ("-n", ["-n", "4"])],
    "bench": [("-p", ["-p", "16"]), ("-n", ["-n", "8"]), ("-r", ["-r", "1"])],
}


def check_line(world, raw):
    line = strip_comment(raw)
    words = line.split()
    launcher = []
    if words and words[0] == "mpirun":
        launcher = mpirun(2)
        while words and not words[0].startswith("ranklm"):
            words.pop(0)
    if not words or words[0] not in PROGRAMS:
        return None
    line = " ".join(words)  # from the program on
    prog = words[0]
    subs = [None]
    if prog == "ranklm":
        subs = words[1].split("|")
        if not all(s in SUBCOMMANDS for s in subs):
            return None
    # Every option the line names exists.
    for sub in subs:
        text = help_text(world, prog, sub)
        missing = sorted(o for o in options_named(line) if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", text))
        if missing:
            raise RuntimeError(f"{raw}: {prog} {sub or ''} --help lists no {', '.join(missing)}")
    # Its required form runs.
    form = first_alternatives(drop_brackets(line))
    # A token of alternatives (P.txt|P.jsonl, f16|q8_0): the first; the subcommand list stays.
    toks = form.split()
    form = " ".join(t if i == 1 and prog == "ranklm" else t.split("|")[0] for i, t in enumerate(toks))
    for sub in subs:
        d = world.fresh()
        w = shlex.split(form)[1:]
        w = w if prog != "ranklm" else w[1:]
        w = [x for x in w if x != "..."]
        for opt, add in NEEDS.get(sub, []):
            if opt not in w:
                w += add
        if sub == "run" and launcher and "--shards" not in w:
            continue
        if "--shape" in w:  # a documented shape must exist; the test writes a small one
            i = w.index("--shape") + 1
            if w[i] != "NAME" and not re.search(r"(?m)^" + re.escape(w[i]) + r"\s", help_text(world, prog, "--list")):
                raise RuntimeError(f"{raw}: ranklm-synth --list has no shape {w[i]}")
            w[i] = "test-small"
        cmd = launcher + [world.exe(prog)] + ([sub] if sub else []) + world.fill(w, d)
        if sub == "serve":
            serve(cmd, d, raw)
        else:
            run(cmd)
    return True


def serve(cmd, d, raw):
    ready = os.path.join(d, "ready")
    p = subprocess.Popen(cmd + ["--port", "0", "--ready-file", ready, "-c", "256"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not os.path.exists(ready) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not os.path.exists(ready):
        p.kill()
        raise RuntimeError(f"{raw}: the server did not become ready: {p.stderr.read()[-400:]}")
    _, pid = open(ready).read().split()
    os.kill(int(pid), signal.SIGTERM)
    rc = p.wait(timeout=60)
    if rc != 0:
        raise RuntimeError(f"{raw}: exit {rc} after SIGTERM: {p.stderr.read()[-400:]}")


def main():
    repo, bindir, fixtures = sys.argv[1:4]
    os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    tmp = tempfile.mkdtemp()
    fails = passed = 0
    try:
        world = World(bindir, fixtures, tmp)
        for doc in ("README.md", "docs/CLI.md"):
            for raw in blocks(os.path.join(repo, doc)):
                skip = next((why for k, why in SKIP.items() if raw.startswith(k)), None)
                if skip:
                    print(f"skip {doc}: {raw}  ({skip})")
                    continue
                try:
                    if check_line(world, raw):
                        passed += 1
                        print(f"ok   {doc}: {raw}")
                    else:
                        print(f"---- {doc}: {raw}  (not a command)")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    fails += 1
                    print(f"FAIL {doc}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {fails} failed")
    sys.exit(1 if fails or passed == 0 else 0)


if __name__ == "__main__":
    main()
