"""lm-evaluation-harness against ranklm serve (called by serve_test.py on every layout): its
local-completions model with tokenizer_backend=remote (the server's /tokenize, /detokenize and
/tokenizer_info), on two local tasks (tests/lmeval: a multiple-choice task scored by
log-likelihoods, and a generate-until task), nothing downloaded. Checks:
  - both tasks run to completion;
  - every log-likelihood equals the sum of the continuation tokens' log_softmax from
    `ranklm logits` for the same token ids (lm-eval's own split of context and continuation), to
    1e-4, and is_greedy agrees;
  - every generate-until answer equals `ranklm run`'s for the same prompt and settings.
"""
import glob
import json
import math
import os
import shutil
import subprocess
import sys

from batch_job import run_batch

HERE = os.path.dirname(os.path.abspath(__file__))


def tokenize(s, text):
    st, j = s.raw("POST", "/tokenize", json.dumps({"prompt": text, "add_special_tokens": False}),
                  {"Content-Type": "application/json"})
    return j["tokens"]


def encode_pair(s, context, continuation):
    """lm-eval's split: trailing spaces of the context move to the continuation; the whole is
    encoded and the context's tokens are cut off its front."""
    n = len(context) - len(context.rstrip())
    if n:
        continuation, context = context[-n:] + continuation, context[:-n]
    whole, ctx = tokenize(s, context + continuation), tokenize(s, context)
    return ctx, whole[len(ctx):]


def reference(args, ctx, cont):
    ids = ctx + cont
    out = subprocess.run([args.ranklm, "logits", "-m", args.model, "--tokens", ",".join(map(str, ids)), "--greedy", "0"],
                         check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)["logits"]
    total, greedy = 0.0, True
    for i, tok in enumerate(cont):
        row = rows[len(ctx) + i - 1]
        m = max(row)
        lz = m + math.log(sum(math.exp(x - m) for x in row))
        total += row[tok] - lz
        greedy &= max(range(len(row)), key=lambda t: (row[t], -t)) == tok
    return total, greedy


def samples(out_dir, task):
    files = glob.glob(os.path.join(out_dir, "**", f"samples_{task}_*.jsonl"), recursive=True)
    return [json.loads(line) for f in files for line in open(f)]


def run(s, label, args, model, check):
    tasks = os.path.join(args.tmp, "lmeval_tasks")
    shutil.rmtree(tasks, ignore_errors=True)
    os.makedirs(tasks)
    for name, data in (("ranklm_mc.yaml", "mc.jsonl"), ("ranklm_gen.yaml", "gen.jsonl")):
        text = open(os.path.join(HERE, "lmeval", name)).read()
        text = text.replace("MC_JSONL", os.path.join(HERE, "lmeval", "mc.jsonl"))
        text = text.replace("GEN_JSONL", os.path.join(HERE, "lmeval", "gen.jsonl"))
        open(os.path.join(tasks, name), "w").write(text)
    out_dir = os.path.join(args.tmp, "lmeval_out")
    shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_HOME=os.path.join(args.tmp, "hf_home"))
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
           f"model={model},base_url={s.url}/v1/completions,tokenizer_backend=remote,num_concurrent=4,max_retries=1,"
           f"tokenized_requests=True", "--tasks", "ranklm_mc,ranklm_gen", "--include_path", tasks, "--log_samples",
           "--output_path", out_dir]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    check(p.returncode == 0, f"{label}: lm-evaluation-harness runs the local tasks against ranklm serve", p.stderr[-1500:])
    if p.returncode != 0:
        return
    mc = samples(out_dir, "ranklm_mc")
    worst, greedy_ok, n = 0.0, True, 0
    for doc in mc:
        for arg, resp in zip(doc["arguments"].values(), doc["resps"]):
            ctx, cont = encode_pair(s, arg["arg_0"], arg["arg_1"])
            ll, greedy = reference(args, ctx, cont)
            got_ll, got_greedy = resp[0]  # written as strings in the samples file
            worst = max(worst, abs(float(got_ll) - ll))
            greedy_ok &= str(got_greedy) == str(greedy)
            n += 1
    check(n >= 20 and worst < 1e-4 and greedy_ok, f"{label}: lm-eval's {n} log-likelihoods equal ranklm logits' "
          f"(max diff {worst:.1e}), is_greedy too")
    gen = samples(out_dir, "ranklm_gen")
    lines = []
    for i, doc in enumerate(gen):
        a = list(doc["arguments"].values())[0]
        # The prompt as lm-eval sends it: the context's tokens (no special tokens added).
        body = {"prompt": tokenize(s, a["arg_0"]), "max_tokens": 16, "temperature": 0, "stop": ["\n", "<|im_end|>"]}
        lines.append({"custom_id": f"g{i}", "url": "/v1/completions", "body": body})
    mine = {}
    for r in run_batch(args, "lmeval_gen", lines):
        mine[r["custom_id"]] = r["response"]["body"]["choices"][0]["text"]
    same = [doc["resps"][0][0] == mine.get(f"g{i}") for i, doc in enumerate(gen)]
    check(len(gen) == 4 and all(same), f"{label}: lm-eval's generate-until answers equal ranklm run's",
          [(doc["resps"][0][0], mine.get(f"g{i}")) for i, doc in enumerate(gen)][:4])
