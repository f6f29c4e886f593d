#!/bin/bash
# Pack speed per thread count, binaries alternating within each round (issue 9 item 2).
#
# usage: scripts/bench_pack_threads.sh DIR BIN [BIN...]
#   env: THREADS="1 2" (thread counts), RUNS=3 (rounds), OUT=/dev/shm/upg-bench-threads.upg
#
# The input is read once first so it is in the page cache; the archive goes to OUT (tmpfs by
# default, so no disk limits the pack), removed before every run. Every run goes through
# /usr/bin/time, which reports wall seconds, CPU % (user + system over wall) and peak RSS; the
# script prints each run and the median of each (binary, threads) by wall time, with GiB/s of
# input, and the load average before and after.
set -euo pipefail
dir=$1
shift
threads=${THREADS:-1 2}
runs=${RUNS:-3}
out=${OUT:-/dev/shm/upg-bench-threads.upg}
bytes=$(find "$dir" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}')
find "$dir" -type f -exec cat {} + > /dev/null
echo "input $dir: $bytes bytes; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load before: $(cat /proc/loadavg)"
res=$(mktemp)
trap 'rm -f "$res" "$out"' EXIT
for r in $(seq "$runs"); do
    for t in $threads; do
        for b in "$@"; do
            rm -f "$out"
            m=$( { /usr/bin/time -f '%e %P %M' "$b" pack "$dir" -o "$out" -q --threads "$t" > /dev/null; } 2>&1 | tail -1)
            read -r wall cpu rss <<< "$m"
            gib=$(awk -v n="$bytes" -v w="$wall" 'BEGIN {printf "%.3f", n / w / 2^30}')
            echo "run $r: $b --threads $t: $wall s, $gib GiB/s, CPU $cpu, peak RSS $((rss / 1024)) MiB"
            echo "$b $t $wall $gib $cpu $rss" >> "$res"
        done
    done
done
echo "load after: $(cat /proc/loadavg)"
echo "medians of $runs (by wall time): binary, threads, wall s, GiB/s, CPU %, peak RSS MiB"
for t in $threads; do
    for b in "$@"; do
        awk -v b="$b" -v t="$t" '$1 == b && $2 == t' "$res" | sort -k3 -g |
            awk -v n="$runs" 'NR == int((n + 1) / 2) {printf "  %s  %s  %s  %s  %s  %d\n", $1, $2, $3, $4, $5, $6 / 1024}'
    done
done
