#!/usr/bin/env bash
# Index at the largest scale (issue 9 item 4): open/inspect/mount time and daemon memory on an
# archive of millions of chunk records, with reads through the mount checked byte for byte.
#
#   cargo run --release --example huge_archive -- /tmp/huge.upg      # 5M chunks, ~400 MB file
#   scripts/bench-index.sh /tmp/huge.upg [BIN_DIR] [READS]
#
# BIN_DIR holds upg and upg-mount (default target/release; pass another build's to compare).
set -euo pipefail
ARCHIVE=${1:?usage: bench-index.sh ARCHIVE [BIN_DIR] [READS]}
BIN=${2:-target/release}
READS=${3:-300}
MNT=$(mktemp -d /tmp/upg-bench-index.XXXXXX)
echo "# $(date -u +%FT%TZ) $(nproc) cores; archive $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes); binaries $BIN"
cat "$ARCHIVE" > /dev/null # warm the page cache: measure the index code, not the disk

/usr/bin/time -v "$BIN/upg" inspect "$ARCHIVE" > /dev/null 2> /tmp/upg-bench-index.time
echo "inspect: wall $(grep 'Elapsed (wall' /tmp/upg-bench-index.time | awk '{print $NF}'), peak RSS $(grep 'Maximum resident' /tmp/upg-bench-index.time | awk '{print $NF}') KiB"

t0=$(date +%s.%N)
"$BIN/upg-mount" -f "$ARCHIVE" "$MNT" 2> /tmp/upg-bench-index.mountlog &
PID=$!
FIRST=model-00001-of-00005.bin
until stat "$MNT/$FIRST" > /dev/null 2>&1; do
    kill -0 $PID 2> /dev/null || { echo "mount died:"; cat /tmp/upg-bench-index.mountlog; exit 1; }
    sleep 0.01
done
t1=$(date +%s.%N)
echo "mount: mountpoint answers after $(echo "$t1 - $t0" | bc) s (process start to a successful stat)"
mem() { awk '/^VmRSS|^VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' /proc/$PID/status; echo; }
echo "daemon after mount:  $(mem)"
python3 - "$MNT" "$READS" << 'PY'
import os, struct, sys
mnt, reads = sys.argv[1], int(sys.argv[2])
CHUNK, SALT = 256 << 10, 0x9E3779B97F4A7C15
names = sorted(os.listdir(mnt))
sizes = [os.path.getsize(os.path.join(mnt, n)) for n in names]
first, k = [], 0
for s in sizes:
    first.append(k); k += s // CHUNK
rng = 0x2545F4914F6CDD1D
def nxt():
    global rng
    rng ^= (rng << 13) & (2**64 - 1); rng ^= rng >> 7; rng ^= (rng << 17) & (2**64 - 1)
    return rng
checked = 0
for r in range(reads):
    fi = nxt() % len(names); size = sizes[fi]; ln = 1 + nxt() % (600 << 10)
    off = [max(size - ln // 2, 0), max((nxt() % (size // CHUNK)) * CHUNK - min(ln, 4096) // 2, 0),
           nxt() % size, nxt() % size][r % 4]
    with open(os.path.join(mnt, names[fi]), 'rb') as f:
        f.seek(off); got = f.read(ln)
    assert len(got) == min(ln, size - off), (names[fi], off, len(got))
    # expected: chunk k holds the u64 (k ^ SALT) little-endian, repeated
    want = bytearray()
    p = off
    while p < off + len(got):
        c = p // CHUNK; end = min((c + 1) * CHUNK, off + len(got))
        pat = struct.pack('<Q', (first[fi] + c) ^ SALT)
        want += (pat * ((end - p) // 8 + 2))[p % 8:p % 8 + end - p]  # byte at p is pat[p % 8]
        p = end
    assert got == bytes(want), (names[fi], off, "wrong bytes")
    checked += len(got)
print(f"{reads} random reads through the mount ({len(names)} files), {checked} bytes, all equal to the expected content")
PY
echo "daemon after reads:  $(mem)"
umount "$MNT"
wait $PID || true
rmdir "$MNT"
