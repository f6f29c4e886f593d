#!/usr/bin/env python3
"""Pack speed, old vs new binaries alternating: `bench_pack.py BIN1,BIN2 RUNS DIR...`.

For each directory, RUNS rounds of running each binary once in turn (`upg pack DIR -o OUT
--threads 2 --force`), timing the whole process with perf_counter and its CPU (user + system)
with getrusage; prints GiB/s of input and CPU ms per run with medians, and the load average.
Set UPG_BENCH_OUT to choose the archive path (default /tmp/upg-bench-pack.upg).
"""
import os
import resource
import statistics
import subprocess
import sys
import time

GIB = 2**30


def size(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def main():
    bins, runs, dirs = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3:]
    out = os.environ.get("UPG_BENCH_OUT", "/tmp/upg-bench-pack.upg")
    print("load before", open("/proc/loadavg").read().strip())
    for d in dirs:
        n = size(d)
        speed = {b: [] for b in bins}
        cpums = {b: [] for b in bins}
        for _ in range(runs):
            for b in bins:
                c, t = cpu(), time.perf_counter()
                subprocess.run([b, "pack", d, "-o", out, "--force", "--threads", "2"],
                               check=True, stdout=subprocess.DEVNULL)
                speed[b].append(n / (time.perf_counter() - t) / GIB)
                cpums[b].append(1000 * (cpu() - c))
        for b in bins:
            print(d, b, "GiB/s median %.3f" % statistics.median(speed[b]),
                  " ".join("%.3f" % x for x in speed[b]),
                  "| CPU ms median %.0f" % statistics.median(cpums[b]),
                  " ".join("%.0f" % x for x in cpums[b]))
    print("load after", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
