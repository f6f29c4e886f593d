#!/usr/bin/env bash
# GPU-host run for issue 11's load-time goal on a model big enough to time (a 76 MB GGUF loads in
# ~0.1 s, all process start-up): a 1.09e9-parameter Llama-shaped HF model with synthetic BF16
# weights (scripts/gguf/make_big_llama.py, ref-llama-38m's tokenizer), converted to F16 GGUF by
# llama.cpp's convert_hf_to_gguf.py, then scripts/gguf/llama-through-mount.sh on it: SHA-256
# through the mount, perplexity 4 ways on CHUNKS chunks (random weights: identity, not quality),
# greedy output, cold load time direct vs mount (mmap and --load-mode none, median of REPS), and
# convert_hf_to_gguf.py on the HF directory read through a mount, byte-identical to direct.
# Then, in the time left, scripts/scale/read_sweep.py (mount read-ahead settings).
# usage (device, repo root): CARRY=.carry/gl scripts/device/gguf_load.sh   results under $OUT
# CARRY holds: upg.xz, llama-built.tar.xz (bin/ src/ from scripts/device/llama_mount.sh) or
#   llama.cpp-trim.tar.xz (built here then, as llama_mount.sh does),
#   template/ (ref-llama-38m's config.json and tokenizer files), wikitext-2-raw-test.txt.
set -uo pipefail
C=$(realpath "${CARRY:-.carry/gl}"); S=$(cd "$(dirname "$0")/.." && pwd); W=/root/w; mkdir -p $W/g $W/llama
log() { echo "== $(date +%T) $*"; }
xz -dc $C/upg.xz > $W/upg && chmod +x $W/upg
printf '#!/bin/sh\nexec %s mount "$@"\n' $W/upg > $W/upg-mount && chmod +x $W/upg-mount
if [ -f $C/llama-built.tar.xz ]; then tar -C $W/llama -xJf $C/llama-built.tar.xz
else log build; bash $S/gguf/build-llama.sh $W/llama $C/llama.cpp-trim.tar.xz > $W/build.log 2>&1 || { tail -30 $W/build.log; exit 1; }; fi
log model; python3 $S/gguf/make_big_llama.py $C/template $W/big-llama ${BIG_ARGS:-} | tee $OUT/model.txt
log convert; conv=$(bash $S/gguf/patch-converter.sh $W/llama/src $W/conv gpt-2)
PYTHONPATH=$conv/gguf-py python3 $conv/convert_hf_to_gguf.py $W/big-llama --outtype f16 --outfile $W/g/big-llama-F16.gguf 2>&1 | tail -2
log through-mount
TEXT=$C/wikitext-2-raw-test.txt CHUNKS=${CHUNKS:-4} REPS=${REPS:-3} HF_DIR=$W/big-llama CONVERT_DIR=$W/llama/src \
  RESULTS=$OUT/results.tsv WORK=$W/ltm bash $S/gguf/llama-through-mount.sh $W/llama/bin $W $W/g/big-llama-F16.gguf > $OUT/ltm.log 2>&1; echo "exit $?"
grep -E "RESULT|FAIL|convert " $OUT/ltm.log | cut -c1-300
log sweep
rm -rf $W/ltm $W/big-llama
timeout ${SWEEP_S:-200} python3 $S/scale/read_sweep.py --upg $W/upg --work $W/sw --layers ${SWEEP_LAYERS:-6} --shards 2 \
  --configs ${SWEEP:-1024:2M,1024:auto,4096:auto,16384:auto} 2>&1 | tee $OUT/sweep.log
log done
