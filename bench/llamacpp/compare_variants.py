#!/usr/bin/env python3
"""Parity beyond the fixtures: random-weight F32 models of the qwen3 and gemma3 architectures
(and llama / qwen2 for reference) with shapes, seeds and metadata values that the fixtures do not
have (head sizes, KV-head counts, sliding windows, window patterns as a period or per-layer
array, rope.freq_base_swa, final logit soft-capping, tied output), written with the `gguf` PyPI
package; each is run by ranklm and by a local llama.cpp (llamacpp_logits, see build.sh) on a
48-token prompt plus 16 greedy steps. Prints the worst per-position normalized RMS error of the
logits and whether the greedy tokens agree (where llama.cpp's top-1 margin is clear).

    bash bench/llamacpp/build.sh && python3 bench/llamacpp/compare_variants.py
"""
import json, os, random, subprocess, sys, tempfile

import numpy as np
import gguf

from logits_compare import nrmse

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ranklm = os.path.join(root, "build", "bin", "ranklm")
probe = os.path.join(root, "bench", "llamacpp", ".cache", "llamacpp_logits")

# name, arch, dict of shape and metadata
VARIANTS = [
    ("qwen3 hd128 gqa4 seed3", "qwen3", dict(seed=3, dim=384, layers=3, heads=4, kv=1, hd=128, ff=640)),
    ("qwen3 hd32 tied seed9", "qwen3", dict(seed=9, dim=192, layers=5, heads=6, kv=3, hd=32, ff=512, tied=True)),
    ("qwen3 base1e4 eps1e-5", "qwen3", dict(seed=4, dim=256, layers=2, heads=2, kv=2, hd=96, ff=384, base=1e4, eps=1e-5)),
    ("gemma3 win5 default pattern", "gemma3", dict(seed=5, dim=256, layers=7, heads=4, kv=2, hd=64, ff=512, window=5)),
    ("gemma3 win16 period3 swa-base 5e4", "gemma3", dict(seed=6, dim=320, layers=6, heads=5, kv=1, hd=64, ff=640, window=16, period=3, base_swa=5e4)),
    ("gemma3 win7 layer array, tied", "gemma3", dict(seed=7, dim=256, layers=5, heads=2, kv=1, hd=128, ff=512, window=7, array=[1, 0, 1, 1, 0], tied=True)),
    ("gemma3 win12 softcap 30", "gemma3", dict(seed=8, dim=256, layers=4, heads=4, kv=4, hd=32, ff=768, window=12, softcap=30.0)),
    ("gemma3 no window", "gemma3", dict(seed=10, dim=256, layers=3, heads=4, kv=1, hd=64, ff=512, window=0)),
    ("llama hd64 seed11", "llama", dict(seed=11, dim=256, layers=3, heads=4, kv=2, hd=64, ff=512)),
    ("qwen2 hd32 seed12", "qwen2", dict(seed=12, dim=256, layers=3, heads=8, kv=2, hd=32, ff=512, tied=True)),
]
N_VOCAB = 512


def write_model(path, arch, c):
    rng = np.random.default_rng(c["seed"])
    w = gguf.GGUFWriter(path, arch)
    dim, L, H, KV, hd, ff = c["dim"], c["layers"], c["heads"], c["kv"], c["hd"], c["ff"]
    w.add_context_length(256)
    w.add_embedding_length(dim)
    w.add_block_count(L)
    w.add_feed_forward_length(ff)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(c.get("base", 1e6))
    w.add_layer_norm_rms_eps(c.get("eps", 1e-6))
    if arch == "gemma3":
        if c.get("window", 0):
            w.add_sliding_window(c["window"])
        if "period" in c:
            w.add_uint32(f"{arch}.attention.sliding_window_pattern", c["period"])
        if "array" in c:
            w.add_array(f"{arch}.attention.sliding_window_pattern", [bool(x) for x in c["array"]])
        if "base_swa" in c:
            w.add_rope_freq_base_swa(c["base_swa"])
        if "softcap" in c:
            w.add_final_logit_softcapping(c["softcap"])
    # SentencePiece-style vocabulary as in the fixtures
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    toks += [f"\u2581w{i}" for i in range(len(toks), N_VOCAB)]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(259, N_VOCAB)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (N_VOCAB - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def mat(rows, cols, std=0.03):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(N_VOCAB, dim, 0.3 if arch != "gemma3" else 0.03))
    w.add_tensor("output_norm.weight", norm(dim))
    if not c.get("tied"):
        w.add_tensor("output.weight", mat(N_VOCAB, dim, 0.3))
    for il in range(L):
        b = f"blk.{il}."
        w.add_tensor(b + "attn_norm.weight", norm(dim))
        w.add_tensor(b + "attn_q.weight", mat(H * hd, dim))
        w.add_tensor(b + "attn_k.weight", mat(KV * hd, dim))
        w.add_tensor(b + "attn_v.weight", mat(KV * hd, dim))
        if arch == "qwen2":
            for n, k in (("q", H), ("k", KV), ("v", KV)):
                w.add_tensor(b + f"attn_{n}.bias", (0.1 * rng.standard_normal(k * hd)).astype(np.float32))
        if arch in ("qwen3", "gemma3"):
            w.add_tensor(b + "attn_q_norm.weight", norm(hd))
            w.add_tensor(b + "attn_k_norm.weight", norm(hd))
        w.add_tensor(b + "attn_output.weight", mat(dim, H * hd))
        w.add_tensor(b + "ffn_norm.weight", norm(dim))
        w.add_tensor(b + "ffn_gate.weight", mat(ff, dim))
        w.add_tensor(b + "ffn_up.weight", mat(ff, dim))
        w.add_tensor(b + "ffn_down.weight", mat(dim, ff))
        if arch == "gemma3":
            w.add_tensor(b + "post_attention_norm.weight", norm(dim))
            w.add_tensor(b + "post_ffw_norm.weight", norm(dim))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def greedy_agree(ours, ref, tol):
    for i, (p, q) in enumerate(zip(ours["greedy"], ref["greedy"])):
        top = ref["greedy_top5"][i]
        if top[0][1] - top[1][1] < max(0.05, 2 * tol * 5):
            return f"{i} (then a near-tie)"
        if p != q:
            return f"DIFFER at {i}"
    return "all"


def main():
    random.seed(1)
    prompt = [1] + [random.randrange(3, N_VOCAB) for _ in range(47)]
    toks = ",".join(map(str, prompt))
    worst = 0.0
    print(f"{'variant':38s} {'nRMSE':>8s}  greedy steps agreeing (of 16)")
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch, c in VARIANTS:
            path = os.path.join(tmp, "m.gguf")
            write_model(path, arch, c)
            ours = json.loads(subprocess.run([ranklm, "logits", "-m", path, "--tokens", toks, "--greedy", "16"],
                                             capture_output=True, text=True, check=True).stdout)
            ref = json.loads(subprocess.run([probe, path, toks, "--greedy", "16"],
                                            capture_output=True, text=True, check=True).stdout)
            e = nrmse(ours["logits"], ref["logits"])
            worst = max(worst, e)
            print(f"{name:38s} {e:8.1e}  {greedy_agree(ours, ref, 1e-3)}")
    print(f"worst: {worst:.1e} (F32 tolerance of the fixtures: 1e-3)")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
