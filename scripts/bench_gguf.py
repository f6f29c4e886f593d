#!/usr/bin/env python3
"""GGUF compression per file and per ggml type: upg vs zstd -19 vs lmz (PyPI lmzip) on the same
tensor bytes, beside the order-0 entropy bound of the block coder's fields; plus upg's decode
speed on one thread (`upg bench --threads 1`).

For each GGUF file:
  - `upg pack FILE --json`: stored bytes per class ("GGUF <type>": the type's tensors' chunks);
  - examples/gguf_fields: per type, the tensors' bytes and the order-0 bound (one histogram per
    field lane per tensor: no table or chunking costs), and the bytes dumped per type;
  - `zstd -19 -T1` and `lmz compress` on each type's concatenated tensor bytes (one stream per
    type, which favours them: upg codes chunks of <= 256 KiB independently);
  - the whole file with upg, zstd -19 and lmz.
Targets (issue 11): quantized types save >= 1.25x what zstd -19 saves and come within 1 point of
the bound; F16/BF16 GGUF within 0.5 points of the safetensors figure (`--safetensors DIR` packs
that model directory for the comparison).

usage: scripts/bench_gguf.py [--upg target/release/upg] [--safetensors DIR] FILE.gguf...
rerun: cargo build --release --bins --example gguf_fields && scripts/bench_gguf.py /work/gguf-data/*.gguf
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def zstd19(path):
    out = subprocess.run(["zstd", "-19", "-T1", "-q", "-c", path], check=True, capture_output=True).stdout
    return len(out)


def lmz(path, tmp):
    if shutil.which("lmz") is None:
        return None
    out = os.path.join(tmp, "x.lmz")
    try:
        subprocess.run(["lmz", "compress", path, out, "-q", "-f"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        return None
    n = os.path.getsize(out)
    os.remove(out)
    return n


def gguf_to_safetensors(f, out):
    """The float tensors of a GGUF as a safetensors file with the very same bytes (shapes
    reversed to row-major); None if the GGUF holds non-float tensors."""
    import gguf
    names = {0: "F32", 1: "F16", 30: "BF16"}
    r = gguf.GGUFReader(f)
    hdr, blobs, off = {}, [], 0
    for t in r.tensors:
        if int(t.tensor_type) not in names:
            return None
        b = bytes(t.data.tobytes())
        hdr[t.name] = {"dtype": names[int(t.tensor_type)], "shape": [int(x) for x in reversed(t.shape)],
                       "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(out, "wb") as o:
        o.write(len(h).to_bytes(8, "little"))
        o.write(h)
        for b in blobs:
            o.write(b)
    return out


def pct(saved_from, size):
    return 100.0 * (1 - size / saved_from) if saved_from else 0.0


def fmt(x):
    return "-" if x is None else f"{x:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upg", default=os.path.join(root, "target/release/upg"))
    ap.add_argument("--fields", default=os.path.join(root, "target/release/examples/gguf_fields"))
    ap.add_argument("--safetensors", help="model directory to compare F16/BF16 GGUFs against")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    rows, whole = [], []
    with tempfile.TemporaryDirectory() as tmp:
        st_saved = None
        if a.safetensors:
            s = json.loads(run([a.upg, "pack", a.safetensors, "-o", f"{tmp}/st.upg", "--json", "-q", "--force"]))
            st_saved = pct(s["bytes_in"], s["bytes_out"])
            os.remove(f"{tmp}/st.upg")
        for f in a.files:
            name = os.path.basename(f)
            arch = f"{tmp}/a.upg"
            s = json.loads(run([a.upg, "pack", f, "-o", arch, "--json", "-q", "--force"]))
            bench = json.loads(run([a.upg, "bench", arch, "--threads", "1", "--runs", "3", "--json"]))
            dump = f"{tmp}/d"
            os.makedirs(dump, exist_ok=True)
            fields = [json.loads(l) for l in run([a.fields, f, dump]).splitlines()]
            for t in fields:
                b = f"{dump}/{t['type']}.bin"
                cls = s["per_class"].get(f"GGUF {t['type']}", {})
                up = pct(t["bytes"], cls.get("bytes_out", t["bytes"]))
                z = pct(t["bytes"], zstd19(b))
                l = lmz(b, tmp)
                lz = None if l is None else pct(t["bytes"], l)
                bound = None if t["bound"] is None else pct(t["bytes"], t["bound"])
                rows.append((name, t["type"], t["tensors"], t["bytes"], up, z, lz, bound))
                os.remove(b)
            zf = pct(s["bytes_in"], zstd19(f))
            lf = lmz(f, tmp)
            lf = None if lf is None else pct(s["bytes_in"], lf)
            gibs = bench[0]["median_gib_s"]
            st = gguf_to_safetensors(f, f"{tmp}/same.safetensors")
            st_pct = None
            if st:
                ss = json.loads(run([a.upg, "pack", st, "-o", arch, "--json", "-q", "--force"]))
                st_pct = pct(ss["bytes_in"], ss["bytes_out"])
                os.remove(st)
            whole.append((name, s["bytes_in"], pct(s["bytes_in"], s["bytes_out"]), zf, lf, gibs, st_pct))
            print(f"done {name}", file=sys.stderr)
    print("| file | type | tensors | MiB | upg saved % | zstd -19 saved % | lmz saved % | order-0 bound % | upg / zstd | upg to bound (points) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, ty, n, b, up, z, lz, bound in rows:
        ratio = f"{up / z:.2f}x" if z > 0.005 else "-"
        gap = "-" if bound is None else f"{bound - up:.2f}"
        print(f"| {name} | {ty} | {n} | {b / 2**20:.2f} | {up:.2f} | {z:.2f} | {fmt(lz)} | {fmt(bound)} | {ratio} | {gap} |")
    print()
    print("| file | MiB | upg saved % | zstd -19 saved % | lmz saved % | same tensors as safetensors, upg saved % | upg decode GiB/s, 1 thread |")
    print("|---|---|---|---|---|---|---|")
    for name, b, up, z, lz, gibs, stp in whole:
        print(f"| {name} | {b / 2**20:.2f} | {up:.2f} | {z:.2f} | {fmt(lz)} | {fmt(stp)} | {gibs:.2f} |")
    if st_saved is not None:
        print(f"\nsafetensors {a.safetensors}: upg saved {st_saved:.2f}%")


if __name__ == "__main__":
    main()
