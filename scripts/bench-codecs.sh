#!/usr/bin/env bash
# Lossless codec benchmark: upg vs zstd -1 vs ZipNN on the real all-MiniLM-L6-v2 weights, FP32 as
# shipped and converted to BF16 (round-to-nearest-even), in one run. Prints a markdown table
# (docs/BENCHMARKS.md holds dated results). Usage: scripts/bench-codecs.sh [--runs N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
cargo build --release --bins -q
python3 -c "import zipnn, zstandard, numpy, safetensors, ml_dtypes" 2>/dev/null \
  || python3 -m pip install -q zipnn zstandard numpy safetensors ml-dtypes
src=$("$here/fetch_minilm.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$src/model.safetensors" "$work/minilm-f32.safetensors"
python3 "$here/make_minilm_bf16.py" "$src/model.safetensors" "$work/minilm-bf16.safetensors"
echo "# $(date -u +%F) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
python3 "$here/bench_codecs.py" target/release/upg "$work/minilm-f32.safetensors" "$work/minilm-bf16.safetensors" "$@"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
