"""A real HTTP webhook receiver for the alert tests (stdlib server on a loopback port)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    if receiver.fail_next:
                        receiver.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    receiver.calls.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path: str) -> list[Any]:
        with self._lock:
            return [body for p, body in self.calls if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
