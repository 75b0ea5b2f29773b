#!/usr/bin/python3
"""A threaded HTTP/1.1 file server with Range support and fault injection.

Used by the C unit test of fetch/http.c (as a script) and by the pytest
fixtures (as a module).  Standard library only.

    python3 faultserver.py --root DIR [--port 0] [--fault SPEC]   # prints the port

Faults (comma-separated to combine), set with --fault, set_fault() or
GET /__fault?mode=SPEC:
  none                     serve normally
  ignore_range             answer 200 with the whole body to a Range request
  status:CODE:N            the first N file requests get CODE (429 adds Retry-After: 1)
  drop_after:BYTES:N       close the connection after BYTES of body, first N requests
  delay:MS                 sleep before answering each file request
  hang[:SUBSTR]            hold requests for paths containing SUBSTR (all files without
                           it) until the mode changes, then answer normally
  slow:SUBSTR:BPS          send bodies of paths containing SUBSTR at BPS bytes/s
  wrong_content_range      206 with a Content-Range shifted by one byte
  corrupt:SUBSTR[:OFF[:LEN]]  flip the bytes at file offsets [OFF, OFF+LEN) (default: all)
                           of paths containing SUBSTR
  gzip                     send the body gzip-compressed with Content-Encoding: gzip

Per-path request and body-byte counters: stats(), GET /__stats (JSON);
reset() or GET/POST /__reset clears them.  Control requests are not counted.
"""
import argparse
import gzip
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

CHUNK = 64 * 1024


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of parallel connections from the engine


class FaultServer:
    def __init__(self, root, port=0, host="127.0.0.1", fault="none", verbose=False):
        self.root = os.path.realpath(root)
        self.verbose = verbose
        self.lock = threading.Lock()
        self.counts = {}
        self.faults = []
        self.set_fault(fault)
        self.httpd = _HTTPServer((host, port), _make_handler(self))
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        self.thread = None

    # --- control -------------------------------------------------------------
    def set_fault(self, spec):
        faults = []
        for part in (spec or "none").split(","):
            f = part.split(":")
            if f[0] in ("status", "drop_after"):
                f[1:] = [int(x) for x in f[1:]]   # CODE|BYTES, N (remaining)
            elif f[0] == "delay":
                f[1] = int(f[1])
            elif f[0] == "corrupt":
                f[2:] = [int(x) for x in f[2:]]
            elif f[0] == "slow":
                f[2] = int(f[2])
            elif f[0] not in ("none", "ignore_range", "wrong_content_range", "gzip", "hang"):
                raise ValueError("unknown fault %r" % part)
            if f[0] != "none":
                faults.append(f)
        with self.lock:
            self.faults = faults

    def _fault(self, name):
        return next((f for f in self.faults if f[0] == name), None)

    def _take(self, name):
        """Consume one use of a counted fault; returns its first argument or None."""
        with self.lock:
            f = self._fault(name)
            if f is None or f[2] <= 0:
                return None
            f[2] -= 1
            return f[1]

    def stats(self):
        with self.lock:
            return {p: dict(c) for p, c in self.counts.items()}

    def reset(self):
        with self.lock:
            self.counts = {}

    def _count(self, path, requests=0, nbytes=0):
        with self.lock:
            c = self.counts.setdefault(path, {"requests": 0, "bytes": 0})
            c["requests"] += requests
            c["bytes"] += nbytes

    # --- lifecycle -------------------------------------------------------------
    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _parse_range(header, size):
    """(start, end) inclusive for one "bytes=a-b", "a-" or "-n" range;
    None to ignore the header; "unsatisfiable" for 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    a, _, b = header[6:].strip().partition("-")
    try:
        if a == "":
            n = int(b)
            return (max(0, size - n), size - 1) if n > 0 and size else "unsatisfiable"
        start, end = int(a), int(b) if b else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _make_handler(srv):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (an aborted or cancelled transfer)

        def log_message(self, fmt, *args):
            if srv.verbose:
                sys.stderr.write("faultserver: %s\n" % (fmt % args))

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            self.do_GET()

        def do_HEAD(self):
            self.do_GET(head=True)

        def _reply(self, code, body=b"", ctype="text/plain", extra=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _control(self, url):
            q = urllib.parse.parse_qs(url.query)
            if url.path == "/__stats":
                return self._reply(200, json.dumps(srv.stats()).encode(), "application/json")
            if url.path == "/__reset":
                srv.reset()
                return self._reply(200, b"ok\n")
            try:
                srv.set_fault(q.get("mode", ["none"])[0])
            except (ValueError, IndexError) as ex:
                return self._reply(400, str(ex).encode())
            self._reply(200, b"ok\n")

        def do_GET(self, head=False):
            url = urllib.parse.urlsplit(self.path)
            if url.path in ("/__stats", "/__reset", "/__fault"):
                return self._control(url)
            rel = urllib.parse.unquote(url.path).lstrip("/")
            path = os.path.realpath(os.path.join(srv.root, rel))
            found = path.startswith(srv.root + os.sep) and os.path.isfile(path)
            # Take an injected status before counting: a client that sees the
            # count knows the fault is spent.
            code = srv._take("status") if found else None
            srv._count(url.path, requests=1)
            delay = srv._fault("delay")
            if delay:
                time.sleep(delay[1] / 1000)
            while True:
                hang = srv._fault("hang")
                if not hang or (len(hang) > 1 and hang[1] not in url.path):
                    break
                time.sleep(0.02)
            if not found:
                return self._reply(404, b"not found\n")
            if code is not None:
                extra = [("Retry-After", "1")] if code == 429 else []
                return self._reply(code, b"injected\n", extra=extra)
            with open(path, "rb") as f:
                data = f.read()
            self._send_file(url.path, data, head)

        def _send_file(self, upath, data, head):
            size = len(data)
            rng = None if srv._fault("ignore_range") else _parse_range(self.headers.get("Range"), size)
            if rng == "unsatisfiable":
                return self._reply(416, extra=[("Content-Range", "bytes */%d" % size)])
            start, end = rng or (0, size - 1)
            body = bytearray(data[start:end + 1])
            c = srv._fault("corrupt")
            if c and c[1] in upath:
                off, n = (c[2] if len(c) > 2 else 0), (c[3] if len(c) > 3 else size)
                for i in range(max(off, start), min(off + n, end + 1)):
                    body[i - start] ^= 0xFF
            headers = [("Accept-Ranges", "bytes")]
            if rng:
                shift = 1 if srv._fault("wrong_content_range") else 0
                headers.append(("Content-Range", "bytes %d-%d/%d" % (start + shift, end + shift, size)))
            if srv._fault("gzip"):
                body = gzip.compress(bytes(body))
                headers.append(("Content-Encoding", "gzip"))
            self.send_response(206 if rng else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            drop = srv._take("drop_after")
            limit = len(body) if drop is None else min(drop, len(body))
            slow = srv._fault("slow")
            bps = slow[2] if slow and slow[1] in upath else 0
            sent = 0
            try:
                view = memoryview(body)
                while sent < limit:
                    n = min(CHUNK if not bps else max(1, min(CHUNK, bps // 20)), limit - sent)
                    self.wfile.write(view[sent:sent + n])
                    sent += n
                    if bps:
                        self.wfile.flush()
                        time.sleep(n / bps)
                if drop is not None:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
            finally:
                srv._count(upath, nbytes=sent)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fault", default="none")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    srv = FaultServer(args.root, args.port, args.host, args.fault, args.verbose)
    print(srv.port, flush=True)
    try:
        srv.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
