#!/usr/bin/env python3
"""A user-space TCP proxy that adds round-trip time (kernel netem is not
available here).  Loopback only.

    latency_proxy.py LISTEN_PORT TARGET_PORT RTT_MS

Every chunk read from one side is forwarded to the other RTT/2 later, in
order (a per-direction queue of (due time, bytes)), so a request/response
exchange costs one RTT and a TCP/TLS handshake what it would over a real
link.  Bounded: 64 KiB reads, and a direction stops reading while more than
4 MiB wait in its queue.  Bandwidth is not limited (loopback speed).
Prints "ready" on stdout once listening.
"""
import asyncio
import sys
import time

CHUNK = 64 * 1024
QUEUE_MAX = 4 << 20


async def pump(reader, writer, delay):
    q = asyncio.Queue()
    queued = 0
    room = asyncio.Event()
    room.set()

    async def sender():
        nonlocal queued
        while True:
            due, data = await q.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            queued -= len(data)
            if queued <= QUEUE_MAX:
                room.set()
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.create_task(sender())
    try:
        while True:
            await room.wait()
            data = await reader.read(CHUNK)
            if not data:
                break
            queued += len(data)
            if queued > QUEUE_MAX:
                room.clear()
            q.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    q.put_nowait((0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def handle(creader, cwriter, target, delay):
    try:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        cwriter.close()
        return
    await asyncio.gather(pump(creader, swriter, delay), pump(sreader, cwriter, delay))
    for w in (cwriter, swriter):
        try:
            w.close()
        except OSError:
            pass


async def main():
    port, target, rtt_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    delay = rtt_ms / 2000.0
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, delay),
                                        "127.0.0.1", port, limit=CHUNK, backlog=512)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
