"""A batch job of JSONL request lines through `ranklm run` (one process, the test's model), for
the server tests to compare the server's answers with."""
import json
import os
import subprocess


def run_batch(args, name, lines, *extra):
    """Writes `lines` (request objects) to NAME.jsonl under args.tmp, runs them, and returns the
    result records in file order."""
    jl, out = os.path.join(args.tmp, name + ".jsonl"), os.path.join(args.tmp, name + ".out.jsonl")
    with open(jl, "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in lines)
    if os.path.exists(out):
        os.remove(out)
    subprocess.run([args.ranklm, "run", "-m", args.model, "--prompts", jl, "--out", out, "-t", "1", "--progress", "none",
                    *extra], check=True, stderr=subprocess.DEVNULL)
    return [json.loads(line) for line in open(out)]
