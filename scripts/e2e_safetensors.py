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

import json
import mmap

import numpy as np
from safetensors import safe_open

try:  # registers bfloat16 & co. with numpy, so safe_open can return BF16 tensors
    import ml_dtypes  # noqa: F401
except ImportError:
    ml_dtypes = None


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def raw_tensor(path, name):
    """A tensor's bytes by the header's offsets, through mmap (for dtypes numpy lacks)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        n = int.from_bytes(m[:8], "little")
        hdr = json.loads(m[8:8 + n])
        a, b = hdr[name]["data_offsets"]
        return hdr[name]["dtype"], hdr[name]["shape"], bytes(m[8 + n + a:8 + n + b])


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
                try:
                    a, b = fm.get_tensor(k), fo.get_tensor(k)
                    a = (str(a.dtype), list(a.shape), a.tobytes())
                    b = (str(b.dtype), list(b.shape), b.tobytes())
                except TypeError:  # dtype numpy cannot represent (pip install ml-dtypes)
                    a, b = raw_tensor(m, k), raw_tensor(o, k)
                tensors += 1
                nbytes += len(a[2])
                # Compare raw bytes: exact for every dtype, NaN payloads included.
                if a != b:
                    print(f"TENSOR  {rel}:{k} differs")
                    bad += 1
    dt = time.perf_counter() - t0
    print(f"{len(files)} files, {tensors} tensors ({nbytes / 2**20:.1f} MiB) compared "
          f"through {mount} in {dt:.2f} s: {'OK' if bad == 0 else f'{bad} MISMATCHES'}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
