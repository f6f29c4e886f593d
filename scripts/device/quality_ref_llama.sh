#!/usr/bin/env bash
# GPU-host run of the ref-llama-38m table (docs/QUALITY.md, 2026-12-02): build llama.cpp tools, the GGUF set,
# the harness over upg presets + GGUF (full text), then the ECSQ allocation simulations (docs/QUANT.md).
# usage (device, repo root): CARRY=DIR scripts/device/quality_ref_llama.sh   results under $OUT
# CARRY holds: upg.xz (release binary, xz), ref-llama-38m.upg (lossless pack of the model),
#   llama.cpp-trim.tar.xz (the sdist's vendor/llama.cpp without models/ docs/ media/ benches/ and the
#   non-CPU ggml backends: 6.8 MB instead of 73), wikitext-2-raw-test.txt.
set -uo pipefail
C=$(realpath "${CARRY:-.carry/quant}"); S=$(cd "$(dirname "$0")/.." && pwd); W=/root/w; mkdir -p $W
log() { echo "== $(date +%T) $*"; }
log "$(nproc) cores"; nvidia-smi -L
xz -dc $C/upg.xz > $W/upg && chmod +x $W/upg
$W/upg unpack $C/ref-llama-38m.upg -o $W/ref-llama-38m -q || exit 1
log build
bash $S/gguf/build-llama.sh $W/llama $C/llama.cpp-trim.tar.xz > $W/build.log 2>&1 || { tail -30 $W/build.log; }
tail -3 $W/build.log
cp $W/llama/bin/llama-quantize $OUT/ 2>/dev/null
tar -cJf $OUT/llama-src-converter.tar.xz -C $W/llama src 2>/dev/null
export UPG_WIKITEXT=$C/wikitext-2-raw-test.txt PYTHONPATH=$W/llama/src/gguf-py PYTHONUNBUFFERED=1
log table
UPG=$W/upg LLAMA_BIN=$W/llama/bin CONVERT_DIR=$W/llama/src CHECK=1 bash $S/quality/ref_table.sh $W/ref-llama-38m $W/t gpu 2>&1 | tail -40
cp $W/t/table.json $W/t/sizes.jsonl $OUT/ 2>/dev/null
log sims
python3 $S/quality/sim_ecsq.py $W/ref-llama-38m --rotation-report > $W/sims.txt 2>&1
sims=()
for b in 4.0 3.0; do for al in equal global alpha:0.5 norm:0 norm:0.5; do
  d=$W/sim-$b-${al/:/}; python3 $S/quality/sim_ecsq.py $W/ref-llama-38m $d --bits $b --alloc $al >> $W/sims.txt 2>&1 && sims+=($d)
done; done
python3 $S/quality/eval_lm.py $W/ref-llama-38m "${sims[@]}" --tokens 0 --device cuda --json $W/sims-lm.json 2>&1 | grep -vi warning >> $W/sims.txt
cat $W/sims.txt; cp $W/sims.txt $W/sims-lm.json $OUT/
log done
