#!/usr/bin/env python3
"""Write GGUF-quantized baselines of a safetensors model, back in its original dtype.

usage: gguf_baselines.py ORIG_DIR OUT_ROOT [--types Q8_0 Q5_0 Q4_0 Q4_1]

Every tensor upg's lossy presets touch (2-D float tensors with >= 65,536 elements) goes
through the PyPI `gguf` package's reference quantize/dequantize; all other tensors and files
are copied. OUT_ROOT/<type>/ is then a loadable HF directory with the same safetensors header.
Bits/weight are computed from the quantized byte counts, not assumed.
"""
import argparse
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_candidate_dir, read_header, selected, to_f32, from_f32  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("orig_dir")
    ap.add_argument("out_root")
    ap.add_argument("--types", nargs="+", default=["Q8_0", "Q5_0", "Q4_0", "Q4_1"])
    a = ap.parse_args()
    src = os.path.join(a.orig_dir, "model.safetensors")
    base, header = read_header(src)
    with open(src, "rb") as f:
        blob = f.read()
    for t in a.types:
        qt = GGMLQuantizationType[t]
        out = bytearray(blob)
        qbytes = qn = other_bytes = all_n = 0
        sig = err = 0.0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            s, e = info["data_offsets"]
            n = int(np.prod(info["shape"])) if info["shape"] else 1
            all_n += n
            if not selected(info):
                other_bytes += e - s
                continue
            x = to_f32(blob[base + s : base + e], info["dtype"]).reshape(info["shape"])
            q = quantize(x, qt)
            y = dequantize(q, qt).reshape(x.shape)
            qbytes += q.nbytes
            qn += n
            back = to_f32(from_f32(y, info["dtype"]), info["dtype"]).astype(np.float64).reshape(x.shape)
            sig += float(np.sum(x.astype(np.float64) ** 2))
            err += float(np.sum((back - x) ** 2))
            out[base + s : base + e] = from_f32(y, info["dtype"])
        d = os.path.join(a.out_root, t.lower())
        make_candidate_dir(a.orig_dir, d)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(out)
        bpw_q = qbytes * 8 / qn
        bpw_all = (qbytes + other_bytes) * 8 / all_n
        row = {
            "variant": t,
            "bpw_quantized": round(bpw_q, 4),
            "bpw_all": round(bpw_all, 4),
            "ratio_vs_bf16": round(16 / bpw_all, 4),
            "snr_db": round(10 * np.log10(sig / err), 3),
            "dir": d,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
