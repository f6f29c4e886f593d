#!/usr/bin/env python3
"""Many-core scale benchmark (issue 9): pack, mount reads and model loads on a big model.

usage: bench_scale.py --upg target/release/upg --mount target/release/upg-mount --work DIR
                      [--small] [--runs 3] [--skip-load] [--pack-only] [--json OUT.json]
  --pack-only: stop after the pack measurements (no disk pack, mount or loads)

Makes the Phi-4-shaped model (make_phi4.py: 27.3 GiB, 6 shards, synthetic weights: speed and
scale only, never ratio) under DIR, then measures and prints, each with the command it ran:
  pack into /dev/shm (16 or all threads; median of --runs): GiB/s, CPU use, peak RSS
  one-thread SHA-256 speed (hashlib) and what it implies: a file's SHA-256 is sequential, so
    the largest shard's hashing time bounds any pack of the model
  pack thread scaling on the whole model and on one shard (1, 2, 4, ... threads): GiB/s,
    speed-up, CPU use, peak RSS
  pack onto DIR's disk against `dd conv=fsync` of the same number of bytes
  sequential reads through the mount (1 reader, 6 readers; archive in page cache; cold)
  against the plain files, safetensors load_file/safe_open to CUDA and from_pretrained
  (device_map="cuda") cold through the mount against plain (needs torch + transformers + a GPU)
Cold = `echo 3 > /proc/sys/vm/drop_caches` (root). Everything runs in one process so all
ratios come from the same run.
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = []


def log(*a):
    print(*a, flush=True)


def run(cmd, **kw):
    """Run a command; return (wall seconds, CPU seconds of the child, peak RSS in MiB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def record(what, value, unit, cmd, **extra):
    RESULTS.append({"what": what, "value": value, "unit": unit, "cmd": cmd, **extra})
    ex = "".join(f"  {k}={v}" for k, v in extra.items())
    log(f"  {what}: {value:.3f} {unit}{ex}    [{cmd}]")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass


def read_all(paths, parallel):
    """Read files sequentially in 16 MiB reads (one thread per file if parallel)."""
    cmd = ["dd", "bs=16M", "of=/dev/null", "status=none"]
    t0 = time.perf_counter()
    if parallel:
        ps = [subprocess.Popen(cmd + [f"if={p}"]) for p in paths]
        for p in ps:
            if p.wait() != 0:
                raise SystemExit("dd failed")
    else:
        for p in paths:
            subprocess.run(cmd + [f"if={p}"], check=True)
    return time.perf_counter() - t0


def size(paths):
    return sum(os.path.getsize(p) for p in paths)


def mount(upg_mount, archive, mnt):
    os.makedirs(mnt, exist_ok=True)
    subprocess.run([upg_mount, archive, mnt], check=True)
    pid = None
    for _ in range(100):
        out = subprocess.run(["pgrep", "-f", f"upg-mount {archive} {mnt}"], capture_output=True, text=True)
        if out.stdout.strip():
            pid = int(out.stdout.split()[0])
            break
        time.sleep(0.05)
    return pid


def umount(mnt):
    subprocess.run(["umount", mnt], check=False)
    time.sleep(0.3)


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def load_py(kind, path):
    code = {
        "from_pretrained": (
            "import torch,transformers,time,sys;t=time.perf_counter();"
            "m=transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1],device_map='cuda',torch_dtype=torch.bfloat16);"
            "torch.cuda.synchronize();print(time.perf_counter()-t)"
        ),
        "load_file": (
            "import torch,time,sys,glob;from safetensors.torch import load_file;t=time.perf_counter();"
            "[load_file(f,device='cuda') for f in sorted(glob.glob(sys.argv[1]+'/*.safetensors'))[:1]];"
            "torch.cuda.synchronize();print(time.perf_counter()-t)"
        ),
        "safe_open": (
            "import torch,time,sys,glob;from safetensors import safe_open;t=time.perf_counter();\n"
            "for f in sorted(glob.glob(sys.argv[1]+'/*.safetensors'))[:1]:\n"
            "  with safe_open(f,'pt',device='cuda') as g:\n"
            "    [g.get_tensor(k) for k in g.keys()]\n"
            "torch.cuda.synchronize();print(time.perf_counter()-t)"
        ),
    }[kind]
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upg", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--pack-only", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    upg, upg_mount = os.path.abspath(a.upg), os.path.abspath(a.mount)
    ncpu = os.cpu_count()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) / 2**20 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    log(f"machine: {platform.node()} {cpu}, {ncpu} cores, {mem:.0f} GiB RAM, kernel {platform.release()}")
    log(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: {' '.join(sys.argv)}")

    model = os.path.join(a.work, "model")
    if not os.path.exists(os.path.join(model, "config.json")):
        t = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(HERE, "make_phi4.py"), model] + (["--small"] if a.small else []), check=True)
        log(f"  model made in {time.perf_counter() - t:.1f} s")
    shards = sorted(glob.glob(os.path.join(model, "*.safetensors")))
    nbytes = size(glob.glob(os.path.join(model, "*")))
    gib = nbytes / 2**30
    warm(shards)

    log("pack into /dev/shm (input in page cache)")
    shm = "/dev/shm/upg-bench-scale.upg"
    walls = []
    for _ in range(a.runs):
        cmd = [upg, "pack", model, "-o", shm, "--force", "-q", "--threads", str(ncpu)]
        w, c, r = run(cmd)
        walls.append((w, c, r))
    w, c, r = sorted(walls)[len(walls) // 2]
    record("pack to tmpfs", gib / w, "GiB/s", " ".join(cmd), seconds=round(w, 2),
           cpu_cores=round(c / w, 2), busy_pct=round(100 * c / w / ncpu), rss_mib=round(r))
    asize = os.path.getsize(shm)
    log(f"  archive {asize / 2**30:.2f} GiB of {gib:.2f} GiB")

    log("SHA-256, one thread (hashlib), largest shard from page cache")
    big = max(shards, key=os.path.getsize)
    t0, h = time.perf_counter(), hashlib.sha256()
    with open(big, "rb") as f:
        while b := f.read(16 << 20):
            h.update(b)
    ts = time.perf_counter() - t0
    gb = os.path.getsize(big) / 2**30
    record("sha256 one thread", gb / ts, "GiB/s", f"hashlib.sha256 of {os.path.basename(big)}",
           largest_shard_s=round(ts, 2), pack_bound_gib_s=round(gib / ts, 2))

    for what, inp in (("whole model", model), ("one shard", shards[0])):
        log(f"pack thread scaling ({what} into /dev/shm)")
        n = gib if inp == model else os.path.getsize(inp) / 2**30
        base = None
        t = 1
        while t <= ncpu:
            cmd = [upg, "pack", inp, "-o", "/dev/shm/upg-one.upg", "--force", "-q", "--threads", str(t)]
            w, c, r = run(cmd)
            g = n / w
            base = base or g
            record(f"pack {what}, {t} threads", g, "GiB/s", " ".join(cmd), speedup=round(g / base, 2),
                   cpu_cores=round(c / w, 2), rss_mib=round(r))
            t = t * 2 if t * 2 <= ncpu or t == ncpu else ncpu
        os.remove("/dev/shm/upg-one.upg")
    if a.pack_only:
        os.remove(shm)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(RESULTS, f, indent=1)
        return

    log("pack onto the disk of --work, against dd conv=fsync of the same bytes")
    disk = os.path.join(a.work, "model.upg")
    # dd first and removed before the pack: the disk need not hold both (64 GiB on the GPU host).
    ddcmd = ["dd", "if=/dev/zero", f"of={a.work}/dd.bin", "bs=16M", f"count={asize // (16 << 20)}", "conv=fsync", "status=none"]
    wd, _, _ = run(ddcmd)
    os.remove(f"{a.work}/dd.bin")
    cmd = [upg, "pack", model, "-o", disk, "--force", "-q"]
    w, _, _ = run(cmd)
    record("pack to disk", w, "s", " ".join(cmd), dd_fsync_s=round(wd, 2), ratio_vs_dd=round(w / wd, 2))
    os.remove(shm)

    mnt = os.path.join(a.work, "mnt")
    log("reads through the mount (archive in page cache) against the plain files in page cache")
    warm([disk])
    pid = mount(upg_mount, disk, mnt)
    mshards = [os.path.join(mnt, os.path.basename(s)) for s in shards]
    tm = read_all(mshards[:1], False)
    warm(shards[:1])
    tp = read_all(shards[:1], False)
    g1 = size(shards[:1]) / 2**30
    record("1 reader, mount", g1 / tm, "GiB/s", f"dd bs=16M if=MNT/{os.path.basename(shards[0])}", plain=round(g1 / tp, 2), ratio=round(tp / tm, 2))
    umount(mnt)
    pid = mount(upg_mount, disk, mnt)
    tm = read_all(mshards, True)
    tp = read_all(shards, True)
    gall = size(shards) / 2**30
    record(f"{len(shards)} readers, mount", gall / tm, "GiB/s", "dd bs=16M, one per shard, at once", plain=round(gall / tp, 2), ratio=round(tp / tm, 2), daemon_rss_mib=round(rss_mib(pid)))
    umount(mnt)

    log("cold: page cache dropped")
    pid = mount(upg_mount, disk, mnt)
    drop_caches()
    tm = read_all(mshards[:1], False)
    drop_caches()
    tp = read_all(shards[:1], False)
    record("1 reader cold, mount", g1 / tm, "GiB/s", "drop_caches; dd bs=16M", plain=round(g1 / tp, 2), ratio=round(tp / tm, 2))
    umount(mnt)

    if not a.skip_load:
        for kind in ("load_file", "safe_open", "from_pretrained"):
            pid = mount(upg_mount, disk, mnt)
            drop_caches()
            tm = load_py(kind, mnt)
            umount(mnt)
            drop_caches()
            tp = load_py(kind, model)
            record(f"{kind} cold, mount", tm, "s", f"{kind} to cuda (first shard)" if kind != "from_pretrained" else "from_pretrained(device_map='cuda')", plain_s=round(tp, 2), ratio=round(tm / tp, 2))

    log("upg bench (decode threads scaling, one-shard archive)")
    one_a = os.path.join(a.work, "one.upg")
    run([upg, "pack", one, "-o", one_a, "--force", "-q"])
    threads = ",".join(str(1 << i) for i in range(ncpu.bit_length()) if (1 << i) <= ncpu)
    out = subprocess.run([upg, "bench", one_a, "--threads", threads, "--runs", "3", "--json"], capture_output=True, text=True, check=True)
    log(out.stdout.strip())
    RESULTS.append({"what": "upg bench", "json": out.stdout})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
