#!/usr/bin/env python3
"""Numpy model of upg's ECSQ (round(w / step) half away from zero, recon q * step in the tensor's
dtype, rate = order-0 entropy of the byte symbols + 16 bits per escape), to measure quantizer
choices on real weights before building them in Rust: a randomized Hadamard rotation of rows in
blocks, and how the steps are spread over tensors under one budget.

usage: sim_ecsq.py ORIG_DIR --rotation-report
       sim_ecsq.py ORIG_DIR OUT_DIR --bits B --alloc equal|global|alpha:A|norm:A
  equal   : every tensor at B bits (today's presets)
  global  : one step for every tensor (minimum total weight MSE at the rate)
  alpha:A : step_t = c * rms_t^A  (A = 0 is global, A = 1 is about equal SNR)
  norm:A  : global step divided by the RMS of the norm weights in front of the tensor (q/k/v by
            input_layernorm, gate/up by post_attention_layernorm, lm_head by model.norm), times
            rms_t^A; a data-free proxy for the input scale the tensor multiplies
Budget B is over the quantized tensors only (entropy, no coder overhead); prints per-tensor
bits and SNR. Same tensor selection as the presets (2-D float, >= 65,536 elements).
"""
import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import from_f32, make_candidate_dir, read_header, selected, to_f32  # noqa: E402


def entropy_bits(x, step):
    q = np.trunc(np.abs(x) / step + 0.5) * np.sign(x)
    z = np.where(q >= 0, 2 * q, -2 * q - 1)
    z = np.where(np.abs(q) <= 127, z, 255).astype(np.int64)
    c = np.bincount(z.ravel(), minlength=256).astype(np.float64)
    p = c[c > 0] / x.size
    return float(-(p * np.log2(p)).sum() + 16 * c[255] / x.size)


def quant(x, step):
    return np.trunc(np.abs(x) / step + 0.5) * np.sign(x) * step


def hadamard(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def rotate_rows(w, block, rng):
    """x -> H diag(signs) x on each run of `block` columns of each row."""
    rows, cols = w.shape
    h = hadamard(block)
    s = rng.choice([-1.0, 1.0], size=cols)
    v = (w * s).reshape(rows, cols // block, block)
    return (v @ h.T).reshape(rows, cols)


def load(orig):
    src = os.path.join(orig, "model.safetensors")
    base, header = read_header(src)
    blob = open(src, "rb").read()
    ts = {}
    for k, info in header.items():
        if k == "__metadata__":
            continue
        s, e = info["data_offsets"]
        ts[k] = to_f32(blob[base + s : base + e], info["dtype"]).reshape(info["shape"]).astype(np.float64)
    return base, header, blob, ts


def rotation_report(ts, header):
    rng = np.random.default_rng(1)
    print("| tensor | shape | block | kurtosis before / after | bits at one step, plain / rotated |")
    print("| --- | --- | ---: | --- | --- |")
    tot = {"plain": 0.0, "rot": 0.0, "n": 0}
    for k, w in ts.items():
        if not selected(header[k]):
            continue
        cols = w.shape[1]
        block = 256 if cols % 256 == 0 else 128 if cols % 128 == 0 else 64
        r = rotate_rows(w, block, rng)
        step = np.sqrt(np.mean(w * w)) / 8  # ~4 bits per weight on a Gaussian
        bp, br = entropy_bits(w, step), entropy_bits(r, step)
        kurt = lambda a: float(np.mean(a ** 4) / np.mean(a ** 2) ** 2)  # noqa: E731
        tot["plain"] += bp * w.size; tot["rot"] += br * w.size; tot["n"] += w.size
        if re.search(r"layers\.(0|5|9)\.|embed|lm_head", k):
            print(f"| {k} | {w.shape[0]}x{w.shape[1]} | {block} | {kurt(w):.2f} / {kurt(r):.2f} | {bp:.3f} / {br:.3f} |")
    print(f"\nall quantized tensors, same step (same MSE): plain {tot['plain']/tot['n']:.4f}, "
          f"rotated {tot['rot']/tot['n']:.4f} bits/weight")


def norm_rms(ts, k):
    m = re.match(r"model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight", k)
    if k == "lm_head.weight":
        g = ts["model.norm.weight"]
    elif m and m.group(3) in ("q_proj", "k_proj", "v_proj"):
        g = ts[f"model.layers.{m.group(1)}.input_layernorm.weight"]
    elif m and m.group(3) in ("gate_proj", "up_proj"):
        g = ts[f"model.layers.{m.group(1)}.post_attention_layernorm.weight"]
    else:
        return 1.0
    return float(np.sqrt(np.mean(g * g)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("orig")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--bits", type=float)
    ap.add_argument("--alloc", default="equal")
    ap.add_argument("--rotation-report", action="store_true")
    ap.add_argument("--role-gain", action="append", default=[], metavar="REGEX=F",
                    help="multiply the step of tensors whose name matches REGEX by F (repeatable)")
    a = ap.parse_args()
    base, header, blob, ts = load(a.orig)
    if a.rotation_report:
        return rotation_report(ts, header)
    names = [k for k in ts if selected(header[k])]
    n = {k: ts[k].size for k in names}
    N = sum(n.values())
    rms = {k: float(np.sqrt(np.mean(ts[k] ** 2))) for k in names}

    role = [(re.compile(r), float(f)) for r, f in (x.rsplit("=", 1) for x in a.role_gain)]

    def role_gain(k):
        g = 1.0
        for r, f in role:
            if r.search(k):
                g *= f
        return g

    def steps_for(c):
        return {k: v * role_gain(k) for k, v in base_steps_for(c).items()}

    def base_steps_for(c):
        if a.alloc == "global":
            return {k: c for k in names}
        kind, _, arg = a.alloc.partition(":")
        if kind == "alpha":
            return {k: c * rms[k] ** float(arg) for k in names}
        if kind == "norm":
            return {k: c * rms[k] ** float(arg or 0) / norm_rms(ts, k) for k in names}
        raise SystemExit(f"unknown --alloc {a.alloc}")

    def bisect(f, target, lo, hi):  # f falls as log-step grows
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if f(2.0 ** mid) > target:
                lo = mid
            else:
                hi = mid
        return 2.0 ** hi

    # The searches run on every 7th element (7 is coprime with every row length here).
    sub = {k: ts[k].ravel()[::7] for k in names}
    if a.alloc == "equal":
        steps = {k: bisect(lambda s, k=k: entropy_bits(sub[k], s), a.bits, -40, 10) for k in names}
    else:
        total = lambda c: sum(entropy_bits(sub[k], s) * n[k] for k, s in steps_for(c).items()) / N  # noqa: E731
        steps = steps_for(bisect(total, a.bits, -40, 10))
    out = bytearray(blob)
    rate = sig = err = 0.0
    rows = []
    for k in names:
        x, s = ts[k], steps[k]
        y = quant(x, s)
        info = header[k]
        b = from_f32(y, info["dtype"])
        back = to_f32(b, info["dtype"]).reshape(x.shape)
        st, en = info["data_offsets"]
        out[base + st : base + en] = b
        bits = entropy_bits(x, s)
        rate += bits * n[k]; sig += float((x * x).sum()); e = float(((back - x) ** 2).sum()); err += e
        rows.append({"tensor": k, "bits": round(bits, 3), "snr_db": round(10 * np.log10((x * x).sum() / e), 2)})
    summary = {"alloc": a.alloc, "role_gain": a.role_gain, "bits_target": a.bits, "bits_quantized": round(rate / N, 4),
               "snr_db": round(10 * np.log10(sig / err), 3), "dir": a.out}
    if a.out:
        make_candidate_dir(a.orig, a.out)
        with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
            f.write(out)
        with open(os.path.join(a.out, "sim.json"), "w") as f:
            json.dump({"summary": summary, "tensors": rows}, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
