#!/usr/bin/env python3
"""Load every tensor of every .safetensors file through an upg mount and compare it with the
original directory, using safetensors.safe_open(framework="numpy") (which memory-maps the file).

    pip install safetensors numpy
    python3 scripts/e2e_safetensors.py MOUNT ORIG_DIR

Exit 0 when every tensor (dtype, shape and bytes) and every other file matches; 1 otherwise.
"""
import hashlib
import os
import sys
import time

import numpy as np
from safetensors import safe_open


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    mount, orig = sys.argv[1], sys.argv[2]
    bad = 0
    tensors = 0
    nbytes = 0
    files = []
    for root, _, names in os.walk(orig):
        for n in names:
            files.append(os.path.relpath(os.path.join(root, n), orig))
    if not files:
        print(f"no files in {orig}")
        return 2
    t0 = time.perf_counter()
    for rel in sorted(files):
        m, o = os.path.join(mount, rel), os.path.join(orig, rel)
        if not os.path.exists(m):
            print(f"MISSING {rel}")
            bad += 1
            continue
        if os.path.getsize(m) != os.path.getsize(o):
            print(f"SIZE    {rel}")
            bad += 1
            continue
        if not rel.endswith(".safetensors"):
            if sha256(m) != sha256(o):
                print(f"DIFF    {rel}")
                bad += 1
            continue
        with safe_open(m, framework="numpy") as fm, safe_open(o, framework="numpy") as fo:
            if fm.metadata() != fo.metadata():
                print(f"META    {rel}")
                bad += 1
            km, ko = sorted(fm.keys()), sorted(fo.keys())
            if km != ko:
                print(f"KEYS    {rel}: {len(km)} vs {len(ko)}")
                bad += 1
                continue
            for k in km:
                a, b = fm.get_tensor(k), fo.get_tensor(k)
                tensors += 1
                nbytes += a.nbytes
                # Compare raw bytes: exact for every dtype, NaN payloads included.
                if a.dtype != b.dtype or a.shape != b.shape or \
                        a.tobytes() != b.tobytes():
                    print(f"TENSOR  {rel}:{k} differs")
                    bad += 1
    dt = time.perf_counter() - t0
    print(f"{len(files)} files, {tensors} tensors ({nbytes / 2**20:.1f} MiB) compared "
          f"through {mount} in {dt:.2f} s: {'OK' if bad == 0 else f'{bad} MISMATCHES'}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
