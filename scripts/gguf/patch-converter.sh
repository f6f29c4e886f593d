#!/usr/bin/env bash
# Copy llama.cpp's converter (CONVERT_DIR: convert_hf_to_gguf.py, conversion/, gguf-py/) to DEST and,
# in the copy only, make an unknown BPE pre-tokenizer hash fall back to PRE (e.g. gpt-2) instead of
# raising NotImplementedError. Prints the copy's path. An empty PRE copies without patching.
# usage: patch-converter.sh CONVERT_DIR DEST PRE
set -euo pipefail
SRC=${1:?}; DEST=${2:?}; PRE=${3-}
mkdir -p "$DEST"
cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$DEST/"
if [ -n "$PRE" ]; then
  f="$DEST/conversion/base.py"
  grep -q 'raise NotImplementedError("BPE pre-tokenizer was not recognized' "$f" \
    || { echo "patch-converter: pre-tokenizer check not found in $f" >&2; exit 1; }
  sed -i "s|raise NotImplementedError(\"BPE pre-tokenizer was not recognized - update get_vocab_base_pre()\")|res = \"$PRE\"  # patched by upg scripts/gguf/patch-converter.sh|" "$f"
  grep -q 'patched by upg' "$f" || { echo "patch-converter: patch failed" >&2; exit 1; }
fi
echo "$DEST"
