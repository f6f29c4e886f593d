#!/usr/bin/env python3
"""A real S3-compatible server on 127.0.0.1 for upg's tests and benchmarks: moto's standalone
server (PyPI `moto[server]`), with request authentication switched on, so that SigV4 signatures
are checked against real credentials (a wrong secret gets 403 SignatureDoesNotMatch).

usage: s3_server.py --port-file F --creds-file C [--port N] [--bucket B ...]

Starts the server, creates an IAM user with an access key and an allow-all policy (moto lets the
first few requests through unauthenticated for exactly this), creates the buckets with the new
credentials, writes {"port", "access_key_id", "secret_access_key"} to --creds-file and the port to
--port-file (atomically, last: its presence means ready), then serves until killed.
"""

import argparse
import json
import os
import sys
import time

# moto reads this when it is imported: the first 3 requests (create user, access key, policy)
# need no credentials; every later one is authenticated and signature-checked.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"

import boto3  # noqa: E402  (installed with moto)
from moto.server import ThreadedMotoServer  # noqa: E402


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--creds-file", required=True)
    ap.add_argument("--bucket", action="append", default=[])
    args = ap.parse_args()
    port = args.port
    if port == 0:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    url = "http://127.0.0.1:%d" % port
    kw = dict(endpoint_url=url, region_name="us-east-1")
    iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", **kw)
    iam.create_user(UserName="upg-test")
    key = iam.create_access_key(UserName="upg-test")["AccessKey"]
    iam.put_user_policy(
        UserName="upg-test",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    s3 = boto3.client(
        "s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **kw
    )
    for b in args.bucket or ["models"]:
        s3.create_bucket(Bucket=b)
    write_atomic(
        args.creds_file,
        json.dumps(
            {"port": port, "access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
        ),
    )
    write_atomic(args.port_file, str(port))
    print("moto S3 on %s" % url, file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
