#!/usr/bin/env bash
# GPU-host run of scripts/bench-remote.sh on ref-llama-38m (docs/BENCHMARKS.md, remote section).
# usage (device, repo root): CARRY=.carry/rb scripts/device/bench_remote.sh   results under $OUT
# CARRY holds: upg.xz (stripped release binary, xz; `upg mount` stands in for upg-mount),
#   ref-llama-38m.upg (lossless pack of ../shared/models/ref-llama-38m: unpacked and verified
#   here), pyslim.tar.xz (moto[server] 5.2.1 + boto3 with botocore's data cut to s3/iam/sts and
#   moto's services cut to those s3_server.py needs: the host has no network).
set -euo pipefail
C=$(realpath "${CARRY:-.carry/rb}"); W=/root/w; mkdir -p $W
xz -dc $C/upg.xz > $W/upg && chmod +x $W/upg
tar -C $W -xJf $C/pyslim.tar.xz
$W/upg unpack $C/ref-llama-38m.upg -o $W/ref-llama-38m -q
sha256sum $W/ref-llama-38m/model.safetensors
export PYTHONPATH=$W/pyslim
LINKS=${LINKS:-"10:1000 10:100"} RUNS=${RUNS:-3} MOUNTS=${MOUNTS:-8} \
    bash scripts/bench-remote.sh $W/ref-llama-38m $W 2>$OUT/bench-remote.err | tee $OUT/bench-remote.md
tail -5 $OUT/bench-remote.err
