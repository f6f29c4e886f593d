#!/usr/bin/env python3
"""Lossless ratio and throughput of upg, zstd -1 and ZipNN on the same safetensors files, in one run.

Usage: bench_codecs.py UPG_BINARY FILE.safetensors [FILE.safetensors ...] [--runs N] [--json OUT]

For every file:
  - upg:   `upg pack FILE --threads 1` and `--threads 2` (wall time of the whole pack, including
           hashing and writing the archive), size of the archive file as written (index and
           footer included), and `upg bench` decode throughput with 1 and 2 threads.
  - zstd:  level 1 on the whole file (python `zstandard`, one thread), compress and decompress.
  - ZipNN: zipnn 0.5.4 with the file's float dtype, threads=1, compress and decompress; it
           overwrites its input buffer, so every call gets a private copy (copy time excluded).
Every tool's output is decompressed and compared with the input before its numbers count.
Sizes are % saved = 1 - compressed/original over the whole file. Throughputs are GiB/s of
original bytes, medians of --runs.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import zstandard

GIB = float(1 << 30)


def file_dtype(path):
    """The dtype that holds most of the file's tensor bytes (ZipNN needs one)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    by = {}
    for k, t in header.items():
        if k == "__metadata__":
            continue
        a, b = t["data_offsets"]
        by[t["dtype"]] = by.get(t["dtype"], 0) + (b - a)
    return max(by, key=by.get)


def timed(fn, runs):
    """Median seconds of `fn()` over `runs` calls; returns (median, last result)."""
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_upg(upg, path, data, runs, work):
    out = {}
    arc = os.path.join(work, "bench.upg")
    for threads in (1, 2):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            r = subprocess.run([upg, "pack", path, "-o", arc, "--force", "--threads", str(threads), "--json"],
                               check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        out[f"pack_{threads}t_gib_s"] = len(data) / statistics.median(times) / GIB
    summary = json.loads(r.stdout)
    assert summary["bytes_in"] == len(data), "upg packed a different number of bytes"
    out["size"] = os.path.getsize(arc)
    subprocess.run([upg, "verify", arc, "--against", path], check=True, capture_output=True)
    b = subprocess.run([upg, "bench", arc, "--threads", "1,2", "--runs", str(runs), "--json"],
                       check=True, capture_output=True)
    for row in json.loads(b.stdout):
        out[f"decode_{row['threads']}t_gib_s"] = row["median_gib_s"]
    return out


def bench_zstd(data, runs):
    c = zstandard.ZstdCompressor(level=1, threads=0)
    d = zstandard.ZstdDecompressor()
    tc, comp = timed(lambda: c.compress(data), runs)
    td, back = timed(lambda: d.decompress(comp, max_output_size=len(data)), runs)
    assert back == data, "zstd round trip differs"
    return {"size": len(comp), "pack_1t_gib_s": len(data) / tc / GIB, "decode_1t_gib_s": len(data) / td / GIB}


def bench_zipnn(data, dtype, runs):
    from zipnn import ZipNN

    zdt = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype]
    z = ZipNN(input_format="byte", bytearray_dtype=zdt, threads=1)
    tc, td = [], []
    comp = None
    for _ in range(runs):
        buf = bytearray(data)  # private copy: zipnn 0.5.4 overwrites its input
        t = time.perf_counter()
        comp = z.compress(buf)
        tc.append(time.perf_counter() - t)
    for _ in range(runs):
        cbuf = bytearray(comp)
        t = time.perf_counter()
        back = z.decompress(cbuf)
        td.append(time.perf_counter() - t)
    assert bytes(back) == data, "ZipNN round trip differs"
    return {"size": len(comp), "pack_1t_gib_s": len(data) / statistics.median(tc) / GIB,
            "decode_1t_gib_s": len(data) / statistics.median(td) / GIB}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("upg")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for path in a.files:
            with open(path, "rb") as f:
                data = f.read()
            dtype = file_dtype(path)
            name = os.path.basename(path)
            for tool, fn in (("upg", lambda: bench_upg(a.upg, path, data, a.runs, work)),
                             ("zstd -1", lambda: bench_zstd(data, a.runs)),
                             ("ZipNN 0.5.4", lambda: bench_zipnn(data, dtype, a.runs))):
                r = fn()
                r.update(file=name, dtype=dtype, tool=tool, original=len(data),
                         saved_pct=100.0 * (1 - r["size"] / len(data)))
                rows.append(r)
                print(f"  {name} {tool}: {r['saved_pct']:.3f}% saved", file=sys.stderr)

    def f(r, k):
        return f"{r[k]:.3f}" if k in r else "-"

    print("| file | dtype | tool | original bytes | compressed bytes | saved | pack 1t GiB/s "
          "| pack 2t GiB/s | decode 1t GiB/s | decode 2t GiB/s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['file']} | {r['dtype']} | {r['tool']} | {r['original']:,} | {r['size']:,} "
              f"| {r['saved_pct']:.3f}% | {f(r, 'pack_1t_gib_s')} | {f(r, 'pack_2t_gib_s')} "
              f"| {f(r, 'decode_1t_gib_s')} | {f(r, 'decode_2t_gib_s')} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
