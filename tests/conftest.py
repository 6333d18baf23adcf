"""Fixtures: a real valkey-server per test, the real ClickHouse engine (chDB), and the
real app served by uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.server_fixtures import any_ch, ch_http_server, chs, use_http_clickhouse  # noqa: F401, I001
from weftline.embedded import EmbeddedValkey, free_port
from weftline.ground.config import ProjectConfig, Settings
from weftline.storage.clickhouse import ChdbClickHouse
from weftline.storage.migrate import migrate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path / "valkey")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def vk(valkey: EmbeddedValkey) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbClickHouse]:
    """One chDB per test process (chDB allows one data folder per process)."""
    ch = ChdbClickHouse(tmp_path_factory.mktemp("chdb"), database="weftline_base")
    yield ch
    ch.close()


@pytest.fixture
def ch(request: pytest.FixtureRequest) -> ChdbClickHouse:
    """A fresh, migrated database for this test (chDB; with WEFTLINE_TEST_CLICKHOUSE=http,
    the server transport over the chDB HTTP test endpoint)."""
    if use_http_clickhouse():
        return request.getfixturevalue("chs")
    chdb_session: ChdbClickHouse = request.getfixturevalue("chdb_session")
    view = chdb_session.with_database(f"t_{uuid.uuid4().hex[:12]}")
    migrate(view)
    return view


def make_project(pid: int = 1, **kw: Any) -> ProjectConfig:
    return ProjectConfig(
        id=pid,
        name=f"p{pid}",
        public_key=secrets.token_hex(16),
        query_token=secrets.token_hex(20),
        **kw,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        projects=[make_project(1), make_project(2)],
        batch_max_age_ms=50,
        claim_idle_ms=1000,
        retry_after_seconds=2,
    )


class LiveServer:
    """The real app under uvicorn in a thread, on a loopback port."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(40)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """serve(settings, valkey_url, ch=..., run_workers=True) → a started LiveServer."""
    from weftline.app import create_app

    started: list[LiveServer] = []

    def _serve(settings: Settings, valkey_url: str, **kw: Any) -> LiveServer:
        kw.setdefault("run_workers", True)
        app = create_app(settings, valkey_url, **kw)
        srv = LiveServer(app, free_port()).start()
        started.append(srv)
        return srv

    yield _serve
    for srv in started:
        srv.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as client:
        yield client


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def weftline_cmd(*args: str) -> list[str]:
    # The launcher is `weftline` itself plus the crash tests' fault injection
    # (WEFTLINE_TEST_PAUSE), which the production code does not carry.
    return [sys.executable, "-m", "tests.fault_injection", *args]


def weftline_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_weftline(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    out = subprocess.run(
        weftline_cmd(*args),
        env=env or weftline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout
