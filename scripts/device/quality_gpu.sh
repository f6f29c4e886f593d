#!/usr/bin/env bash
# End-to-end and quality run on a GPU machine (see docs/QUALITY.md for how it is invoked).
# Expects: SmolLM2 BF16 directory in $SMOL, binaries in $BIN, results written to $OUT.
#   1. upg bench thread scaling on the lossless archive
#   2. transformers through the mount of the lossless archive: logits equal, generate works
#   3. safetensors.safe_open through the mount: every tensor equal
#   4. every lossy preset packed, mounted, and measured through the mount with eval_lm.py
#      (full wikitext-2 test text), next to GGUF baselines made with the gguf package
set -uo pipefail
SMOL=${SMOL:?}; BIN=${BIN:?}; OUT=${OUT:?}; W=${W:-/root/upgw}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$W" && cd "$W"
log() { echo "== $(date +%T) $*"; }
log "machine: $(nproc) cores, $(uname -r)"; nvidia-smi -L
log "pack lossless"
"$BIN/upg" pack "$SMOL" -o "$W/lossless.upg" --force --json > "$OUT/pack-lossless.json"
"$BIN/upg" bench "$W/lossless.upg" --threads 1,2,4,8,16 --runs 5 | tee "$OUT/bench-smol.txt"
mkdir -p "$W/mnt-lossless"
"$BIN/upg-mount" "$W/lossless.upg" "$W/mnt-lossless" || log "MOUNT FAILED"
log "transformers e2e through the mount"
python3 "$HERE/e2e_transformers.py" "$SMOL" --mount "$W/mnt-lossless" 2>&1 | tail -20 | tee "$OUT/e2e-transformers.txt"
log "safetensors e2e through the mount"
python3 "$HERE/e2e_safetensors.py" "$W/mnt-lossless" "$SMOL" 2>&1 | tail -5 | tee "$OUT/e2e-safetensors.txt"
cands=()
for p in q8 q6 q5 q4 q3 prime-sparse; do
  log "pack $p"
  "$BIN/upg" pack "$SMOL" -o "$W/$p.upg" --preset "$p" --force > "$OUT/pack-$p.txt"
  tail -3 "$OUT/pack-$p.txt"
  mkdir -p "$W/mnt-$p" && "$BIN/upg-mount" "$W/$p.upg" "$W/mnt-$p" && cands+=("$W/mnt-$p")
done
# EXTRA="name:pack args;name:pack args": more candidates, e.g. "q8-keep-embed:--preset q8 --keep *embed_tokens*"
IFS=';' read -ra extra <<< "${EXTRA:-}"
for e in "${extra[@]}"; do
  [ -n "$e" ] || continue
  name=${e%%:*}; args=${e#*:}
  log "pack $name ($args)"
  set -f; "$BIN/upg" pack "$SMOL" -o "$W/$name.upg" $args --force > "$OUT/pack-$name.txt"; set +f
  tail -3 "$OUT/pack-$name.txt"
  mkdir -p "$W/mnt-$name" && "$BIN/upg-mount" "$W/$name.upg" "$W/mnt-$name" && cands+=("$W/mnt-$name")
done
log "GGUF baselines"
python3 "$HERE/quality/gguf_baselines.py" "$SMOL" "$W/gguf" | tee "$OUT/gguf.jsonl"
log "eval_lm (full text)"
python3 "$HERE/quality/eval_lm.py" "$SMOL" "${cands[@]}" "$W"/gguf/* --tokens 0 --device cuda --json "$OUT/lm.json" 2>&1 | grep -v Warning | tee "$OUT/eval-lm.txt"
for m in "$W"/mnt-*; do umount "$m" 2>/dev/null; done
log done
