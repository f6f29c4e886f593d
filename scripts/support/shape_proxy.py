#!/usr/bin/env python3
"""A TCP proxy that makes a loopback link behave like a slower, longer one: a fixed one-way delay
in each direction and one shared rate limit on the bytes flowing back to the clients (the
server's send direction, the one that carries the model). It stands in for `tc netem` where the
kernel has no sch_netem (neither of the machines this project measures on has it).

usage: shape_proxy.py --listen PORT --target PORT --delay-ms D --rate-mbit R --stats-file F

- Delay: every piece of data read from one side is released to the other side D ms after it
  arrived, order kept; so a request/response exchange costs 2*D (the RTT) plus transfer time.
- Rate: one token bucket for all connections together (burst 64 KiB), so N clients share the
  link as they would share a NIC.
- Counters: bytes sent to clients, bytes sent to the server, connections; written to
  --stats-file as JSON every 0.2 s and on SIGTERM.
"""

import argparse
import asyncio
import json
import os
import signal
import time

BURST = 64 * 1024
PIECE = 64 * 1024


class Bucket:
    def __init__(self, rate_bytes):
        self.rate = rate_bytes
        self.tokens = BURST
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n):
        if self.rate <= 0:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(BURST, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= n or self.tokens >= BURST:
                    self.tokens -= n
                    return
                await asyncio.sleep((min(n, BURST) - self.tokens) / self.rate)


STATS = {"down_bytes": 0, "up_bytes": 0, "connections": 0}


async def pump(reader, writer, delay, bucket, key):
    """Copy reader -> writer, each piece released `delay` s after it was read."""
    q = asyncio.Queue()

    async def read_side():
        try:
            while True:
                data = await reader.read(PIECE)
                await q.put((time.monotonic() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await q.put((time.monotonic() + delay, b""))

    task = asyncio.ensure_future(read_side())
    try:
        while True:
            due, data = await q.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            if bucket is not None:
                await bucket.take(len(data))
            writer.write(data)
            STATS[key] += len(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        task.cancel()
        try:
            writer.close()
        except Exception:
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--rate-mbit", type=float, default=0.0)
    ap.add_argument("--stats-file", required=True)
    args = ap.parse_args()
    delay = args.delay_ms / 1000.0
    bucket = Bucket(args.rate_mbit * 1e6 / 8)

    async def handle(cr, cw):
        STATS["connections"] += 1
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", args.target)
        except OSError:
            cw.close()
            return
        await asyncio.gather(
            pump(cr, sw, delay, None, "up_bytes"), pump(sr, cw, delay, bucket, "down_bytes")
        )

    def dump():
        tmp = args.stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(STATS, f)
        os.replace(tmp, args.stats_file)

    srv = await asyncio.start_server(handle, "127.0.0.1", args.listen)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    async with srv:
        while not stop.done():
            dump()
            await asyncio.wait([stop], timeout=0.2)
    dump()


if __name__ == "__main__":
    asyncio.run(main())
