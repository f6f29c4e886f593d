#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it):
#   1. cargo test --release: unit, property, reference-model, corruption, CLI and real-FUSE tests
#      (FUSE tests need /dev/fuse and root; they print SKIP otherwise)
#   2. the real-model test on all-MiniLM-L6-v2 (FP32 and BF16), downloaded once with pip
#   3. a 20 s smoke run of every cargo-fuzz target (scripts/fuzz_smoke.sh; installs cargo-fuzz)
#   then a summary: tests passed, failed and ignored (summed over cargo test's "test result:"
#   lines) and every SKIP with its test and reason (printed even when a step fails)
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp "${TMPDIR:-/tmp}/upg-test.XXXXXX")
summary() {
    local rc=$1
    # cargo's "test result: ok. 18 passed; 0 failed; 2 ignored; ..." lines, summed; the SKIP
    # lines tests print (shown by --show-output under "---- NAME stdout ----") with their test.
    awk -v rc="$rc" -v secs="$SECONDS" '
        /^---- .* stdout ----$/ { t = $2 }
        /^running [0-9]+ tests?$/ { t = "" }
        /test result:/ {
            t = ""
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) p += $(i - 1)
                if ($(i) ~ /^failed;?$/) f += $(i - 1)
                if ($(i) ~ /^ignored;?$/) g += $(i - 1)
            }
            runs++
        }
        /^(SKIP|skipping)/ {
            line = $0; sub(/^[^S]*SKIP:? ?/, "", line); sub(/^skipping /, "", line)
            if (t != "" && index(line, t ": ") == 1) line = substr(line, length(t) + 3)
            key = (t == "" ? "" : t ": ") line
            if (!(key in seen)) { seen[key] = 1; skips[++ns] = key }
        }
        END {
            printf "summary: %d passed, %d failed, %d ignored (%d cargo test binaries run); %d skipped at run time%s\n",
                p, f, g, runs, ns, (ns ? " (a skipped cargo test counts as passed):" : "")
            for (i = 1; i <= ns; i++) print "  SKIP " skips[i]
            if (rc != 0) print "summary: a step failed (exit " rc "); the counts above are up to it"
            printf "summary: took %dm%02ds\n", secs / 60, secs % 60
        }' "$log"
    rm -f "$log"
}
# Everything below is also copied to $log for the summary; the summary itself goes to the
# original stdout once tee has written the last line.
exec 3>&1 4>&2
exec > >(tee -a "$log") 2>&1
tee_pid=$!
trap 'rc=$?; exec >&3 2>&4; wait "$tee_pid" 2>/dev/null || true; summary "$rc"' EXIT
cargo build --release --bins
# tests/gguf.rs writes its GGUF with the PyPI gguf package (llama.cpp's gguf-py).
python3 -c "import gguf, numpy" 2>/dev/null || python3 -m pip install -q gguf==0.19.0 numpy
# tests/remote.rs starts a real S3-compatible server (moto's, SigV4 checked) on 127.0.0.1.
python3 -c "import moto.server, boto3, flask" 2>/dev/null || python3 -m pip install -q "moto[server]==5.2.1"
cargo test --release -- --test-threads=2 --show-output
# The codec tests once more per rANS path this CPU has, each forced with UPG_SIMD (the run above
# used the best one); a path the CPU lacks is named as not run.
paths=(scalar)
grep -qw avx2 /proc/cpuinfo && paths+=(avx2)
grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && paths+=(avx512)
for p in scalar avx2 avx512; do
    if [[ " ${paths[*]} " == *" $p "* ]]; then
        UPG_SIMD=$p cargo test --release --lib codec -- --test-threads=2 --show-output
        UPG_SIMD=$p cargo test --release --test roundtrip -- --test-threads=2 --show-output
        echo "codec tests passed with UPG_SIMD=$p"
    else
        echo "codec tests NOT run with UPG_SIMD=$p: this CPU lacks it"
    fi
done
scripts/real_model_test.sh target/release/upg
scripts/fuzz_smoke.sh
echo "all tests passed"
