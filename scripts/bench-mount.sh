#!/usr/bin/env bash
# Mount benchmarks in one run, on one model directory (medians of REPS runs, default 3):
#   - FUSE ceiling: examples/noop_fs serving memcpy'd bytes of the same file, measured right
#     before every cold read (the load of other processes changes within a run)
#   - upg-mount: sequential cold read (fresh mount, archive in page cache), warm re-read,
#     random reads of 4 KiB-1 MiB, safetensors load (numpy, every tensor) vs the plain directory,
#     daemon peak RSS (VmHWM), daemon CPU time of the cold sequential and random reads -- with the
#     defaults (cache 64 MiB, smaller than the model: shows the RSS bound) and with each set of
#     extra upg-mount arguments in VARIANTS (';'-separated)
#   - the same for a baseline build when UPG_BASE=DIR names a folder holding its upg-mount
#     (before/after in one run: e.g. a build of the previous commit)
#   - squashfuse (mksquashfs -comp zstd -b 1M) and lmz mount (PyPI lmzip), if installable
# Usage: scripts/bench-mount.sh MODEL_DIR   (root, /dev/fuse, python3 with safetensors+numpy+ml_dtypes)
# Env: REPS (3), VARIANTS ("--cache-size 1G;--readahead-kb 0"), UPG_BASE (unset), SKIP_PEERS=1 (no squashfuse/lmz).
set -euo pipefail
MODEL=${1:?usage: scripts/bench-mount.sh MODEL_DIR}
MODEL=$(realpath "$MODEL")
REPS=${REPS:-3}
VARIANTS=${VARIANTS:-"--cache-size 1G;--readahead-kb 0"}
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
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

cat > "$WORK/rd.py" <<'PY'
import os, random, sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode == "seq":      # prints GiB/s
    fd = os.open(path, os.O_RDONLY); n = 0; t = time.perf_counter()
    while True:
        b = os.read(fd, 1 << 20)
        if not b: break
        n += len(b)
    print(f"{n / (time.perf_counter() - t) / 2**30:.3f}")
elif mode == "rand":   # prints MiB/s reads/s
    fd = os.open(path, os.O_RDONLY); size = os.fstat(fd).st_size
    rng = random.Random(42); n = 0; k = 300; t = time.perf_counter()
    for _ in range(k):
        ln = rng.randint(4096, 1 << 20); off = rng.randrange(0, max(1, size - ln))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # keep every read cold
        n += len(os.pread(fd, ln, off))
    dt = time.perf_counter() - t
    print(f"{n / dt / 2**20:.0f} {k / dt:.0f}")
elif mode == "stload": # prints seconds
    import ml_dtypes  # noqa: F401  (numpy learns bfloat16)
    from safetensors import safe_open
    t = time.perf_counter(); n = 0
    with safe_open(path, framework="numpy") as f:
        for k in f.keys():
            n += f.get_tensor(k).nbytes
    print(f"{time.perf_counter() - t:.3f}")
PY
rd() { python3 "$WORK/rd.py" "$@"; }
# median of the arguments (first field of each), middle element after sorting
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'; }
wait_mount() { for _ in $(seq 400); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "mount of $1 failed" >&2; exit 1; }
row() { printf '| %-52s | %-26s |\n' "$1" "$2"; }
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
# daemon CPU time (user + system) in ms: less sensitive to other load than wall-clock rates
cpums() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"; }
# umount, retried: a process scanning /tmp can hold the mount busy for a moment; lazy at last.
unmount() { for _ in 1 2 3 4 5; do umount "$1" 2>/dev/null && return 0; sleep 0.2; done; umount -l "$1"; }

echo "packing $MODEL ..." >&2
"$BIN/upg" pack "$MODEL" -o "$WORK/model.upg" >/dev/null
cat "$WORK/model.upg" "$ST" > /dev/null   # archive and original in page cache

declare -A R
# One upg-mount configuration, REPS times: fresh mount for each cold figure.
# measure_upg LABEL MOUNT_BINARY [upg-mount args...]
measure_upg() {
  local label=$1 mbin=$2; shift 2
  local cold=() warm=() rmib=() rops=() st=() cpu=() rcpu=() nop=() rss=0 h c0
  mkdir -p "$WORK/mnt-upg"
  start() { "$mbin" "$WORK/model.upg" "$WORK/mnt-upg" -f "$@" & UPID=$!; PIDS+=($UPID); wait_mount "$WORK/mnt-upg"; }
  stop() { h=$(hwm "$UPID"); [ "$h" -gt "$rss" ] && rss=$h; unmount "$WORK/mnt-upg"; wait "$UPID" || true; }
  for _ in $(seq "$REPS"); do
    nop+=("$(noop_seq)")   # the ceiling right before each cold read: same load
    start "$@"; c0=$(cpums "$UPID"); cold+=("$(rd seq "$WORK/mnt-upg/$STNAME")"); cpu+=($(( $(cpums "$UPID") - c0 )))
    warm+=("$(rd seq "$WORK/mnt-upg/$STNAME")"); stop
    start "$@"; c0=$(cpums "$UPID"); read -r a b < <(rd rand "$WORK/mnt-upg/$STNAME")
    rmib+=("$a"); rops+=("$b"); rcpu+=($(( $(cpums "$UPID") - c0 ))); stop
    start "$@"; st+=("$(rd stload "$WORK/mnt-upg/$STNAME")"); stop
  done
  R[$label.cold]=$(median "${cold[@]}"); R[$label.warm]=$(median "${warm[@]}")
  R[$label.rand]="$(median "${rmib[@]}") MiB/s, $(median "${rops[@]}") reads/s"
  R[$label.st]=$(median "${st[@]}"); R[$label.rss]=$rss; R[$label.cpu]=$(median "${cpu[@]}")
  R[$label.rcpu]=$(median "${rcpu[@]}"); R[$label.noop]=$(median "${nop[@]}")
  ALLNOOP+=("${nop[@]}")
}

# 1. FUSE ceiling (also measured before every cold read below) and the plain file.
mkdir "$WORK/mnt-noop"
noop_seq() {
  "$BIN/examples/noop_fs" "$ST" "$WORK/mnt-noop" >/dev/null & NPID=$!
  wait_mount "$WORK/mnt-noop"
  rd seq "$WORK/mnt-noop/data"
  unmount "$WORK/mnt-noop"; wait "$NPID" || true
}
ALLNOOP=(); plain=(); stdir=()
for _ in $(seq "$REPS"); do plain+=("$(rd seq "$ST")"); stdir+=("$(rd stload "$ST")"); done
R[plain]=$(median "${plain[@]}"); R[stdir]=$(median "${stdir[@]}")

# 2. upg-mount: baseline build (if given), this build with defaults and with each variant.
LABELS=(); declare -A NAME
if [ -n "${UPG_BASE:-}" ]; then
  measure_upg base "$UPG_BASE/upg-mount"; LABELS+=(base); NAME[base]="baseline"
fi
measure_upg new "$BIN/upg-mount"; LABELS+=(new); NAME[new]="upg-mount"
IFS=';' read -r -a VARS <<< "$VARIANTS"
for i in "${!VARS[@]}"; do
  # shellcheck disable=SC2086  # the variant is a list of arguments
  measure_upg "v$i" "$BIN/upg-mount" ${VARS[$i]}; LABELS+=("v$i"); NAME[v$i]="${VARS[$i]}"
done

# 3. Peers: squashfuse and lmz mount (installed on demand; skipped with SKIP_PEERS=1).
R[sqcold]="not installed"; R[sqst]="-"; R[sqsize]="-"
R[lmzcold]="not installed"; R[lmzst]="-"; R[lmzsize]="-"
if [ -z "${SKIP_PEERS:-}" ]; then
  if ! command -v squashfuse >/dev/null || ! command -v mksquashfs >/dev/null; then
    (apt-get install -y -q squashfs-tools squashfuse >/dev/null 2>&1 || \
     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q squashfs-tools squashfuse >/dev/null 2>&1)) || true
  fi
  if command -v squashfuse >/dev/null && command -v mksquashfs >/dev/null; then
    mksquashfs "$MODEL" "$WORK/model.sqfs" -comp zstd -b 1M -noappend -quiet >/dev/null 2>&1
    cat "$WORK/model.sqfs" > /dev/null
    R[sqsize]=$(stat -c %s "$WORK/model.sqfs")
    mkdir "$WORK/mnt-sq"; c=(); s=()
    for _ in $(seq "$REPS"); do
      squashfuse "$WORK/model.sqfs" "$WORK/mnt-sq"; wait_mount "$WORK/mnt-sq"
      c+=("$(rd seq "$WORK/mnt-sq/$STNAME")"); unmount "$WORK/mnt-sq"
      squashfuse "$WORK/model.sqfs" "$WORK/mnt-sq"; wait_mount "$WORK/mnt-sq"
      s+=("$(rd stload "$WORK/mnt-sq/$STNAME")"); unmount "$WORK/mnt-sq"
    done
    R[sqcold]="$(median "${c[@]}") GiB/s"; R[sqst]="$(median "${s[@]}") s"
  fi
  # lmz (PyPI lmzip) mounts through fusermount3 (Debian fuse3).
  command -v lmz >/dev/null || pip install -q lmzip >/dev/null 2>&1 || true
  command -v fusermount3 >/dev/null || apt-get install -y -q fuse3 >/dev/null 2>&1 || true
  if command -v lmz >/dev/null && command -v fusermount3 >/dev/null; then
    lmz add "$MODEL" --store "$WORK/lmz" --name m -q >/dev/null 2>&1 || true
    R[lmzsize]=$(du -sb "$WORK/lmz" | cut -f1)
    cat $(find "$WORK/lmz" -type f) > /dev/null
    mkdir "$WORK/mnt-lmz"; c=(); s=()
    lmzmnt() { lmz mount --store "$WORK/lmz" -d -q "$WORK/mnt-lmz" >/dev/null 2>&1; wait_mount "$WORK/mnt-lmz"
               LF=$(find "$WORK/mnt-lmz" -name "$STNAME" | head -1); }
    for _ in $(seq "$REPS"); do
      lmzmnt; c+=("$(rd seq "$LF")"); unmount "$WORK/mnt-lmz"; sleep 0.5
      lmzmnt; s+=("$(rd stload "$LF")"); unmount "$WORK/mnt-lmz"; sleep 0.5
    done
    R[lmzcold]="$(median "${c[@]}") GiB/s"; R[lmzst]="$(median "${s[@]}") s"
  fi
fi

R[noop]=$(median "${ALLNOOP[@]}")
UPG=$(stat -c %s "$WORK/model.upg")
echo
echo "Mount benchmark, $(date +%F), $(nproc) cores, $(uname -r), medians of $REPS"
echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${UPG_BASE:-}" ] && echo "baseline: $UPG_BASE/upg-mount"
echo "model: $MODEL ($STNAME, $SIZE bytes); archive $UPG bytes; squashfs ${R[sqsize]} bytes; lmz store ${R[lmzsize]} bytes"
echo
row "measure" "result"
row "----------------------------------------------------" "--------------------------"
row "plain file, page cache (no FUSE)" "${R[plain]} GiB/s"
row "FUSE ceiling: noop_fs, cold sequential (all runs)" "${R[noop]} GiB/s"
row "safetensors load, plain directory" "${R[stdir]} s"
for l in "${LABELS[@]}"; do
  n=${NAME[$l]}
  row "$n: noop_fs ceiling, measured before each cold read" "${R[$l.noop]} GiB/s"
  row "$n: sequential cold (fresh mount)" "${R[$l.cold]} GiB/s ($(awk -v a="${R[$l.cold]}" -v b="${R[$l.noop]}" 'BEGIN{printf "%.0f", 100*a/b}')% of noop)"
  row "$n: daemon CPU for the sequential cold read" "${R[$l.cpu]} ms"
  row "$n: warm re-read (page cache)" "${R[$l.warm]} GiB/s"
  row "$n: random 4 KiB-1 MiB, cold" "${R[$l.rand]}"
  row "$n: daemon CPU for the random reads" "${R[$l.rcpu]} ms"
  row "$n: safetensors load (fresh mount)" "${R[$l.st]} s"
  row "$n: daemon peak RSS (VmHWM, max of runs)" "${R[$l.rss]} MiB"
done
row "squashfuse (zstd, 1M) sequential cold" "${R[sqcold]}"
row "safetensors load, through squashfuse (fresh)" "${R[sqst]}"
row "lmz mount sequential cold" "${R[lmzcold]}"
row "safetensors load, through lmz mount (fresh)" "${R[lmzst]}"
echo
echo "rerun: REPS=$REPS VARIANTS=\"$VARIANTS\"${UPG_BASE:+ UPG_BASE=$UPG_BASE} scripts/bench-mount.sh $MODEL"
