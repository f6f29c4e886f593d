#!/usr/bin/env bash
# Mount benchmarks in one run, on one model directory:
#   - FUSE ceiling: examples/noop_fs serving memcpy'd bytes of a file of the same size
#   - upg-mount: sequential cold read (fresh mount, archive in page cache), warm re-read,
#     random reads of 4 KiB-1 MiB, safetensors load (numpy, every tensor) vs the plain directory
#   - daemon peak RSS (VmHWM)
#   - squashfuse (mksquashfs -comp zstd -b 1M) on the same directory, if installable
# Usage: scripts/bench-mount.sh MODEL_DIR        (root, /dev/fuse, python3 with safetensors+numpy)
set -euo pipefail
MODEL=${1:?usage: scripts/bench-mount.sh MODEL_DIR}
MODEL=$(realpath "$MODEL")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/upg-bench.XXXXXX)
PIDS=()
cleanup() {
  for m in "$WORK"/mnt-*; do mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
cargo build --release --bins --examples -q
BIN=$ROOT/target/release
ST=$(ls -S "$MODEL"/*.safetensors | head -1)
STNAME=$(basename "$ST")
SIZE=$(stat -c %s "$ST")

cat > "$WORK/rd.py" <<'PY'
import os, random, sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode == "seq":
    fd = os.open(path, os.O_RDONLY); n = 0; t = time.perf_counter()
    while True:
        b = os.read(fd, 1 << 20)
        if not b: break
        n += len(b)
    dt = time.perf_counter() - t
    print(f"{n / dt / 2**30:.2f} GiB/s")
elif mode == "rand":
    fd = os.open(path, os.O_RDONLY); size = os.fstat(fd).st_size
    rng = random.Random(42); n = 0; k = 300; t = time.perf_counter()
    for _ in range(k):
        ln = rng.randint(4096, 1 << 20); off = rng.randrange(0, max(1, size - ln))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # keep every read cold
        n += len(os.pread(fd, ln, off))
    dt = time.perf_counter() - t
    print(f"{n / dt / 2**20:.0f} MiB/s, {k / dt:.0f} reads/s")
elif mode == "stload":
    import ml_dtypes  # noqa: F401  (numpy learns bfloat16)
    from safetensors import safe_open
    t = time.perf_counter(); n = 0
    with safe_open(path, framework="numpy") as f:
        for k in f.keys():
            n += f.get_tensor(k).nbytes
    print(f"{time.perf_counter() - t:.3f} s")
PY
rd() { python3 "$WORK/rd.py" "$@"; }
wait_mount() { for _ in $(seq 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "mount of $1 failed" >&2; exit 1; }
row() { printf '| %-46s | %-28s |\n' "$1" "$2"; }

echo "packing $MODEL ..." >&2
"$BIN/upg" pack "$MODEL" -o "$WORK/model.upg" >/dev/null
cat "$WORK/model.upg" "$ST" > /dev/null   # archive and original in page cache

declare -A R
# 1. FUSE ceiling.
mkdir "$WORK/mnt-noop"
"$ROOT/target/release/examples/noop_fs" "$ST" "$WORK/mnt-noop" & PIDS+=($!)
wait_mount "$WORK/mnt-noop"
R[noop]=$(rd seq "$WORK/mnt-noop/data")
umount "$WORK/mnt-noop"

# 2. upg-mount, fresh mount each time for cold figures.
mkdir "$WORK/mnt-upg"
start_upg() { "$BIN/upg-mount" "$WORK/model.upg" "$WORK/mnt-upg" -f & UPID=$!; PIDS+=($UPID); wait_mount "$WORK/mnt-upg"; }
start_upg
R[cold]=$(rd seq "$WORK/mnt-upg/$STNAME")
R[warm]=$(rd seq "$WORK/mnt-upg/$STNAME")
umount "$WORK/mnt-upg"; wait "$UPID" || true
start_upg
R[rand]=$(rd rand "$WORK/mnt-upg/$STNAME")
umount "$WORK/mnt-upg"; wait "$UPID" || true
start_upg
R[stmount]=$(rd stload "$WORK/mnt-upg/$STNAME")
R[rss]=$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$UPID/status)
umount "$WORK/mnt-upg"; wait "$UPID" || true
R[stdir]=$(rd stload "$ST")
R[plain]=$(rd seq "$ST")

# 3. squashfuse peer.
R[sqcold]="not installed"; R[sqst]="-"; R[sqsize]="-"
if ! command -v squashfuse >/dev/null || ! command -v mksquashfs >/dev/null; then
  (apt-get install -y -q squashfs-tools squashfuse >/dev/null 2>&1 || \
   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q squashfs-tools squashfuse >/dev/null 2>&1)) || true
fi
if command -v squashfuse >/dev/null && command -v mksquashfs >/dev/null; then
  mksquashfs "$MODEL" "$WORK/model.sqfs" -comp zstd -b 1M -noappend -quiet >/dev/null 2>&1
  cat "$WORK/model.sqfs" > /dev/null
  R[sqsize]=$(stat -c %s "$WORK/model.sqfs")
  mkdir "$WORK/mnt-sq"
  squashfuse "$WORK/model.sqfs" "$WORK/mnt-sq"; wait_mount "$WORK/mnt-sq"
  R[sqcold]=$(rd seq "$WORK/mnt-sq/$STNAME")
  umount "$WORK/mnt-sq"
  squashfuse "$WORK/model.sqfs" "$WORK/mnt-sq"; wait_mount "$WORK/mnt-sq"
  R[sqst]=$(rd stload "$WORK/mnt-sq/$STNAME")
  umount "$WORK/mnt-sq"
fi

UPG=$(stat -c %s "$WORK/model.upg")
echo
echo "Mount benchmark, $(date +%F), $(nproc) cores, $(uname -r)"
echo "model: $MODEL ($STNAME, $SIZE bytes); archive $UPG bytes; squashfs ${R[sqsize]} bytes"
echo
row "measure" "result"
row "----------------------------------------------" "----------------------------"
row "plain file, page cache (no FUSE)" "${R[plain]}"
row "FUSE ceiling: noop_fs, cold sequential" "${R[noop]}"
row "upg-mount sequential cold (fresh mount)" "${R[cold]}"
row "upg-mount warm re-read (page cache)" "${R[warm]}"
row "upg-mount random 4 KiB-1 MiB, cold" "${R[rand]}"
row "safetensors load, plain directory" "${R[stdir]}"
row "safetensors load, through upg-mount (fresh)" "${R[stmount]}"
row "upg-mount daemon peak RSS (VmHWM)" "${R[rss]}"
row "squashfuse (zstd, 1M) sequential cold" "${R[sqcold]}"
row "safetensors load, through squashfuse (fresh)" "${R[sqst]}"
echo
echo "rerun: scripts/bench-mount.sh $MODEL"
