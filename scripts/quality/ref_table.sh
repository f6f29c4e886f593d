#!/usr/bin/env bash
# One command for the rate-quality table of a Llama model: upg presets (and --bits points), llama.cpp
# k-quants and legacy GGUF types, all judged by the same harness (eval_lm.py: ppl, Δppl, mean KL of the
# next-token distributions against the original, top-1 agreement).
#
# usage: scripts/quality/ref_table.sh MODEL_DIR WORK_DIR [cpu|gpu]
#   cpu (default): first 16,384 tokens of wikitext-2-raw-test; gpu: the whole text on CUDA.
# env:
#   UPG          upg binary (default target/release/upg)
#   PRESETS      upg presets (default "q8 q6 q5 q4 q3")
#   BITS         upg --bits budgets (default none), e.g. "4.0 3.0"
#   GGUF_DIR     folder with NAME-F16.gguf and NAME-TYPE.gguf made by scripts/gguf/make-gguf-set.sh; or
#   LLAMA_BIN + CONVERT_DIR   to make them here (scripts/gguf/build-llama.sh's bin/ and src/)
#   TYPES        GGUF types (default "Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K Q5_0 Q4_0")
#   TOKENS       override the token count (0 = whole text)
#   NO_GGUF=1    upg candidates only (e.g. new --bits points next to a table already made)
# Every candidate is an HF directory: upg archives are `upg unpack`ed (what the mount serves), GGUF files
# are dequantized back to the original layout by gguf_to_hf.py (checked on the F16 GGUF, which must
# give KL ~ 0). Bits/weight = file bytes x 8 / weights of the model, for the .upg and the .gguf alike.
# Writes WORK_DIR/sizes.jsonl, lm.json, table.md (and table.json); plot with plot_rate_quality.py.
set -euo pipefail
MODEL=$(realpath "${1:?usage: ref_table.sh MODEL_DIR WORK_DIR [cpu|gpu]}")
WORK=${2:?}; MODE=${3:-cpu}
HERE=$(cd "$(dirname "$0")" && pwd)
UPG=${UPG:-target/release/upg}
PRESETS=${PRESETS-"q8 q6 q5 q4 q3"}
BITS=${BITS-}
TYPES=${TYPES:-"Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K Q5_0 Q4_0"}
PY=${PYTHON:-python3}
NAME=$(basename "$MODEL")
mkdir -p "$WORK"; WORK=$(realpath "$WORK")
case $MODE in
  cpu) TOK=${TOKENS:-16384}; DEV=cpu ;;
  gpu) TOK=${TOKENS:-0}; DEV=cuda ;;
  *) echo "mode must be cpu or gpu" >&2; exit 2 ;;
esac
WEIGHTS=$("$PY" -c "import sys; sys.path.insert(0, '$HERE'); from common import read_header
import numpy as np
_, h = read_header('$MODEL/model.safetensors')
print(sum(int(np.prod(v['shape'])) for k, v in h.items() if k != '__metadata__'))")
: > "$WORK/sizes.jsonl"
cands=()
add() { # family label dir bytes extra-json
  echo "{\"family\": \"$1\", \"label\": \"$2\", \"dir\": \"$3\", \"bytes\": $4, \"weights\": $WEIGHTS, \"bpw_file\": $("$PY" -c "print(round($4 * 8 / $WEIGHTS, 4))")${5:+, $5}}" >> "$WORK/sizes.jsonl"
  cands+=("$3")
}
upg_cand() { # label pack-args...
  local label=$1; shift
  "$UPG" pack "$MODEL" -o "$WORK/$label.upg" --force "$@" > "$WORK/$label.pack.txt"
  tail -n 2 "$WORK/$label.pack.txt"
  rm -rf "$WORK/$label"
  "$UPG" unpack "$WORK/$label.upg" -o "$WORK/$label" > /dev/null
  add upg "$label" "$WORK/$label" "$(stat -c %s "$WORK/$label.upg")"
}
for p in $PRESETS; do upg_cand "upg-$p" --preset "$p"; done
for b in $BITS; do upg_cand "upg-bits$b" --bits "$b"; done


if [ -n "${NO_GGUF:-}" ]; then :
elif [ -z "${GGUF_DIR:-}" ]; then
  GGUF_DIR="$WORK/gguf"
  TYPES="$TYPES" bash "$HERE/../gguf/make-gguf-set.sh" "$MODEL" "${CONVERT_DIR:?set GGUF_DIR or CONVERT_DIR}" \
    "${LLAMA_BIN:?set GGUF_DIR or LLAMA_BIN}" "$GGUF_DIR" > "$WORK/make-gguf.txt"
fi
gtypes="F16 $TYPES"; [ -z "${NO_GGUF:-}" ] || gtypes=""
for t in $gtypes; do
  g="$GGUF_DIR/$NAME-$t.gguf"
  [ -f "$g" ] || { echo "missing $g" >&2; exit 1; }
  fam=gguf-k; case $t in F16) fam=gguf-f16 ;; Q4_0|Q4_1|Q5_0|Q5_1|Q8_0) fam=gguf-legacy ;; esac
  info=$("$PY" "$HERE/gguf_to_hf.py" "$MODEL" "$g" "$WORK/gguf-$t" ${CHECK:+--check})
  echo "$info"
  types=$("$PY" -c "import json, sys; print(json.dumps(json.loads(sys.argv[1])['types']))" "$info")
  add "$fam" "GGUF $t" "$WORK/gguf-$t" "$(stat -c %s "$g")" "\"types\": $types"
done

"$PY" "$HERE/eval_lm.py" "$MODEL" "${cands[@]}" --tokens "$TOK" --device "$DEV" --json "$WORK/lm.json" \
  2>&1 | grep -v -i warning | tee "$WORK/eval-lm.txt"
"$PY" "$HERE/make_table.py" "$WORK" | tee "$WORK/table.md"
