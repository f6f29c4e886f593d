#!/usr/bin/env python3
"""Write a Phi-4-shaped model directory deterministically (synthetic weights; issue 9).

Names and shapes of transformers' Phi3ForCausalLM at Phi-4's size: vocab 100352, hidden 5120,
40 layers, qkv_proj [7680, 5120], o_proj [5120, 5120], gate_up_proj [35840, 5120],
down_proj [5120, 17920], two RMS norms per layer, untied lm_head: 14,659,507,200 BF16
parameters, 27.3 GiB in 6 shards, with model.safetensors.index.json and a config.json that
transformers loads.

Weights: Gaussian with a log-normal scale per row (sigma 0.5 around 0.02), norms near 1.
Synthetic weights say nothing about compression ratio (real trained weights have a different
exponent distribution); they exercise speed and scale only.

Each shard is written by its own process, tensor by tensor in row blocks, so memory stays at
a few hundred MB per process. Seeded per tensor: the bytes depend only on --seed and the shapes.

usage: make_phi4.py OUT_DIR [--layers 40] [--small] [--seed 0] [--jobs N]
  --small: hidden 256, vocab 1024, 4 layers (a smoke test of the script itself)
"""
import argparse
import hashlib
import json
import os
import struct
import sys
from multiprocessing import Pool

import numpy as np


def shapes(hidden, inter, vocab, layers, kv):
    qkv = hidden + 2 * kv
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.qkv_proj.weight", (qkv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_up_proj.weight", (2 * inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
        ]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def to_bf16(x):
    """float32 -> bfloat16 bits, round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    u = u + (0x7FFF + ((u >> 16) & 1))
    return (u >> 16).astype(np.uint16)


def tensor_bytes(name, shape, seed, f):
    tseed = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(tseed)
    if len(shape) == 1:
        f.write(to_bf16(1.0 + 0.05 * rng.standard_normal(shape[0], dtype=np.float32)).tobytes())
        return
    rows, cols = shape
    block = max(1, (32 << 20) // cols)
    for r0 in range(0, rows, block):
        r = min(block, rows - r0)
        scale = (0.02 * np.exp(0.5 * rng.standard_normal(r, dtype=np.float32)))[:, None]
        f.write(to_bf16(rng.standard_normal((r, cols), dtype=np.float32) * scale).tobytes())


def write_shard(args):
    path, tensors, seed = args
    header, off = {}, 0
    for name, shape in tensors:
        n = numel(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape in tensors:
            tensor_bytes(name, shape, seed, f)
    os.replace(tmp, path)
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    a = ap.parse_args()
    if a.small:
        hidden, inter, vocab, layers, heads, kvh = 256, 896, 1024, 4, 4, 1
    else:
        hidden, inter, vocab, layers, heads, kvh = 5120, 17920, 100352, a.layers, 40, 10
    kv = hidden // heads * kvh
    ts = shapes(hidden, inter, vocab, layers, kv)
    total = sum(numel(s) for _, s in ts)
    # Greedy split into shards of about equal size, in order (as HF's save_pretrained does).
    per = total / a.shards
    shards, cur, acc = [], [], 0
    for t in ts:
        cur.append(t)
        acc += numel(t[1])
        if acc >= per * (len(shards) + 1) and len(shards) < a.shards - 1:
            shards.append(cur)
            cur = []
    if cur:
        shards.append(cur)
    os.makedirs(a.out, exist_ok=True)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    with Pool(min(a.jobs, len(shards))) as pool:
        sizes = pool.map(
            write_shard, [(os.path.join(a.out, n), s, a.seed) for n, s in zip(names, shards)]
        )
    wm = {t: n for n, s in zip(names, shards) for t, _ in s}
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(sizes)}, "weight_map": wm}, f, indent=2)
    cfg = {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kvh,
        "max_position_embeddings": 16384,
        "original_max_position_embeddings": 16384,
        "rms_norm_eps": 1e-05,
        "rope_theta": 250000,
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": 100257,
        "eos_token_id": 100257,
        "pad_token_id": 100257,
        "attention_dropout": 0.0,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "initializer_range": 0.02,
        "sliding_window": None,
        "use_cache": True,
    }
    if a.small:
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            cfg[k] = 0
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{a.out}: {total:,} BF16 parameters, {len(shards)} shards, {sum(sizes) / 2**30:.2f} GiB")


if __name__ == "__main__":
    sys.exit(main())
