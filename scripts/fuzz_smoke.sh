#!/usr/bin/env bash
# Short smoke run of every cargo-fuzz target (part of the README test command). Each target runs
# for FUZZ_SECONDS (default 20) from its seeds (fuzz/seeds/TARGET/) or an empty corpus with
# AddressSanitizer; a crash, panic, leak
# or timeout fails the run and leaves the reproducer in fuzz/artifacts/TARGET/. Long runs and
# their results: fuzz/README.md.
#
# cargo-fuzz needs nightly features; the stable toolchain here provides them with
# RUSTC_BOOTSTRAP=1. If cargo-fuzz cannot be installed (no registry, unsupported host), this
# prints SKIP and exits 0; a target that fails to build or run is a failure.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  if ! cargo install -q cargo-fuzz --version 0.13.2 --locked; then
    echo "SKIP fuzz smoke run: cargo-fuzz could not be installed"
    exit 0
  fi
fi
cargo fuzz build -O
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $(cargo fuzz list); do
  # -max_len: the index and codec targets need inputs of a few chunks' size to reach deep paths.
  # A target with seeds (seeds/TARGET/, e.g. a small real archive for open_read) starts from
  # them; new inputs go to corpus/TARGET/.
  dirs=()
  if [ -d "seeds/$t" ]; then
    mkdir -p "corpus/$t"
    dirs=("corpus/$t" "seeds/$t")
  fi
  rc=0
  cargo fuzz run -O "$t" ${dirs[@]+"${dirs[@]}"} -- -max_total_time="$secs" -max_len=70000 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed (exit $rc); reproducer in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz smoke $t: ${secs} s, ${runs:-?} runs, clean"
done
