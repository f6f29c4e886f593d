"""Shared helpers for the quality scripts: safetensors read/patch without torch, candidate dirs."""
import json
import os
import shutil
import struct

import numpy as np

FLOAT_DTYPES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8}


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return 8 + n, header


def selected(info):
    """Same selection as upg's lossy presets: 2-D float tensors with >= 65,536 elements."""
    shape = info["shape"]
    return info["dtype"] in FLOAT_DTYPES and len(shape) == 2 and shape[0] * shape[1] >= 65536


def to_f32(raw, dtype):
    if dtype == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).astype(np.float32)


def from_f32(x, dtype):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "BF16":
        import ml_dtypes

        return x.astype(ml_dtypes.bfloat16).tobytes()
    return x.astype({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).tobytes()


def make_candidate_dir(orig_dir, out_dir):
    """A model dir with every file of orig_dir except model.safetensors (copied, small)."""
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(orig_dir):
        src = os.path.join(orig_dir, name)
        if name != "model.safetensors" and os.path.isfile(src):
            shutil.copy(src, os.path.join(out_dir, name))
        elif os.path.isdir(src) and not os.path.exists(os.path.join(out_dir, name)):
            shutil.copytree(src, os.path.join(out_dir, name))
