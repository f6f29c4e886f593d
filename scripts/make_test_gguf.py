#!/usr/bin/env python3
"""Write a small GGUF file with the PyPI `gguf` package (gguf-py, llama.cpp's own writer) for the
round-trip tests: F32, F16, BF16 and Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 tensors quantized by gguf.quants
from Gaussian weights, K-type (Q2_K..Q6_K) and IQ4_NL/TQ2_0 tensors as blocks of random bytes with
plausible f16 scales (gguf-py cannot quantize K types), an I32 tensor, a 1-D norm, a tensor
whose size is not a multiple of the alignment, and metadata of every value type including a
nested array.

usage: make_test_gguf.py OUT.gguf [--seed N] [--rows R]
"""
import argparse

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=64)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("upg-test")
    w.add_uint8("test.u8", 7)
    w.add_int8("test.i8", -7)
    w.add_uint16("test.u16", 700)
    w.add_int16("test.i16", -700)
    w.add_uint32("test.u32", 70000)
    w.add_int32("test.i32", -70000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int64("test.i64", -(1 << 40))
    w.add_float64("test.f64", -2.25)
    w.add_array("test.strings", ["a", "bc", "d\u00e9f"])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_array("test.ints", list(range(100)))
    rows, cols = a.rows, 512

    def gauss(r, c):
        return (rng.standard_normal((r, c)) * 0.02).astype(np.float32)

    w.add_tensor("f32.weight", gauss(rows, cols))
    w.add_tensor("f16.weight", gauss(rows, cols).astype(np.float16))
    w.add_tensor("norm.weight", (1 + gauss(1, cols)[0]).astype(np.float32))
    w.add_tensor("odd.weight", gauss(3, 37))  # 444 bytes: padding follows
    w.add_tensor("ids", rng.integers(0, 1000, 300).astype(np.int32))
    for qt in (T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        q = gguf.quants.quantize(gauss(rows, cols), qt)
        w.add_tensor(f"{qt.name.lower()}.weight", q, raw_dtype=qt)
    # Types gguf-py cannot quantize: random bytes, every block's f16 scales set to small
    # positive halves like real ones (the other fields are random).
    scale_offsets = {
        T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
        T.Q6_K: [208], T.IQ4_NL: [0], T.TQ2_0: [64],
    }
    for qt, offs in scale_offsets.items():
        blk, nbytes = GGML_QUANT_SIZES[qt]
        nblocks = rows * cols // blk
        raw = rng.integers(0, 256, (nblocks, nbytes), dtype=np.uint8)
        for o in offs:
            d = np.abs(rng.standard_normal(nblocks) * 1e-3 + 2e-3).astype(np.float16)
            raw[:, o:o + 2] = d.view(np.uint8).reshape(nblocks, 2)
        w.add_tensor(f"{qt.name.lower()}.weight", raw.reshape(rows, -1), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
