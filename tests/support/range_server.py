#!/usr/bin/env python3
"""A static web server with HTTP range requests, for upg's remote-archive tests and benchmarks.

usage: range_server.py ROOT [--port N] [--port-file F]

Serves the files under ROOT over HTTP/1.1 (keep-alive) on 127.0.0.1: GET and HEAD, one
`Range: bytes=A-B` per request (206 with Content-Range; 416 outside the file), ETag (from size
and mtime, so replacing a file changes it), Last-Modified, and If-Match (412 when it differs),
as nginx and S3 answer them. With --port 0 (default) the kernel picks the port; it is written to
--port-file once the socket listens.

Test hooks (never used by upg itself):
  POST /_faults?kind=K&count=N   the next N requests to files fail as K:
        503    answer "503 Slow Down" (as S3 does under load)
        short  send the headers of the full range, half the body, then close the connection
        stall  accept the request and answer nothing for --stall seconds (default 3600)
  GET /_stats                    JSON: requests, bytes of file data sent, faults still pending
  POST /_reset                   zero the counters and drop pending faults
"""

import argparse
import email.utils
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"requests": 0, "bytes": 0, "faults": []}  # faults: list of [kind, remaining]


def take_fault():
    with LOCK:
        for f in STATE["faults"]:
            if f[1] > 0:
                f[1] -= 1
                return f[0]
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."
    stall = 3600.0

    def log_message(self, fmt, *args):  # quiet: tests read stats, not logs
        pass

    def send_small(self, code, body=b"", ctype="text/plain", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/_faults":
            with LOCK:
                STATE["faults"].append([q["kind"][0], int(q.get("count", ["1"])[0])])
            return self.send_small(200, b"ok")
        if u.path == "/_reset":
            with LOCK:
                STATE.update(requests=0, bytes=0, faults=[])
            return self.send_small(200, b"ok")
        self.send_small(404, b"no such hook")

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        if self.path == "/_stats":
            with LOCK:
                body = json.dumps(
                    {
                        "requests": STATE["requests"],
                        "bytes": STATE["bytes"],
                        "faults": sum(f[1] for f in STATE["faults"]),
                    }
                ).encode()
            return self.send_small(200, body, "application/json")
        self.serve(head=False)

    def serve(self, head):
        rel = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        full = os.path.realpath(os.path.join(self.root, rel))
        if not full.startswith(os.path.realpath(self.root) + os.sep) or not os.path.isfile(full):
            return self.send_small(404, b"not found")
        with LOCK:
            STATE["requests"] += 1
        fault = take_fault()
        if fault == "503":
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            return self.send_small(503, body, "application/xml", {"Retry-After": "0"})
        if fault == "stall":
            time.sleep(self.stall)
            self.close_connection = True
            return
        st = os.stat(full)
        size = st.st_size
        etag = '"%x-%x"' % (size, st.st_mtime_ns)
        lastmod = email.utils.formatdate(st.st_mtime, usegmt=True)
        im = self.headers.get("If-Match")
        if im is not None and im.strip() != "*" and etag not in [t.strip() for t in im.split(",")]:
            return self.send_small(412, b"precondition failed", extra={"ETag": etag})
        start, end, code = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            try:
                unit, spec = rng.split("=", 1)
                a, b = spec.split("-", 1)
                if unit.strip() != "bytes" or "," in spec:
                    raise ValueError
                if a == "":
                    start, end = max(0, size - int(b)), size
                else:
                    start = int(a)
                    end = min(size, int(b) + 1) if b else size
                if start >= size or start >= end:
                    raise IndexError
                code = 206
            except IndexError:
                return self.send_small(416, b"", extra={"Content-Range": "bytes */%d" % size})
            except ValueError:
                return self.send_small(400, b"bad range")
        n = end - start
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", lastmod)
        if code == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, size))
        self.end_headers()
        if head:
            return
        send = n // 2 if fault == "short" else n
        with open(full, "rb") as f:
            f.seek(start)
            left = send
            while left > 0:
                buf = f.read(min(left, 1 << 20))
                if not buf:
                    break
                self.wfile.write(buf)
                left -= len(buf)
                with LOCK:
                    STATE["bytes"] += len(buf)
        if fault == "short":
            self.wfile.flush()
            self.close_connection = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--stall", type=float, default=3600.0)
    args = ap.parse_args()
    Handler.root = args.root
    Handler.stall = args.stall
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print("serving %s on 127.0.0.1:%d" % (args.root, port), file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
