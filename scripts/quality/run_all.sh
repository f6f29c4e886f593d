#!/usr/bin/env bash
# Builds every candidate (upg presets via examples/quant_model, GGUF baselines) for the
# SmolLM2 test LM and all-MiniLM-L6-v2, then runs eval_lm.py and eval_embed.py.
# usage: scripts/quality/run_all.sh SMOL_DIR MINILM_DIR WORK_DIR [TOKENS]
set -euo pipefail
SMOL=$1; MINI=$2; WORK=$3; TOKENS=${4:-8192}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
BIN=${QUANT_MODEL:-target/release/examples/quant_model}
mkdir -p "$WORK"
for m in smol:"$SMOL" mini:"$MINI"; do
  tag=${m%%:*}; dir=${m#*:}
  for p in q8 q6 q5 q4 q3 prime-sparse; do
    d="$WORK/$tag-$p"
    "$PY" -c "import sys; sys.path.insert(0, '$HERE'); from common import make_candidate_dir; make_candidate_dir('$dir', '$d')"
    "$BIN" "$dir/model.safetensors" "$d/model.safetensors" "$p" | tee "$d/summary.txt"
  done
  "$PY" "$HERE/gguf_baselines.py" "$dir" "$WORK/$tag-gguf" | tee "$WORK/$tag-gguf.jsonl"
done
"$PY" "$HERE/eval_embed.py" "$MINI" "$WORK"/mini-q* "$WORK"/mini-prime-sparse "$WORK"/mini-gguf/* --json "$WORK/embed.json"
"$PY" "$HERE/eval_lm.py" "$SMOL" "$WORK"/smol-q* "$WORK"/smol-prime-sparse "$WORK"/smol-gguf/* --tokens "$TOKENS" --json "$WORK/lm.json"
