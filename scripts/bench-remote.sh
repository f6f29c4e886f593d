#!/usr/bin/env bash
# Remote archives over a slow link: a model read through `upg-mount s3://...` (lossless and q4)
# against downloading its original files from the same S3 server with boto3's transfer manager
# (what `aws s3 cp` does), and 8 mounts of one object reading at once.
#
# usage: scripts/bench-remote.sh MODEL_DIR [BIN_DIR]
#   env: LINKS="RTT_MS:MBIT ..." (default "10:1000 10:100"), RUNS (3, medians), MOUNTS (8),
#        CONC (8: boto3's concurrency), PY (python3 with moto[server] and boto3)
# needs: root and /dev/fuse, moto[server] (tests/support/s3_server.py's S3 server, SigV4 on).
#
# The link: scripts/support/shape_proxy.py between the clients and the server, adding RTT/2 per
# direction and one shared rate limit on the bytes sent by the server. It stands in for
# `tc netem` (neither machine measured here has sch_netem). Server bytes are counted by the
# proxy, requests by the clients (boto3 event hook; the mount's `--status` remote: line).
set -euo pipefail
MODEL=$(cd "${1:?usage: bench-remote.sh MODEL_DIR [BIN_DIR]}" && pwd)
BIN=$(cd "${2:-target/release}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
# upg-mount, or the same program as `upg mount` where only upg was copied.
if [ -x "$BIN/upg-mount" ]; then MOUNT=("$BIN/upg-mount"); else MOUNT=("$BIN/upg" mount); fi
PY=${PY:-python3}; RUNS=${RUNS:-3}; MOUNTS=${MOUNTS:-8}; CONC=${CONC:-8}
LINKS=${LINKS:-"10:1000 10:100"}
W=$(mktemp -d)
cleanup() {
    for m in "$W"/mnt*; do umount "$m" 2>/dev/null || true; done
    kill $SRV ${PROXY:-} 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
free_port() { $PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

$PY "$HERE/../tests/support/s3_server.py" --port-file "$W/port" --creds-file "$W/creds" 2>/dev/null & SRV=$!
for _ in $(seq 600); do [ -s "$W/port" ] && break; sleep 0.1; done
[ -s "$W/port" ] || { echo "the S3 server did not start" >&2; exit 1; }
SPORT=$(cat "$W/port")
export AWS_ACCESS_KEY_ID=$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['access_key_id'])" "$W/creds")
export AWS_SECRET_ACCESS_KEY=$($PY -c "import json,sys;print(json.load(open(sys.argv[1]))['secret_access_key'])" "$W/creds")
export AWS_REGION=us-east-1
DIRECT=http://127.0.0.1:$SPORT

# Archives and originals, uploaded without the shaping proxy.
"$BIN/upg" pack "$MODEL" -o "$W/lossless.upg" -q
"$BIN/upg" pack "$MODEL" -o "$W/q4.upg" --preset q4 -q
AWS_ENDPOINT_URL=$DIRECT "$BIN/upg" pack "$MODEL" -o s3://models/lossless.upg -q
AWS_ENDPOINT_URL=$DIRECT "$BIN/upg" pack "$MODEL" -o s3://models/q4.upg --preset q4 -q
KEYS=()
while IFS= read -r f; do KEYS+=("orig/$f"); done < <(cd "$MODEL" && find . -type f -printf '%P\n' | sort)
$PY - "$DIRECT" "$MODEL" "${KEYS[@]}" <<'EOF'
import sys, boto3
ep, root, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1")
for k in keys:
    s3.upload_file(root + "/" + k[len("orig/"):], "models", k)
EOF
ORIG_BYTES=$(du -sb --apparent-size "$MODEL" | cut -f1)
L_BYTES=$(stat -c %s "$W/lossless.upg"); Q_BYTES=$(stat -c %s "$W/q4.upg")

start_proxy() { # RTT_MS MBIT
    PPORT=$(free_port)
    rm -f "$W/pstats"
    $PY "$HERE/support/shape_proxy.py" --listen "$PPORT" --target "$SPORT" \
        --delay-ms "$(awk "BEGIN{print $1/2}")" --rate-mbit "$2" --stats-file "$W/pstats" & PROXY=$!
    for _ in $(seq 100); do [ -s "$W/pstats" ] && break; sleep 0.1; done
}
stop_proxy() { kill -TERM $PROXY; wait $PROXY 2>/dev/null || true; PROXY=; }
down_bytes() { $PY -c "import json,sys;print(json.load(open(sys.argv[1]))['down_bytes'])" "$W/pstats"; }

# One mount of ARCHIVE_KEY at DIR through the proxy, every file read once (cat, in name order).
read_mount() { # KEY DIR -> "seconds requests"
    mkdir -p "$2"
    "${MOUNT[@]}" "s3://models/$1" "$2" --endpoint-url "http://127.0.0.1:$PPORT" --log-file "$W/log.$(basename "$2")"
    local t0 t1; t0=$(now)
    find "$2" -type f -print0 | sort -z | xargs -0 cat > /dev/null
    t1=$(now)
    local req; req=$("${MOUNT[@]}" --status "$2" | sed -n 's/^remote:.* \([0-9][0-9]*\) requests.*/\1/p' | head -1)
    umount "$2"
    echo "$(awk "BEGIN{print $t1-$t0}") ${req:-?}"
}

echo "# bench-remote $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -n): $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# model $MODEL: originals $ORIG_BYTES B, lossless archive $L_BYTES B, q4 archive $Q_BYTES B; $RUNS runs, medians"
echo "# command: scripts/bench-remote.sh $1 ${2:-target/release}  (LINKS=\"$LINKS\" RUNS=$RUNS MOUNTS=$MOUNTS CONC=$CONC)"
printf '| link | what | seconds | MB/s of model | speed-up vs download | server bytes / object bytes | requests |\n|---|---|---:|---:|---:|---:|---:|\n'
for link in $LINKS; do
    rtt=${link%%:*}; mbit=${link##*:}
    declare -A T=() B=() R=()
    for r in $(seq "$RUNS"); do
        start_proxy "$rtt" "$mbit"
        j=$($PY "$HERE/support/s3_download.py" --endpoint "http://127.0.0.1:$PPORT" --bucket models --concurrency "$CONC" "${KEYS[@]}")
        T[dl]+="$($PY -c "import json,sys;print(json.loads(sys.argv[1])['seconds'])" "$j") "
        R[dl]=$($PY -c "import json,sys;print(json.loads(sys.argv[1])['requests'])" "$j")
        B[dl]+="$(awk "BEGIN{print $(down_bytes)/$ORIG_BYTES}") "
        for kind in lossless q4; do
            before=$(down_bytes)
            read -r s q < <(read_mount "$kind.upg" "$W/mnt-$kind")
            T[$kind]+="$s "; R[$kind]=$q
            size=$L_BYTES; [ "$kind" = q4 ] && size=$Q_BYTES
            B[$kind]+="$(awk "BEGIN{print ($(down_bytes)-$before)/$size}") "
        done
        # MOUNTS processes mounting the same lossless object, all reading at once.
        before=$(down_bytes)
        for i in $(seq "$MOUNTS"); do
            mkdir -p "$W/mnt-m$i"
            "${MOUNT[@]}" s3://models/lossless.upg "$W/mnt-m$i" --endpoint-url "http://127.0.0.1:$PPORT" --log-file "$W/log.m$i"
        done
        t0=$(now)
        for i in $(seq "$MOUNTS"); do (find "$W/mnt-m$i" -type f -print0 | sort -z | xargs -0 cat > /dev/null) & done
        wait $(jobs -p | grep -v "^$PROXY$" | grep -v "^$SRV$") 2>/dev/null || true
        t1=$(now)
        for i in $(seq "$MOUNTS"); do umount "$W/mnt-m$i"; done
        T[multi]+="$(awk "BEGIN{print $t1-$t0}") "
        B[multi]+="$(awk "BEGIN{print ($(down_bytes)-$before)/($MOUNTS*$L_BYTES)}") "
        R[multi]="-"
        stop_proxy
    done
    dl=$(echo "${T[dl]}" | median)
    for kind in dl lossless q4 multi; do
        t=$(echo "${T[$kind]}" | median); b=$(echo "${B[$kind]}" | median)
        case $kind in
            dl) what="download originals (boto3, $CONC parts of 8 MiB in flight)"; mb=$ORIG_BYTES ;;
            lossless) what="read all files through upg-mount, lossless"; mb=$ORIG_BYTES ;;
            q4) what="read all files through upg-mount, q4"; mb=$ORIG_BYTES ;;
            multi) what="$MOUNTS mounts of the lossless object at once (aggregate)"; mb=$((ORIG_BYTES * MOUNTS)) ;;
        esac
        sp=$(awk "BEGIN{printf \"%.2fx\", $dl/$t}"); [ "$kind" = multi ] && sp="-"
        link_mbs=$(awk "BEGIN{print $mbit/8}")
        printf '| %s ms RTT, %s Mbit/s (%s MB/s) | %s | %.2f | %.1f | %s | %.3f | %s |\n' \
            "$rtt" "$mbit" "$link_mbs" "$what" "$t" "$(awk "BEGIN{print $mb/$t/1e6}")" "$sp" "$b" "${R[$kind]}"
    done
    unset T B R
done
