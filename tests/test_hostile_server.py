"""Secrets and local access (issue #13): token files 0600, the embedded Valkey behind a
password, slow headers and bodies timed out, a connection cap answered with 503."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest
import redis
import uvicorn

from tests.conftest import wait_for
from weftline.embedded import EmbeddedValkey, free_port
from weftline.ground.config import (
    DEMO_FILE,
    REPLAY_SECRET_FILE,
    Settings,
    ensure_demo_project,
    ensure_replay_secret,
)
from weftline.http_server import server_options


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_token_files_are_owner_only(tmp_path):
    s = Settings(data_dir=tmp_path / "d")
    ensure_demo_project(s)
    ensure_replay_secret(s)
    assert mode(tmp_path / "d" / DEMO_FILE) == 0o600
    assert mode(tmp_path / "d" / REPLAY_SECRET_FILE) == 0o600
    # a file an older version left 0644 is narrowed when it is next read
    os.chmod(tmp_path / "d" / DEMO_FILE, 0o644)
    ensure_demo_project(Settings(data_dir=tmp_path / "d"))
    assert mode(tmp_path / "d" / DEMO_FILE) == 0o600


def test_embedded_valkey_requires_its_password(tmp_path):
    v = EmbeddedValkey(tmp_path / "vk", password="p" * 32)
    v.start()
    try:
        with pytest.raises(redis.exceptions.RedisError):
            redis.Redis(port=v.port, socket_timeout=2).set("x", "1")
        assert redis.Redis.from_url(v.url).ping()
        assert mode(tmp_path / "vk" / "auth.conf") == 0o600
        cmdline = open(f"/proc/{v.proc.pid}/cmdline", "rb").read()
        assert b"p" * 32 not in cmdline  # not visible in `ps`
    finally:
        v.stop()


class Served:
    """The app under uvicorn with the public port's options (weftline/http_server.py)."""

    def __init__(self, settings: Settings, valkey_url: str, ch) -> None:
        from weftline.app import create_app

        self.port = free_port()
        app = create_app(settings, valkey_url, run_workers=False, ch=ch)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", **server_options(settings)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def sock(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_slow_headers_and_bodies_are_timed_out(settings, valkey, ch):
    settings.http_header_timeout_seconds = 1.0
    settings.http_body_timeout_seconds = 1.0
    with Served(settings, valkey.url, ch) as srv:
        silent = [srv.sock() for _ in range(10)]  # connect, send nothing
        slow = [srv.sock() for _ in range(10)]  # headers a byte at a time
        for s in slow:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for _ in range(3):
            time.sleep(0.4)
            for s in slow:
                s.sendall(b"X")
        assert all(closed(s) for s in silent + slow)
        assert time.monotonic() - started < 5
        # a body that trickles: 408 once its deadline passes
        p = settings.projects[0]
        s = srv.sock()
        s.sendall(
            f"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nx-weftline-key: {p.public_key}\r\n"
            "content-type: application/json\r\ncontent-length: 100\r\n\r\n[".encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 408")
        # and the server still answers
        ok = srv.sock()
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.recv(4096).startswith(b"HTTP/1.1 200")


def test_connection_cap_answers_503(settings, valkey, ch):
    settings.http_max_connections = 5
    with Served(settings, valkey.url, ch) as srv:
        held = [srv.sock() for _ in range(5)]
        time.sleep(0.2)
        s = srv.sock()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 503")
        for h in held:
            h.close()
        time.sleep(0.3)
        ok = srv.sock()
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.recv(4096).startswith(b"HTTP/1.1 200")
