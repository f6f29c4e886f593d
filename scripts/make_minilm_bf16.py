#!/usr/bin/env python3
"""Convert every F32 tensor of a safetensors file to BF16 (round-to-nearest-even), keeping the
header order and metadata; other dtypes are copied unchanged.

usage: python3 scripts/make_minilm_bf16.py <input.safetensors> <output.safetensors>
needs: pip install numpy safetensors ml-dtypes
"""
import json
import struct
import sys

import ml_dtypes
import numpy as np


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + hlen])  # json keeps the file's key order
    data = blob[8 + hlen :]
    new_header, parts, off = {}, [], 0
    for name, info in header.items():
        if name == "__metadata__":
            new_header[name] = info
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        dtype = info["dtype"]
        if dtype == "F32":
            # ml_dtypes' float32 -> bfloat16 cast rounds to nearest even (NaN stays NaN).
            raw = np.frombuffer(raw, dtype="<f4").astype(ml_dtypes.bfloat16).tobytes()
            dtype = "BF16"
        new_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [off, off + len(raw)]}
        parts.append(raw)
        off += len(raw)
    hbytes = json.dumps(new_header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for p in parts:
            f.write(p)


if __name__ == "__main__":
    main()
