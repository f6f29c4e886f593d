#!/usr/bin/env bash
# A/B mount read benchmark of two upg-mount builds in one run, alternating: each round mounts
# BEFORE then AFTER, each measure on a fresh mount of the same archive (archive in page cache):
#   - sequential cold read of FILE (1 MiB read(2) calls) and the daemon CPU (utime + stime) it took
#   - warm re-read of FILE on the same mount (page cache: the kernel answers, not the daemon)
#   - 300 random 4 KiB-1 MiB preads, each cold (POSIX_FADV_DONTNEED before it), and daemon CPU
# Prints the medians and every sample. Alternating rounds spread other processes' load over both
# builds (scripts/bench-mount.sh measures the builds one after the other, with more figures).
# Usage: scripts/bench-mount-ab.sh BEFORE_DIR AFTER_DIR ARCHIVE FILE_IN_ARCHIVE [ROUNDS=3]
#   (*_DIR hold an upg-mount binary; root and /dev/fuse; python3)
set -euo pipefail
B=${1:?usage: bench-mount-ab.sh BEFORE_DIR AFTER_DIR ARCHIVE FILE [ROUNDS]}; A=${2:?}; ARCH=${3:?}; F=${4:?}; REPS=${5:-3}
W=$(mktemp -d /tmp/upg-ab.XXXXXX); M=$W/mnt; mkdir -p "$M"
trap 'mountpoint -q "$M" && umount -l "$M"; rm -rf "$W"' EXIT
cat > "$W/rd.py" <<'PY'
import os, random, sys, time
mode, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
if mode == "seq":
    n = 0; t = time.perf_counter()
    while True:
        b = os.read(fd, 1 << 20)
        if not b: break
        n += len(b)
    print(f"{n / (time.perf_counter() - t) / 2**30:.3f}")
else:
    size = os.fstat(fd).st_size; rng = random.Random(42); n = 0; t = time.perf_counter()
    for _ in range(300):
        ln = rng.randint(4096, 1 << 20); off = rng.randrange(0, max(1, size - ln))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        n += len(os.pread(fd, ln, off))
    print(f"{n / (time.perf_counter() - t) / 2**20:.0f}")
PY
cpums() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
start() { "$1/upg-mount" "$ARCH" "$M" -f >/dev/null 2>&1 & P=$!
  for _ in $(seq 400); do mountpoint -q "$M" && return 0; sleep 0.05; done; echo "mount failed" >&2; exit 1; }
stop() { for _ in 1 2 3 4 5; do umount "$M" 2>/dev/null && break; sleep 0.2; done; wait "$P" || true; }
cat "$ARCH" >/dev/null
declare -A S R WM SC RC
for l in before after; do S[$l]=""; R[$l]=""; WM[$l]=""; SC[$l]=""; RC[$l]=""; done
for r in $(seq "$REPS"); do
  for l in before after; do
    d=$B; [ $l = after ] && d=$A
    start "$d"; c=$(cpums $P); s=$(python3 "$W/rd.py" seq "$M/$F"); SC[$l]+=" $(( $(cpums $P) - c ))"
    S[$l]+=" $s"; WM[$l]+=" $(python3 "$W/rd.py" seq "$M/$F")"; stop
    start "$d"; c=$(cpums $P); R[$l]+=" $(python3 "$W/rd.py" rand "$M/$F")"; RC[$l]+=" $(( $(cpums $P) - c ))"; stop
  done
done
echo "A/B $(date -u +%FT%TZ) before=$B after=$A, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $REPS rounds, archive $ARCH, file $F"
for l in before after; do
  # shellcheck disable=SC2086
  echo "$l: seq cold $(median ${S[$l]}) GiB/s [${S[$l]} ], daemon CPU $(median ${SC[$l]}) ms; warm $(median ${WM[$l]}) GiB/s; random $(median ${R[$l]}) MiB/s [${R[$l]} ], daemon CPU $(median ${RC[$l]}) ms"
done
echo "rerun: scripts/bench-mount-ab.sh $B $A $ARCH $F $REPS"
