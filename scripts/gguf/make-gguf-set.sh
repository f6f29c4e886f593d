#!/usr/bin/env bash
# Make the GGUF test set of an HF Llama checkpoint with llama.cpp's own tools:
# convert_hf_to_gguf.py to F16 and BF16, then llama-quantize (no imatrix) of the F16 file to
# Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K (override with TYPES="...").
#
# usage: scripts/gguf/make-gguf-set.sh HF_DIR CONVERT_DIR LLAMA_BIN_DIR OUT_DIR
#   CONVERT_DIR holds convert_hf_to_gguf.py, conversion/ and gguf-py/ (scripts/gguf/build-llama.sh
#   puts them in OUT/src). It is copied to a temporary folder and, only there, an unknown BPE
#   pre-tokenizer hash is mapped to "gpt-2" (PRE_FALLBACK, default gpt-2, the name llama.cpp gives GPT-2's pre-tokenizer; empty: no patch) instead of
#   raising: ref-llama-38m's tokenizer is GPT-2's byte-level BPE, whose hash the converter does not list.
# Needs python3 with torch, numpy, safetensors, transformers (the converter's own needs).
set -euo pipefail
HF=${1:?usage: make-gguf-set.sh HF_DIR CONVERT_DIR LLAMA_BIN_DIR OUT_DIR}
CONV=${2:?}; LB=${3:?}; OUT=${4:?}
TYPES=${TYPES:-"Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K"}
PRE_FALLBACK=${PRE_FALLBACK-gpt-2}
HF=$(realpath "$HF"); LB=$(realpath "$LB"); mkdir -p "$OUT"; OUT=$(realpath "$OUT")
NAME=$(basename "$HF")
TMP=$(mktemp -d /tmp/upg-conv.XXXXXX); trap 'rm -rf "$TMP"' EXIT
conv=$(bash "$(dirname "$0")/patch-converter.sh" "$CONV" "$TMP/conv" "$PRE_FALLBACK")
for t in f16 bf16; do
  T=$(echo $t | tr a-z A-Z)
  PYTHONPATH="$conv/gguf-py" python3 "$conv/convert_hf_to_gguf.py" "$HF" --outtype $t \
    --outfile "$OUT/$NAME-$T.gguf" 2>&1 | tail -n 3
done
for q in $TYPES; do
  "$LB/llama-quantize" "$OUT/$NAME-F16.gguf" "$OUT/$NAME-$q.gguf" $q 2>&1 | tail -n 2
done
ls -l "$OUT"
