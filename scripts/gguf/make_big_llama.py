#!/usr/bin/env python3
"""Write a larger Llama-shaped HF model directory (BF16 safetensors, synthetic weights) that
llama.cpp's convert_hf_to_gguf.py converts: ref-llama-38m's tokenizer and config keys with bigger
dimensions, for load-time measurements where a 76 MB model is all noise (issue 11: cold load of
an F16 GGUF through the mount against plain).

Weights: Gaussian, one log-normal scale per row (sigma 0.5 around 0.02), rounded to BF16; norms
near 1. Seeded per tensor: the bytes depend only on --seed and the shapes. Synthetic weights say
nothing about compression ratio or text quality; they exercise speed only.

usage: make_big_llama.py TEMPLATE_DIR OUT_DIR [--hidden 2048] [--ff 5632] [--layers 24]
                         [--heads 32] [--kv-heads 4] [--seed 0]
Default shape: 1.09e9 parameters, 2.2 GB (TinyLlama-like, 24 layers, ref-llama-38m's 8192 vocab).
"""
import argparse
import json
import os
import shutil
import struct
import zlib

import numpy as np


def bf16(x):
    """float32 array -> uint16 BF16 bits, round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def tensor(name, shape, seed):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if len(shape) == 1:
        return bf16(1.0 + 0.05 * rng.standard_normal(shape[0], dtype=np.float32))
    rows, cols = shape
    scale = (0.02 * np.exp(0.5 * rng.standard_normal(rows, dtype=np.float32)))[:, None]
    out = np.empty(shape, dtype=np.uint16)
    step = max(1, (64 << 20) // (4 * cols))
    for r in range(0, rows, step):
        e = min(rows, r + step)
        out[r:e] = bf16(rng.standard_normal((e - r, cols), dtype=np.float32) * scale[r:e])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("template")
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cfg = json.load(open(os.path.join(a.template, "config.json")))
    hd = a.hidden // a.heads
    cfg.update(hidden_size=a.hidden, intermediate_size=a.ff, num_hidden_layers=a.layers,
               num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=hd)
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(a.template, f)):
            shutil.copy(os.path.join(a.template, f), a.out)
    V, H, F, KV = cfg["vocab_size"], a.hidden, a.ff, a.kv_heads * hd
    shapes = [("model.embed_tokens.weight", (V, H))]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (H,)),
                   (p + "self_attn.q_proj.weight", (H, H)), (p + "self_attn.k_proj.weight", (KV, H)),
                   (p + "self_attn.v_proj.weight", (KV, H)), (p + "self_attn.o_proj.weight", (H, H)),
                   (p + "post_attention_layernorm.weight", (H,)),
                   (p + "mlp.gate_proj.weight", (F, H)), (p + "mlp.up_proj.weight", (F, H)),
                   (p + "mlp.down_proj.weight", (H, F))]
    shapes += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    header, off = {}, 0
    for n, s in shapes:
        size = 2 * int(np.prod(s))
        header[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + size]}
        off += size
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for n, s in shapes:
            f.write(tensor(n, s, a.seed).tobytes())
    params = off // 2
    print(f"{a.out}: {params:,} BF16 parameters, {off / 2**30:.2f} GiB, {len(shapes)} tensors")


if __name__ == "__main__":
    main()
