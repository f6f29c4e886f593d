#!/usr/bin/env bash
# all-MiniLM-L6-v2 (real FP32 weights) quality run: every upg preset through examples/quant_model
# (256 KiB chunks, each encoded and decoded on its own, as the mount serves them) and the GGUF
# baselines, then sentence-embedding cosine to the original (eval_embed.py). Runs anywhere with
# torch + transformers (CPU is fine; used on the GPU machine because this VM has no torch).
# Expects: the MiniLM HF directory in $MINI, binaries (quant_model) in $BIN, results to $OUT.
set -euo pipefail
MINI=${MINI:?}; BIN=${BIN:?}; OUT=${OUT:?}; W=${W:-/root/upgw-mini}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$W"
for p in q8 q6 q5 q4 q3 prime-sparse; do
  d="$W/mini-$p"
  python3 -c "import sys; sys.path.insert(0, '$HERE/quality'); from common import make_candidate_dir; make_candidate_dir('$MINI', '$d')"
  "$BIN/quant_model" "$MINI/model.safetensors" "$d/model.safetensors" "$p" | tail -1 | tee "$d/summary.txt"
done
python3 "$HERE/quality/gguf_baselines.py" "$MINI" "$W/mini-gguf" | tee "$OUT/mini-gguf.jsonl"
python3 "$HERE/quality/eval_embed.py" "$MINI" "$W"/mini-q* "$W"/mini-prime-sparse "$W"/mini-gguf/* --json "$OUT/embed.json" 2>&1 | grep -v Warning | tee "$OUT/eval-embed.txt"
cat "$W"/mini-*/summary.txt > "$OUT/mini-summaries.txt"
