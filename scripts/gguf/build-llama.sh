#!/usr/bin/env bash
# Build llama.cpp's CPU tools (llama-quantize, llama-perplexity, llama-completion) from the source
# that the PyPI sdist llama-cpp-python==0.3.36 vendors (vendor/llama.cpp), as static, portable
# (x86-64 + AVX2/FMA/F16C, no -march=native), stripped binaries that run on any glibc x86-64 Linux.
# No llama.cpp code is committed to upg: the script fetches the sdist with pip.
#
# usage: scripts/gguf/build-llama.sh OUT_DIR [SRC]
#   OUT_DIR  gets bin/llama-{quantize,perplexity,completion}, and src/ (convert_hf_to_gguf.py,
#            conversion/, gguf-py/) for converting HF checkpoints to GGUF.
#   SRC      optional: a vendor/llama.cpp directory or a .tar.xz/.tar.gz of it (top dir llama.cpp/);
#            default: `pip download` the sdist into OUT_DIR/sdist and use its vendor/llama.cpp.
# Needs cmake (>= 3.14), a C/C++ compiler with static glibc/libstdc++ (Debian: libc6-dev, g++).
# Takes ~70 s on 16 cores, 20+ min on 2.
set -euo pipefail
OUT=${1:?usage: build-llama.sh OUT_DIR [SRC]}
SRC=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work="$OUT/work"
mkdir -p "$work"
if [ -z "$SRC" ]; then
  python3 -m pip download --no-deps --no-binary :all: --no-build-isolation \
    -d "$OUT/sdist" llama-cpp-python==0.3.36
  tar -xzf "$OUT"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$work"
  SRC="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
elif [ -f "$SRC" ]; then
  tar -xf "$SRC" -C "$work"
  SRC="$work/llama.cpp"
fi
[ -f "$SRC/CMakeLists.txt" ] || { echo "no llama.cpp source at $SRC" >&2; exit 1; }
jobs=$(nproc)
# Static and portable: GGML_NATIVE=OFF turns on SSE4.2/AVX/AVX2/BMI2/FMA/F16C only; no shared libs,
# -static link; no OpenMP (ggml's own thread pool; static libgomp is not everywhere), no curl/openssl
# (no downloads); tests/examples/server/app off.
cmake -S "$SRC" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_STATIC=ON -DGGML_OPENMP=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DCMAKE_EXE_LINKER_FLAGS="-static" \
  ${LLAMA_CMAKE_EXTRA:-}
cmake --build "$work/build" -j "$jobs" --target llama-quantize llama-perplexity llama-completion
mkdir -p "$OUT/bin" "$OUT/src"
for t in llama-quantize llama-perplexity llama-completion; do
  f=$(find "$work/build" -type f -name "$t" -perm -u+x | head -1)
  cp "$f" "$OUT/bin/$t"
  strip "$OUT/bin/$t"
done
cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$OUT/src/"
[ -f "$SRC/LICENSE" ] && cp "$SRC/LICENSE" "$OUT/LICENSE.llama.cpp"
file "$OUT"/bin/* 2>/dev/null || true
ls -la "$OUT/bin"
