#!/usr/bin/env python3
"""Where the float codec's bytes go, and what other models of the same data would cost.

usage: cargo run --release --example chunk_dump -- MODEL.safetensors /tmp/chunks.bin
       python3 scripts/analysis/float_gap.py /tmp/chunks.bin {4|2}      (4 = F32, 2 = BF16)

Parses every split-mode stream (docs/CODEC.md, "Stream format") and sums, over all chunks:
header, J stream (table, fixed fields, flushed lane states, words), packed raw fields and,
for F32, the two low planes; next to the empirical order-0 entropy of J (tables free). Then the
empirical cost (tables free) of J + packed fields for every (k, sign-in-J) choice ignoring the
256-symbol limit, and of J conditioned on the previous value's exponent (sum of per-context
entropies; one table per context would have to be paid on top).
"""
import struct
import sys

import numpy as np


def stream_end(b, p, n):
    """End offset and parts of the entropy stream at b[p:] holding n symbols."""
    m = b[p]
    if m == 0:
        return p + 1 + n, {"raw": 1 + n}
    if m == 1:
        return p + 2, {"const": 2}
    if m != 2:
        raise ValueError(f"entropy mode {m}")
    nsym = b[p + 2] + 1
    k = b[p + 3] & 15
    q, acc, nb = p + 4, 0, 0

    def bit():
        nonlocal q, acc, nb
        if nb == 0:
            acc, q, nb = b[q], q + 1, 8
        v, acc, nb = acc & 1, acc >> 1, nb - 1
        return v

    for _ in range(nsym - 1):
        z = 0
        while bit() == 0:
            z += 1
        for _ in range(z + k):
            bit()
    nwords = struct.unpack_from("<I", b, q)[0]
    return q + 4 + 128 + 2 * nwords, {"table": q - (p + 4), "fixed": 8, "states": 128, "words": 2 * nwords}


def ent_bytes(key):
    c = np.bincount(key)
    c = c[c > 0]
    return -(c * np.log2(c / c.sum())).sum() / 8


def main():
    data, es = open(sys.argv[1], "rb").read(), int(sys.argv[2])
    tot, models, cond = {}, np.zeros((8, 2)), {}
    add = lambda k, v: tot.__setitem__(k, tot.get(k, 0) + v)
    pos = 0
    while pos < len(data):
        rl, cl = struct.unpack_from("<II", data, pos)
        raw, enc = data[pos + 8 : pos + 8 + rl], data[pos + 8 + rl : pos + 8 + rl + cl]
        pos += 8 + rl + cl
        add("raw", rl)
        add("coded", cl)
        if enc[0] != 1:
            add(f"chunks in mode {enc[0]}", cl)
            continue
        v = np.frombuffer(raw, dtype=np.uint32 if es == 4 else np.uint16).astype(np.int64)
        top = v >> 16 if es == 4 else v
        n = len(top)
        k, sj, ne = enc[1] & 127, enc[1] >> 7, enc[2] + 1
        add("header", 3 + ne)
        p, parts = stream_end(enc, 3 + ne, n)
        for name, b in parts.items():
            add(f"J {name}", b)
        e, s, man = (top >> 7) & 255, top >> 15, top & 127
        add("J order-0 entropy (tables free)", ent_bytes(((e * 2 + s * sj) << k) | (man >> (7 - k))))
        packed = (n * ((7 - k) + (1 - sj)) + 7) // 8
        add("packed fields", packed)
        p += packed
        if es == 4:
            for b in range(2):
                p, parts = stream_end(enc, p, n)
                for name, c in parts.items():
                    add(f"planes {name}", c)
        for kk in range(8):
            for ss in range(2):
                models[kk, ss] += ent_bytes(((e * 2 + s * ss) << kk) | (man >> (7 - kk))) + n * ((7 - kk) + (1 - ss)) / 8
        J3 = ((e * 2 + s) << 3) | (man >> 4)
        med = int(np.median(e))
        prev = np.concatenate([[med], e[:-1]])
        for nb in (2, 4, 6):
            ctx = np.clip(prev - med + nb // 2, 0, nb - 1)
            cond[nb] = cond.get(nb, 0) + ent_bytes(J3 * 8 + ctx) - ent_bytes(ctx)
        cond["none"] = cond.get("none", 0) + ent_bytes(J3)
    raw = tot["raw"]
    print(f"{sys.argv[1]}: {raw} bytes of {'F32' if es == 4 else 'BF16'} in, {tot['coded']} out, "
          f"{100 * (1 - tot['coded'] / raw):.3f}% saved")
    for name, b in tot.items():
        if name not in ("raw", "coded"):
            print(f"  {name:34s} {b:14,.0f}  {100 * b / raw:8.4f}% of input")
    print("  J + packed fields, empirical order-0 (tables free), by (k, sign in J):")
    for kk in range(8):
        print(f"    k={kk}: sign out {models[kk, 0]:14,.0f}   sign in {models[kk, 1]:14,.0f}")
    print("  J (k=3, sign in) conditioned on the previous value's exponent, tables free:")
    for nb, b in cond.items():
        print(f"    contexts {nb!s:>4}: {b:14,.0f}  gain {cond['none'] - b:10,.0f}")


if __name__ == "__main__":
    main()
