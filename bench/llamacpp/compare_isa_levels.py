#!/usr/bin/env python3
"""How far the fixture logits move with float summation order alone: ranklm's own kernels at each
instruction-set level (RANKLM_ISA=avx512, avx2, scalar: the same arithmetic, the same activation
quantization, different summation orders) against each other and against the stored references.
Worst per-position normalized RMS error over the prompt, as the parity test measures it.

    python3 bench/llamacpp/compare_isa_levels.py [NAME ...]   # default: the new-arch quantized files
"""
import json, os, subprocess, sys
import numpy as np

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
names = sys.argv[1:] or ["tiny-gemma3-q8_0", "tiny-gemma3-q4_k_m", "tiny-gemma3-f32", "tiny-qwen3-q8_0", "tiny-qwen3-q4_k_m"]
for name in names:
    sub = "new-arch" if ("gemma3" in name or "qwen3" in name) else "models"
    p = os.path.join(root, "..", "shared", "fixtures", sub, name + ".gguf")
    ref = json.load(open(p.replace(".gguf", ".ref.json")))
    toks = ",".join(map(str, ref["prompt"]))
    outs = {}
    for isa in ["avx512", "avx2", "scalar"]:
        env = dict(os.environ, RANKLM_ISA=isa)
        run = subprocess.run([os.path.join(root, "build", "bin", "ranklm"), "logits", "-m", p, "--tokens", toks, "--greedy", "0"],
                             capture_output=True, text=True, check=True, env=env)
        outs[isa] = np.array(json.loads(run.stdout)["logits"])
    R = np.array(ref["logits"])
    f = lambda a, b: (np.sqrt(((a - b) ** 2).mean(1)) / np.sqrt((b ** 2).mean(1))).max()
    print(f"{name:20s}", " ".join(f"{i}-ref {f(outs[i], R):.1e}" for i in outs),
          f"avx512-avx2 {f(outs['avx512'], outs['avx2']):.1e} avx512-scalar {f(outs['avx512'], outs['scalar']):.1e}")
