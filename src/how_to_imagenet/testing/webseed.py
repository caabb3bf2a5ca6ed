"""A loopback-only HTTP server with Range support: the web seed (BEP 19) for the fixture torrents."""

from __future__ import annotations

import os
import re
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files like http.server, plus single `Range: bytes=a-b` requests (what aria2c sends)."""

    def send_head(self):  # type: ignore[no-untyped-def]
        self.server.ranges.append(self.headers.get("Range", ""))  # type: ignore[attr-defined]
        m = RANGE.fullmatch(self.headers.get("Range", "").strip())
        path = self.translate_path(self.path)
        if not m or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(m.group(1)) if m.group(1) else max(0, size - int(m.group(2) or 0))
        end = min(int(m.group(2)), size - 1) if m.group(1) and m.group(2) else size - 1
        if start > end:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller, as in SimpleHTTPRequestHandler
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
        """Copy the (range of the) file, throttled to `server.rate` bytes/s when set, counting bytes."""
        remaining = getattr(self, "_remaining", None) or float("inf")
        rate = self.server.rate  # type: ignore[attr-defined]
        while remaining > 0 and (chunk := source.read(int(min(remaining, 4096 if rate else 1 << 16)))):
            try:
                outputfile.write(chunk)
            except ConnectionError:  # the client went away (an interrupted download)
                break
            remaining -= len(chunk)
            self.server.bytes_sent += len(chunk)  # type: ignore[attr-defined]
            if rate:
                time.sleep(len(chunk) / rate)
        self._remaining = None

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(directory: Path, port: int = 0) -> ThreadingHTTPServer:
    """Serve `directory` on 127.0.0.1 from a daemon thread; `server.server_port` is the port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(RangeHandler, directory=str(directory)))
    server.daemon_threads = True
    server.rate = 0  # type: ignore[attr-defined]  # bytes/s per range request; 0: unthrottled (tests set it)
    server.bytes_sent = 0  # type: ignore[attr-defined]  # bytes sent, to see a download progress
    server.ranges = []  # type: ignore[attr-defined]  # the Range header of each request ("" if none)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
