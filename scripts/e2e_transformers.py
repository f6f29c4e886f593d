#!/usr/bin/env python3
"""End-to-end: transformers loads a model THROUGH an upg mount of a lossless archive and gives
exactly the same logits as from the original directory; `generate` works through the mount.

Run on a machine with torch + transformers (GPU optional) and /dev/fuse, as root:

    pip install numpy gguf safetensors ml-dtypes torch transformers
    python3 /work/shared/models/smollm2.py /tmp/smollm2          # original directory
    cargo build --release --bins
    python3 scripts/e2e_transformers.py /tmp/smollm2 [--bin target/release]

The script packs the directory (`upg pack`), mounts the archive (`upg-mount`), checks every
file's SHA-256 through the mount, loads both copies with AutoModelForCausalLM in float32 on the
same device, compares logits for a fixed prompt bit for bit, runs greedy `generate` from the
mount and checks its tokens equal the original's, then unmounts. Exit 0 on success, 1 on any
mismatch, 2 on setup errors. Pass --mount DIR to use an existing mount instead.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

PROMPT = "The capital of France is"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ")[4] == path for line in f)


def load(path, device):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).to(device)
    model.eval()
    return tok, model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("orig", help="original model directory")
    ap.add_argument("--bin", default="target/release", help="directory with upg and upg-mount")
    ap.add_argument("--mount", help="use this existing mount instead of packing and mounting")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = ap.parse_args()

    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = None
    mnt = args.mount
    try:
        if mnt is None:
            work = tempfile.mkdtemp(prefix="upg-e2e-")
            archive = os.path.join(work, "model.upg")
            mnt = os.path.join(work, "mnt")
            os.mkdir(mnt)
            upg = os.path.join(args.bin, "upg")
            upg_mount = os.path.join(args.bin, "upg-mount")
            for b in (upg, upg_mount):
                if not os.access(b, os.X_OK):
                    print(f"missing {b}: run `cargo build --release --bins` or pass --bin")
                    return 2
            subprocess.run([upg, "pack", args.orig, "-o", archive], check=True)
            subprocess.run([upg_mount, archive, mnt], check=True)
            if not is_mounted(mnt):
                print("upg-mount returned but nothing is mounted")
                return 2
        bad = 0
        for root, _, names in os.walk(args.orig):
            for n in names:
                rel = os.path.relpath(os.path.join(root, n), args.orig)
                if sha256(os.path.join(args.orig, rel)) != sha256(os.path.join(mnt, rel)):
                    print(f"SHA-256 differs: {rel}")
                    bad += 1
        print(f"file hashes through the mount: {'OK' if bad == 0 else f'{bad} differ'}")

        t0 = time.perf_counter()
        tok_o, model_o = load(args.orig, device)
        t_orig = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok_m, model_m = load(mnt, device)
        t_mnt = time.perf_counter() - t0
        print(f"loaded on {device}: original dir {t_orig:.2f} s, through mount {t_mnt:.2f} s")

        ids_o = tok_o(PROMPT, return_tensors="pt").input_ids.to(device)
        ids_m = tok_m(PROMPT, return_tensors="pt").input_ids.to(device)
        if not torch.equal(ids_o, ids_m):
            print("tokenizer output differs through the mount")
            bad += 1
        with torch.no_grad():
            lo = model_o(ids_o).logits
            lm = model_m(ids_o).logits
        if torch.equal(lo, lm):
            print(f"logits identical ({tuple(lo.shape)})")
        else:
            print(f"LOGITS DIFFER: max abs diff {(lo - lm).abs().max().item()}")
            bad += 1
        with torch.no_grad():
            go = model_o.generate(ids_o, max_new_tokens=20, do_sample=False)
            gm = model_m.generate(ids_o, max_new_tokens=20, do_sample=False)
        text = tok_m.decode(gm[0], skip_special_tokens=True)
        print(f"generate through the mount: {text!r}")
        if not torch.equal(go, gm):
            print("generated tokens differ from the original's")
            bad += 1
        if gm.shape[1] <= ids_o.shape[1]:
            print("generate produced no tokens")
            bad += 1
        del model_o, model_m
        print("E2E OK" if bad == 0 else f"E2E FAILED ({bad} problems)")
        return 0 if bad == 0 else 1
    finally:
        if work is not None:
            if is_mounted(mnt) and subprocess.run(["umount", mnt]).returncode != 0:
                subprocess.run(["umount", "-l", mnt])  # still mapped by this process
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
