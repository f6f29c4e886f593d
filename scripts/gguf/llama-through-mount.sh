#!/usr/bin/env bash
# llama.cpp through upg-mount, against the same files read directly (issue 11). For each GGUF:
#   1. upg pack (the GGUF alone in a folder), upg-mount it, SHA-256 of the mounted file == original;
#   2. llama-perplexity on TEXT, direct and through the mount, with mmap (default) and --load-mode none: (this llama.cpp spells --no-mmap so)
#      every chunk value and the final estimate must be identical (the four outputs' ppl lines);
#   3. greedy llama-completion (-no-cnv --temp 0) output identical, direct vs mount;
#   4. model load time from a cold cache (echo 3 > drop_caches, and a fresh mount so the daemon's
#      chunk cache is empty too), mmap and --load-mode none: llama's own "load time" and the process's wall
#      time for a 1-token run, median of REPS, direct vs mount.
# Then, if HF_DIR is set: convert_hf_to_gguf.py (CONVERT_DIR, patched copy, see patch-converter.sh)
# on HF_DIR read through a mount of its upg archive writes a GGUF byte-identical (SHA-256) to the
# one converted from HF_DIR itself (same folder name, so general.name matches).
# Any difference exits 1. Results go to stdout (tab-separated lines starting with RESULT) and
# to $RESULTS (if set, appended).
#
# usage: scripts/gguf/llama-through-mount.sh LLAMA_BIN_DIR UPG_BIN_DIR GGUF...
# env:  TEXT (default: ../shared/data/wikitext-2-raw-test.txt beside the repo), CHUNKS (perplexity
#       --chunks, default all), CTX (512), THREADS (llama -t, default: all cores), REPS (3),
#       PROMPT, NPRED (64), HF_DIR, CONVERT_DIR, PRE_FALLBACK (gpt-2), KEEP=1 (keep the work folder),
#       WORK (work folder, default mktemp under /tmp: needs room for the archives and a GGUF copy)
# needs: root (drop_caches, mount), /dev/fuse; for HF_DIR: python3 with torch, safetensors, transformers.
set -euo pipefail
LB=$(realpath "${1:?usage: llama-through-mount.sh LLAMA_BIN_DIR UPG_BIN_DIR GGUF...}")
UB=$(realpath "${2:?}")
shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TEXT=${TEXT:-$ROOT/../shared/data/wikitext-2-raw-test.txt}
CTX=${CTX:-512}
THREADS=${THREADS:-$(nproc)}
REPS=${REPS:-3}
NPRED=${NPRED:-64}
PROMPT=${PROMPT:-"The history of the Linux kernel began in 1991, when"}
PRE_FALLBACK=${PRE_FALLBACK-gpt-2}
[ -f "$TEXT" ] || { echo "no text file $TEXT (set TEXT)" >&2; exit 2; }
CH=(); [ -n "${CHUNKS:-}" ] && CH=(--chunks "$CHUNKS")
WORK=${WORK:-$(mktemp -d /tmp/upg-llama.XXXXXX)}
mkdir -p "$WORK"
FAIL=0
MOUNTS=()
cleanup() {
  for m in "${MOUNTS[@]}"; do mountpoint -q "$m" 2>/dev/null && umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
result() { local line; line=$(printf 'RESULT\t%s' "$(IFS=$'\t'; echo "$*")"); echo "$line"; [ -n "${RESULTS:-}" ] && echo "$line" >> "$RESULTS"; return 0; }
fail() { echo "FAIL: $*" >&2; result FAIL "$*"; FAIL=1; }
mnt() { # mnt ARCHIVE MOUNTPOINT: mount (fresh)
  mkdir -p "$2"
  "$UB/upg-mount" "$1" "$2"
  MOUNTS+=("$2")
}
umnt() { umount "$1"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ppl() { # ppl MODEL [--load-mode none]: prints the perplexity lines (chunk values + final estimate)
  "$LB/llama-perplexity" -m "$1" -f "$TEXT" -c "$CTX" -t "$THREADS" "${CH[@]}" "${@:2}" 2>&1 \
    | grep -oE '\[[0-9]+\][0-9.]+|Final estimate.*' || true   # values only (no log timestamps)
}
gen() { # gen MODEL [--load-mode none]: greedy continuation, stdout only
  "$LB/llama-completion" -m "$1" -p "$PROMPT" -n "$NPRED" --temp 0 -s 1 -no-cnv -t "$THREADS" \
    --no-display-prompt "${@:2}" 2>/dev/null </dev/null
}
loadt() { # loadt MODEL [args]: "llama_load_ms wall_s" of a 1-token run
  local t0 t1 log
  t0=$(date +%s.%N)
  log=$("$LB/llama-completion" -m "$1" -p "Hello" -n 1 --temp 0 -no-cnv --no-warmup -t "$THREADS" "${@:2}" 2>&1 </dev/null)
  t1=$(date +%s.%N)
  echo "$(echo "$log" | grep -m1 -E 'load time *=' | sed -E 's/.*load time *= *([0-9.]+) ms.*/\1/') $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')"
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(uname -r); text $(basename "$TEXT") chunks ${CHUNKS:-all} ctx $CTX threads $THREADS"
for G in "$@"; do
  G=$(realpath "$G"); N=$(basename "$G" .gguf)
  echo "== $N ($(stat -c %s "$G") bytes)"
  mkdir -p "$WORK/in-$N"
  ln -f "$G" "$WORK/in-$N/$N.gguf" 2>/dev/null || cp "$G" "$WORK/in-$N/$N.gguf"
  "$UB/upg" pack -q --force "$WORK/in-$N" -o "$WORK/$N.upg"
  rm -rf "$WORK/in-$N"
  result pack "$N" "$(stat -c %s "$G")" "$(stat -c %s "$WORK/$N.upg")"
  M="$WORK/mnt-$N"; mnt "$WORK/$N.upg" "$M"; F="$M/$N.gguf"
  a=$(sha256sum < "$G" | cut -c1-64); b=$(sha256sum < "$F" | cut -c1-64)
  [ "$a" = "$b" ] && result sha256 "$N" same "$a" || fail "$N: sha256 through the mount $b != $a"

  p_d=$(ppl "$G"); p_m=$(ppl "$F"); p_dn=$(ppl "$G" --load-mode none); p_mn=$(ppl "$F" --load-mode none)
  fin=$(echo "$p_d" | grep -o 'Final estimate.*' || echo "no final estimate")
  [ -n "$p_d" ] && echo "$p_d" | grep -q 'Final estimate' || fail "$N: llama-perplexity printed no estimate"
  for v in "$p_m" "$p_dn" "$p_mn"; do [ "$v" = "$p_d" ] || { fail "$N: perplexity output differs"; diff <(echo "$p_d") <(echo "$v") | head -5 >&2 || true; }; done
  nch=$(echo "$p_d" | grep -o '\[[0-9]*\]' | wc -l)
  result ppl "$N" "$fin" "$nch chunks" "$([ "$p_d" = "$p_m" ] && [ "$p_d" = "$p_dn" ] && [ "$p_d" = "$p_mn" ] && echo identical-4-ways || echo DIFFERENT)"

  g_d=$(gen "$G"); g_m=$(gen "$F"); g_mn=$(gen "$F" --load-mode none)
  [ -n "$g_d" ] || fail "$N: llama-completion printed nothing"
  [ "$g_d" = "$g_m" ] && [ "$g_d" = "$g_mn" ] && result gen "$N" identical "$(echo "$g_d" | head -c 120 | tr '\n\t' '  ')" \
    || { fail "$N: greedy output differs"; diff <(echo "$g_d") <(echo "$g_m") | head -5 >&2 || true; }

  for mm in mmap no-mmap; do
    arg=(); [ $mm = no-mmap ] && arg=(--load-mode none)
    : > "$WORK/ld"; : > "$WORK/lm"
    for r in $(seq "$REPS"); do
      drop; loadt "$G" "${arg[@]}" >> "$WORK/ld"
      umnt "$M"; mnt "$WORK/$N.upg" "$M"; drop; loadt "$F" "${arg[@]}" >> "$WORK/lm"
    done
    result load "$N" "$mm" "direct_llama_ms=$(cut -d' ' -f1 "$WORK/ld" | median)" "direct_wall_s=$(cut -d' ' -f2 "$WORK/ld" | median)" \
      "mount_llama_ms=$(cut -d' ' -f1 "$WORK/lm" | median)" "mount_wall_s=$(cut -d' ' -f2 "$WORK/lm" | median)" "reps=$REPS cold"
  done
  umnt "$M"
done

if [ -n "${HF_DIR:-}" ]; then
  HF=$(realpath "$HF_DIR"); HN=$(basename "$HF")
  echo "== convert_hf_to_gguf.py on $HN: direct vs through the mount"
  conv=$(bash "$ROOT/scripts/gguf/patch-converter.sh" "${CONVERT_DIR:?CONVERT_DIR needed with HF_DIR}" "$WORK/conv" "$PRE_FALLBACK")
  "$UB/upg" pack -q --force "$HF" -o "$WORK/hf.upg"
  M="$WORK/hfmnt/$HN"; mnt "$WORK/hf.upg" "$M"
  for src in direct mount; do
    d=$HF; [ $src = mount ] && d=$M
    drop
    t0=$(date +%s.%N)
    PYTHONPATH="$conv/gguf-py" python3 "$conv/convert_hf_to_gguf.py" "$d" --outtype f16 --outfile "$WORK/conv-$src.gguf" > "$WORK/conv-$src.log" 2>&1 \
      || { tail -5 "$WORK/conv-$src.log" >&2; fail "convert ($src) failed"; }
    t1=$(date +%s.%N)
    echo "convert $src: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}') s"
  done
  a=$(sha256sum < "$WORK/conv-direct.gguf" | cut -c1-64); b=$(sha256sum < "$WORK/conv-mount.gguf" | cut -c1-64)
  [ "$a" = "$b" ] && result convert "$HN" identical "$a" "$(stat -c %s "$WORK/conv-direct.gguf") bytes" || fail "convert: GGUF through the mount $b != direct $a"
  umnt "$M"
fi
[ $FAIL = 0 ] && echo "all identical" || echo "SOME CHECKS FAILED"
exit $FAIL
