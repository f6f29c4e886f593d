#!/usr/bin/env python3
"""Turn a llama.cpp GGUF file of a Llama model back into an HF directory (the original's layout).

usage: gguf_to_hf.py ORIG_DIR GGUF OUT_DIR [--check]

Every tensor of ORIG_DIR/model.safetensors is looked up in the GGUF under the name llama.cpp's
converter gives it (gguf-py's TensorNameMap), dequantized with gguf-py (`gguf.quants.dequantize`
reads every type llama-quantize writes: Q8_0, Q6_K, Q5_K, Q4_K, Q3_K, Q2_K, Q5_0, Q4_0, F16, ...),
un-permuted where the converter permuted it (q_proj / k_proj rows, for llama.cpp's RoPE layout),
and written in the original dtype at the original offsets, so the safetensors header is the
original's byte for byte. The other files are copied. One JSON line goes to stdout:
  bpw_file = GGUF file bytes * 8 / weights of the model (the figure users compare),
  types    = how many tensors of each GGML type the file holds.
--check: also print the largest |difference| to the original per tensor kind (a F16 GGUF of a
BF16 model should give 0 except for values F16 cannot hold).
Needs gguf-py (the converter's copy: PYTHONPATH=CONVERT_DIR/gguf-py, or the PyPI gguf package),
numpy, ml-dtypes.
"""
import argparse
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_candidate_dir, read_header, from_f32, to_f32  # noqa: E402

import gguf  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's LlamaModel.permute (rows regrouped for RoPE)."""
    s = w.shape
    return w.reshape(n_head, s[0] // n_head // 2, 2, *s[1:]).swapaxes(1, 2).reshape(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("orig_dir")
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    with open(os.path.join(a.orig_dir, "config.json")) as f:
        cfg = json.load(f)
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    nmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    r = gguf.GGUFReader(a.gguf)
    by_name = {t.name: t for t in r.tensors}
    src = os.path.join(a.orig_dir, "model.safetensors")
    base, header = read_header(src)
    with open(src, "rb") as f:
        blob = f.read()
    out = bytearray(blob)
    types = collections.Counter()
    worst = collections.defaultdict(float)
    weights = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info["shape"]
        weights += int(np.prod(shape)) if shape else 1
        gname = nmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None or gname not in by_name:
            sys.exit(f"{name}: no tensor {gname!r} in {a.gguf}")
        t = by_name[gname]
        types[t.tensor_type.name] += 1
        y = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)
        if name.endswith("self_attn.q_proj.weight"):
            y = unpermute(y, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            y = unpermute(y, n_kv)
        s, e = info["data_offsets"]
        b = from_f32(y, info["dtype"])
        if len(b) != e - s:
            sys.exit(f"{name}: {len(b)} bytes after dequantizing, {e - s} in the original")
        out[base + s : base + e] = b
        if a.check:
            x = to_f32(blob[base + s : base + e], info["dtype"])
            kind = name.split(".")[-2] if "layers" in name else name
            worst[kind] = max(worst[kind], float(np.max(np.abs(to_f32(b, info["dtype"]) - x))))
    make_candidate_dir(a.orig_dir, a.out_dir)
    with open(os.path.join(a.out_dir, "model.safetensors"), "wb") as f:
        f.write(out)
    row = {
        "variant": os.path.basename(a.gguf),
        "bytes": os.path.getsize(a.gguf),
        "weights": weights,
        "bpw_file": round(os.path.getsize(a.gguf) * 8 / weights, 4),
        "types": dict(types),
        "dir": a.out_dir,
    }
    if a.check:
        row["max_abs_diff"] = dict(worst)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
