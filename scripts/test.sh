#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it):
#   1. cargo test --release: unit, property, reference-model, corruption, CLI and real-FUSE tests
#      (FUSE tests need /dev/fuse and root; they print SKIP otherwise)
#   2. the real-model test on all-MiniLM-L6-v2 (FP32 and BF16), downloaded once with pip
#   3. a 20 s smoke run of every cargo-fuzz target (scripts/fuzz_smoke.sh; installs cargo-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
# tests/gguf.rs writes its GGUF with the PyPI gguf package (llama.cpp's gguf-py).
python3 -c "import gguf, numpy" 2>/dev/null || python3 -m pip install -q gguf==0.19.0 numpy
cargo test --release -- --test-threads=2
scripts/real_model_test.sh target/release/upg
scripts/fuzz_smoke.sh
echo "all tests passed"
