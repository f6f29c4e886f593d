#!/usr/bin/env python3
"""Sequential-read sweep of the mount's read-ahead settings (issue 9 item 3, issue 11 cold load).

usage: read_sweep.py --upg target/release/upg --work DIR [--layers 6] [--shards 2] [--runs 3]
                     [--configs 1024:2M,1024:auto,4096:auto,16384:auto] [--archive A.upg]

Makes a Phi-4-shaped model with fewer layers (make_phi4.py; synthetic weights: speed only), packs
it losslessly (or takes --archive), then for each config KIB:DECODE (the mount's --readahead-kb
and --decode-ahead; `auto` = the default) reads the largest shard through a fresh mount:
  warm: the archive in page cache, the mount fresh (so its own page cache is empty): dd bs=16M,
        median of --runs; against the plain shard from page cache (same run)
  cold: drop_caches, fresh mount, one dd; against the plain shard cold
  mmap: drop_caches, fresh mount, safetensors.safe_open(..., framework='np') reading every tensor
        (page-fault driven reads through the mount), against plain cold
Prints one line per measurement with its command. `upg mount` stands in for upg-mount.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def log(*a):
    print(*a, flush=True)


def drop():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def dd(path):
    t = time.perf_counter()
    subprocess.run(["dd", "bs=16M", f"if={path}", "of=/dev/null", "status=none"], check=True)
    return time.perf_counter() - t


MMAP = (
    "import sys,time\nfrom safetensors import safe_open\nt=time.perf_counter();n=0\n"
    "with safe_open(sys.argv[1],'np') as g:\n"
    "  for k in g.keys(): n+=g.get_tensor(k).nbytes\n"
    "print(time.perf_counter()-t, n)"
)


def mmap_read(path):
    out = subprocess.run([sys.executable, "-c", MMAP, path], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"safe_open failed:\n{out.stderr[-1500:]}")
    return float(out.stdout.split()[0])


class Mount:
    def __init__(self, upg, archive, mnt, ra_kb, decode):
        self.mnt = mnt
        os.makedirs(mnt, exist_ok=True)
        cmd = [upg, "mount", archive, mnt, "--readahead-kb", str(ra_kb)]
        if decode != "auto":
            cmd += ["--decode-ahead", decode]
        subprocess.run(cmd, check=True)
        self.cmd = " ".join(cmd)

    def close(self):
        subprocess.run(["umount", self.mnt], check=False)
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upg", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--configs", default="1024:2M,1024:auto,4096:auto,16384:auto")
    ap.add_argument("--archive")
    ap.add_argument("--no-mmap", action="store_true")
    a = ap.parse_args()
    w = a.work
    os.makedirs(w, exist_ok=True)
    model = os.path.join(w, "model")
    archive = a.archive or os.path.join(w, "model.upg")
    if not a.archive:
        if not os.path.isdir(model):
            subprocess.run([sys.executable, os.path.join(HERE, "make_phi4.py"), model,
                            "--layers", str(a.layers), "--shards", str(a.shards)], check=True)
        t = time.perf_counter()
        subprocess.run([a.upg, "pack", model, "-o", archive, "--force", "-q"], check=True)
        log(f"pack: {time.perf_counter() - t:.2f} s  [{a.upg} pack {model} -o {archive}]")
    shards = sorted(f for f in os.listdir(model) if f.endswith(".safetensors"))
    shard = max(shards, key=lambda f: os.path.getsize(os.path.join(model, f)))
    plain = os.path.join(model, shard)
    gib = os.path.getsize(plain) / 2**30
    log(f"machine: {os.uname().nodename} {os.cpu_count()} cores; shard {shard} {gib:.2f} GiB; "
        f"archive {os.path.getsize(archive) / 2**30:.2f} GiB")
    # plain references, same run
    dd(plain)
    pw = statistics.median(dd(plain) for _ in range(a.runs))
    drop()
    pc = dd(plain)
    pm = None
    if not a.no_mmap:
        drop()
        pm = mmap_read(plain)
    log(f"plain: warm {gib / pw:.2f} GiB/s  cold {gib / pc:.2f} GiB/s"
        + (f"  mmap-cold {pm:.2f} s" if pm else ""))
    mnt = os.path.join(w, "mnt")
    for cfg in a.configs.split(","):
        ra, dec = cfg.split(":")
        with open(archive, "rb") as f:  # archive into page cache
            while f.read(64 << 20):
                pass
        ws = []
        for _ in range(a.runs):
            m = Mount(a.upg, archive, mnt, ra, dec)
            ws.append(dd(os.path.join(mnt, shard)))
            m.close()
        warm = statistics.median(ws)
        drop()
        m = Mount(a.upg, archive, mnt, ra, dec)
        cold = dd(os.path.join(mnt, shard))
        m.close()
        line = (f"  readahead_kb={ra} decode_ahead={dec}: warm {gib / warm:.2f} GiB/s "
                f"({pw / warm:.2f}x plain)  cold {gib / cold:.2f} GiB/s ({pc / cold:.2f}x plain)")
        if not a.no_mmap:
            drop()
            m = Mount(a.upg, archive, mnt, ra, dec)
            mm = mmap_read(os.path.join(mnt, shard))
            m.close()
            line += f"  mmap-cold {mm:.2f} s ({mm / pm:.2f}x plain time)"
        log(line + f"    [{m.cmd}; dd bs=16M]")


if __name__ == "__main__":
    main()
