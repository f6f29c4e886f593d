#!/usr/bin/env bash
# GPU-host run of issue 11's llama.cpp checks with GGUF-aware packing (docs/GGUF.md): build the
# llama.cpp tools, make ref-llama-38m's F16 and Q4_K_M GGUFs with llama.cpp's own converter and
# quantizer, report each one's size packed by upg against zstd -19, then
# scripts/gguf/llama-through-mount.sh (perplexity 4 ways, greedy output, cold load time, and
# convert_hf_to_gguf.py through a mount of the HF directory).
# usage (device, repo root): CARRY=.carry/ll scripts/device/llama_mount.sh   results under $OUT
# CARRY holds: upg.xz (stripped release binary; `upg mount` stands in for upg-mount),
#   ref-llama-38m.upg (lossless pack of the model, unpacked here), llama.cpp-trim.tar.xz (the sdist's
#   vendor/llama.cpp without models/ docs/ media/ benches/ and the non-CPU ggml backends),
#   wikitext-2-raw-test.txt.  env: CHUNKS (perplexity chunks, default all), TYPES (default: all
#   six quantized types of make-gguf-set.sh).  The built tools go to $OUT/llama-built.tar.xz too
#   (bin/ and src/), for later runs that carry them instead of building (scripts/device/gguf_load.sh).
set -uo pipefail
C=$(realpath "${CARRY:-.carry/ll}"); S=$(cd "$(dirname "$0")/.." && pwd); W=/root/w; mkdir -p $W/g
log() { echo "== $(date +%T) $*"; }
xz -dc $C/upg.xz > $W/upg && chmod +x $W/upg
printf '#!/bin/sh\nexec %s mount "$@"\n' $W/upg > $W/upg-mount && chmod +x $W/upg-mount
$W/upg unpack $C/ref-llama-38m.upg -o $W/ref-llama-38m -q || exit 1
log build; bash $S/gguf/build-llama.sh $W/llama $C/llama.cpp-trim.tar.xz > $W/build.log 2>&1 || { tail -30 $W/build.log; exit 1; }
tar -C $W/llama -cJf $OUT/llama-built.tar.xz bin src
log gguf; bash $S/gguf/make-gguf-set.sh $W/ref-llama-38m $W/llama/src $W/llama/bin $W/g 2>&1 | tail -4
# BF16 kept: every file of the set goes through the mount
log sizes
for g in $W/g/*.gguf; do
  mkdir -p $W/p && rm -rf $W/p/* && cp $g $W/p/ && $W/upg pack $W/p -o $W/p.upg -q --force
  a=$(stat -c %s $g); u=$(stat -c %s $W/p.upg); z=$(command -v zstd >/dev/null && zstd -19 -T16 -q -c $g | wc -c || echo 0)
  echo "SIZE $(basename $g) bytes=$a upg=$u ($(awk "BEGIN{printf \"%.2f\", 100*(1-$u/$a)}")% saved) zstd-19=$z ($(awk "BEGIN{printf \"%.2f\", 100*(1-$z/$a)}")% saved)"
  $W/upg inspect $W/p.upg | grep -E "^  (F16|F32|BF16|Q[0-9])" | head -5
done | tee $OUT/sizes.txt
log through-mount
TEXT=$C/wikitext-2-raw-test.txt HF_DIR=$W/ref-llama-38m CONVERT_DIR=$W/llama/src RESULTS=$OUT/results.tsv \
  bash $S/gguf/llama-through-mount.sh $W/llama/bin $W $W/g/*.gguf > $W/ltm.log 2>&1; echo "exit $?"
grep -E "RESULT|FAIL" $W/ltm.log | cut -c1-300; cp $W/ltm.log $OUT/
log done
