#!/usr/bin/env python3
"""The baseline of scripts/bench-remote.sh: download objects from an S3 endpoint the way users
do today (boto3's transfer manager, as `aws s3 cp` does: ranged GETs of --part-size, --concurrency
in flight), discarding the bytes. Prints one JSON line: seconds, bytes, requests.

usage: s3_download.py --endpoint URL --bucket B --concurrency N --part-size BYTES KEY...
Credentials from the AWS_* environment variables.
"""

import argparse
import io
import json
import threading
import time

import boto3
from boto3.s3.transfer import TransferConfig


class Sink(io.RawIOBase):
    """A seekable writable that keeps nothing (the transfer manager writes parts out of order)."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()
        self.pos = 0

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        self.pos = pos
        return pos

    def tell(self):
        return self.pos

    def write(self, b):
        with self.lock:
            self.n += len(b)
        self.pos += len(b)
        return len(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--part-size", type=int, default=8 << 20)
    ap.add_argument("keys", nargs="+")
    a = ap.parse_args()
    s3 = boto3.client("s3", endpoint_url=a.endpoint, region_name="us-east-1")
    requests = [0]
    lock = threading.Lock()

    def count(**_):
        with lock:
            requests[0] += 1

    s3.meta.events.register("before-send.s3.*", count)
    cfg = TransferConfig(
        max_concurrency=a.concurrency,
        multipart_chunksize=a.part_size,
        multipart_threshold=a.part_size,
        use_threads=True,
    )
    sink = Sink()
    t0 = time.monotonic()
    for k in a.keys:
        s3.download_fileobj(a.bucket, k, sink, Config=cfg)
    dt = time.monotonic() - t0
    print(json.dumps({"seconds": dt, "bytes": sink.n, "requests": requests[0]}))


if __name__ == "__main__":
    main()
