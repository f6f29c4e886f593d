#!/usr/bin/env bash
# External-drive case: the model directory and its .upg archive on a slow block device; load every
# tensor (safetensors, numpy) from the plain directory and through upg-mount, page cache dropped
# before each load. The "drive" is a loop device on an image file, with an ext4 file system,
# throttled to RATE bytes/s of reads by the cgroup v1 blkio controller
# (blkio.throttle.read_bps_device of the root cgroup; cgroup v2 io.max is used instead where the
# unified hierarchy has the io controller). Loop with direct I/O, so the image's own page cache
# cannot serve reads past the throttle.
# Usage: scripts/bench-drive.sh MODEL_DIR   (root; losetup, mkfs.ext4, python3 safetensors+ml_dtypes)
# Env: RATE (200000000 = 200 MB/s), REPS (3).
set -euo pipefail
MODEL=$(realpath "${1:?usage: scripts/bench-drive.sh MODEL_DIR}")
RATE=${RATE:-200000000}
REPS=${REPS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/upg-drive.XXXXXX)
LOOP=""; THROTTLE=""; UPID=""
cleanup() {
  mountpoint -q "$WORK/mnt" 2>/dev/null && umount -l "$WORK/mnt" || true
  [ -n "$UPID" ] && kill "$UPID" 2>/dev/null || true
  [ -n "$THROTTLE" ] && echo "$THROTTLE" > "$TFILE" 2>/dev/null || true
  mountpoint -q "$WORK/drive" 2>/dev/null && umount -l "$WORK/drive" || true
  [ -n "$LOOP" ] && losetup -d "$LOOP" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$ROOT"
cargo build --release --bins -q
BIN=$ROOT/target/release
ST=$(ls -S "$MODEL"/*.safetensors | head -1); STNAME=$(basename "$ST")
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# The drive: image of model + archive + 50% slack.
"$BIN/upg" pack "$MODEL" -o "$WORK/model.upg" >/dev/null
need=$(( ($(du -sb "$MODEL" | cut -f1) + $(stat -c %s "$WORK/model.upg")) * 3 / 2 + (64 << 20) ))
truncate -s "$need" "$WORK/drive.img"
LOOP=$(losetup -f --show --direct-io=on "$WORK/drive.img")
mkfs.ext4 -q -F "$LOOP"
mkdir "$WORK/drive" "$WORK/mnt"
mount "$LOOP" "$WORK/drive"
cp -r "$MODEL" "$WORK/drive/model"
mv "$WORK/model.upg" "$WORK/drive/model.upg"
sync
DEV=$(lsblk -dno MAJ:MIN "$LOOP" | tr -d ' ')

# Throttle reads of the loop device.
if [ -w /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device ]; then
  TFILE=/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device
  echo "$DEV $RATE" > "$TFILE"; THROTTLE="$DEV 0"; HOW="cgroup v1 blkio.throttle.read_bps_device"
elif grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  # v2: the root cgroup takes no io.max; use a child and run the readers in it.
  mkdir -p /sys/fs/cgroup/upg-drive; echo "+io" > /sys/fs/cgroup/cgroup.subtree_control || true
  TFILE=/sys/fs/cgroup/upg-drive/io.max
  echo "$DEV rbps=$RATE" > "$TFILE"; THROTTLE="$DEV rbps=max"; HOW="cgroup v2 io.max"
  echo $$ > /sys/fs/cgroup/upg-drive/cgroup.procs
else
  echo "no blkio/io controller: cannot throttle" >&2; exit 1
fi

cat > "$WORK/load.py" <<'PY'
import sys, time
import ml_dtypes  # noqa: F401
from safetensors import safe_open
t = time.perf_counter()
with safe_open(sys.argv[1], framework="numpy") as f:
    for k in f.keys():
        f.get_tensor(k)
print(f"{time.perf_counter() - t:.3f}")
PY
cat > "$WORK/seq.py" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY); t = time.perf_counter()
while os.read(fd, 1 << 20): pass
print(f"{time.perf_counter() - t:.3f}")
PY
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
start_upg() {
  "$BIN/upg-mount" "$WORK/drive/model.upg" "$WORK/mnt" -f & UPID=$!
  for _ in $(seq 400); do mountpoint -q "$WORK/mnt" && return 0; sleep 0.05; done; exit 1
}
stop_upg() {   # retried: a process scanning /tmp can hold the mount busy for a moment
  for _ in 1 2 3 4 5; do umount "$WORK/mnt" 2>/dev/null && break; sleep 0.2; done
  mountpoint -q "$WORK/mnt" && umount -l "$WORK/mnt"; wait "$UPID" || true; UPID=""; }

# Raw drive speed: dd of the archive with direct I/O.
drop
RAW=$(dd if="$WORK/drive/model.upg" of=/dev/null bs=1M iflag=direct 2>&1 | awk -F', ' '/copied/ {print $NF}')
plain=(); upg=(); pseq=(); useq=()
for _ in $(seq "$REPS"); do
  drop; plain+=("$(python3 "$WORK/load.py" "$WORK/drive/model/$STNAME")")
  start_upg; drop; upg+=("$(python3 "$WORK/load.py" "$WORK/mnt/$STNAME")"); stop_upg
  drop; pseq+=("$(python3 "$WORK/seq.py" "$WORK/drive/model/$STNAME")")
  start_upg; drop; useq+=("$(python3 "$WORK/seq.py" "$WORK/mnt/$STNAME")"); stop_upg
done
P=$(median "${plain[@]}"); U=$(median "${upg[@]}")
PS=$(median "${pseq[@]}"); US=$(median "${useq[@]}")
echo
echo "External-drive benchmark, $(date +%F), $(nproc) cores, $(uname -r), medians of $REPS"
echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "drive: loop device (direct I/O) + ext4, reads throttled to $RATE B/s ($HOW); measured $RAW (dd, O_DIRECT)"
echo "model: $STNAME $(stat -c %s "$ST") bytes; archive $(stat -c %s "$WORK/drive/model.upg") bytes"
echo
printf '| %-44s | %-10s | %-24s |\n' "measure (page cache dropped before each)" "median" "runs"
printf '| %-44s | %-10s | %-24s |\n' "--------------------------------------------" "----------" "------------------------"
printf '| %-44s | %-10s | %-24s |\n' "safetensors load, plain directory" "$P s" "${plain[*]}"
printf '| %-44s | %-10s | %-24s |\n' "safetensors load, through upg-mount" "$U s" "${upg[*]}"
printf '| %-44s | %-10s | %-24s |\n' "upg / plain" "$(awk -v a="$U" -v b="$P" 'BEGIN{printf "%.2fx", a/b}')" ""
printf '| %-44s | %-10s | %-24s |\n' "sequential read, plain directory" "$PS s" "${pseq[*]}"
printf '| %-44s | %-10s | %-24s |\n' "sequential read, through upg-mount" "$US s" "${useq[*]}"
printf '| %-44s | %-10s | %-24s |\n' "upg / plain" "$(awk -v a="$US" -v b="$PS" 'BEGIN{printf "%.2fx", a/b}')" ""
echo
echo "rerun: RATE=$RATE REPS=$REPS scripts/bench-drive.sh $MODEL"
