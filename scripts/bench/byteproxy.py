#!/usr/bin/env python3
"""Byte-counting TCP proxy for the benches (node.sh): each NAME=LISTEN_PORT forwards
127.0.0.1:LISTEN_PORT to UPSTREAM unchanged (TLS passes through, so what is counted is
what the client and the server put on the wire: TLS records, HTTP/2 frames, pings) and
counts the bytes each way and the connections, per NAME.

  usage: byteproxy.py --upstream 127.0.0.1:6443 --stats FILE [--trace FILE] NAME=PORT [NAME=PORT...]

FILE is rewritten (atomically) whenever a counter changed, at most every 0.2 s, and on
SIGTERM/SIGINT before exiting:
  {"time": <epoch s>, "nodes": {NAME: {"up": <client->server bytes>, "down": <server->client
   bytes>, "connections": <accepted>, "open": <open now>}}}
With --trace, every chunk forwarded is also a line "EPOCH_SECONDS NAME up|down BYTES" of that
file (to tell which requests the bytes belong to). "ready" goes to stdout once every port listens.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time

CHUNK = 65536


class Counters:
    def __init__(self, names, trace=None):
        self.nodes = {n: {"up": 0, "down": 0, "connections": 0, "open": 0} for n in names}
        self.dirty = True
        self.trace = trace

    def add(self, name, key, n):
        self.nodes[name][key] += n
        self.dirty = True
        if self.trace and key in ("up", "down"):
            self.trace.write(f"{time.time():.6f} {name} {key} {n}\n")

    def write(self, path):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"time": time.time(), "nodes": self.nodes}, f)
        os.replace(tmp, path)
        self.dirty = False


async def pipe(reader, writer, counters, name, key):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            counters.add(name, key, len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        # half-close towards the other side so it sees the end, then let the other pipe finish
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass


async def serve(name, port, up_host, up_port, counters):
    async def handle(c_reader, c_writer):
        counters.add(name, "connections", 1)
        counters.add(name, "open", 1)
        try:
            s_reader, s_writer = await asyncio.open_connection(up_host, up_port)
        except OSError as e:
            print(f"byteproxy: {name}: cannot reach {up_host}:{up_port}: {e}", file=sys.stderr)
            c_writer.close()
            counters.add(name, "open", -1)
            return
        try:
            await asyncio.gather(
                pipe(c_reader, s_writer, counters, name, "up"),
                pipe(s_reader, c_writer, counters, name, "down"),
            )
        finally:
            for w in (s_writer, c_writer):
                w.close()
            counters.add(name, "open", -1)

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--trace")
    ap.add_argument("listen", nargs="+", metavar="NAME=PORT")
    a = ap.parse_args()
    up_host, up_port = a.upstream.rsplit(":", 1)
    pairs = [(n, int(p)) for n, p in (x.split("=", 1) for x in a.listen)]
    trace = open(a.trace, "a", buffering=1) if a.trace else None
    counters = Counters([n for n, _ in pairs], trace)
    servers = [await serve(n, p, up_host, int(up_port), counters) for n, p in pairs]
    counters.write(a.stats)
    print("ready", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
        if counters.dirty:
            counters.write(a.stats)
    for s in servers:
        s.close()
    counters.write(a.stats)
    if trace:
        trace.close()


if __name__ == "__main__":
    asyncio.run(main())
