#!/usr/bin/env bash
# from_pretrained through an s3:// mount, end to end, against a local moto S3 server with SigV4:
#   upg pack MODEL -o s3://models/m.upg; upg-mount s3://models/m.upg MNT; compare with MODEL.
# usage: scripts/e2e_remote_s3.sh MODEL_DIR [BIN_DIR]   (needs torch, transformers, moto[server])
set -euo pipefail
MODEL=${1:?usage: e2e_remote_s3.sh MODEL_DIR [BIN_DIR]}; BIN=${2:-target/release}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d); trap 'umount "$W/mnt" 2>/dev/null || true; kill $SRV 2>/dev/null || true; rm -rf "$W"' EXIT
python3 "$HERE/../tests/support/s3_server.py" --port-file "$W/port" --creds-file "$W/creds" 2>/dev/null & SRV=$!
for _ in $(seq 300); do [ -s "$W/port" ] && break; sleep 0.1; done
export AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$W/port")
export AWS_ACCESS_KEY_ID=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['access_key_id'])" "$W/creds")
export AWS_SECRET_ACCESS_KEY=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['secret_access_key'])" "$W/creds")
"$BIN/upg" pack "$MODEL" -o s3://models/m.upg -q
mkdir "$W/mnt" && "$BIN/upg-mount" s3://models/m.upg "$W/mnt" --log-file "$W/log"
python3 "$HERE/e2e_compare_models.py" "$MODEL" "$W/mnt"
"$BIN/upg-mount" --status "$W/mnt" | grep '^remote:'
