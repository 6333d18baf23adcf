"""Fixtures for server mode: the chDB-backed ClickHouse HTTP endpoint (a test fixture, see
tests/chdb_http_server.py) and ClickHouse clients over it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from weftline.embedded import free_port
from weftline.storage.clickhouse import ChdbClickHouse, ClickHouseConnect
from weftline.storage.migrate import migrate

HERE = Path(__file__).resolve().parent


class ChdbHttpServer:
    """tests/chdb_http_server.py in its own process (chDB allows one data folder per
    process, and workers in other processes reach it over the network, as in production)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ChdbHttpServer:
        log = open(self.data_dir.parent / f"chdb-http-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "chdb_http_server.py"),
                "--data",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chdb_http_server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/ping", timeout=1).text == "Ok.\n":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("chdb_http_server did not answer /ping")

    def faults(self, **spec: object) -> None:
        httpx.post(self.url + "/_fixture/faults", json=spec, timeout=5).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def ch_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttpServer]:
    server = ChdbHttpServer(tmp_path_factory.mktemp("chdb-http") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def chs(ch_http_server: ChdbHttpServer) -> Iterator[ClickHouseConnect]:
    """A fresh, migrated database on the HTTP endpoint, through clickhouse-connect."""
    client = ClickHouseConnect(ch_http_server.url, f"t_{uuid.uuid4().hex[:12]}")
    migrate(client)
    yield client
    client.close()


def use_http_clickhouse() -> bool:
    """WEFTLINE_TEST_CLICKHOUSE=http runs every test's `ch` through the server transport."""
    return os.environ.get("WEFTLINE_TEST_CLICKHOUSE", "chdb") == "http"


@pytest.fixture(params=["chdb", "http"])
def any_ch(request: pytest.FixtureRequest) -> ChdbClickHouse | ClickHouseConnect:
    """The same test through both transports."""
    if request.param == "chdb":
        session: ChdbClickHouse = request.getfixturevalue("chdb_session")
        view = session.with_database(f"t_{uuid.uuid4().hex[:12]}")
        migrate(view)
        return view
    return request.getfixturevalue("chs")
