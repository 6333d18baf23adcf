"""How an ops command (`query`, `alerts evaluate-once`, `grafana check`) reaches the data.

- `--url`: the admin endpoint of that server.
- server mode (`CLICKHOUSE_URL`): ClickHouse itself, which takes any number of clients.
- embedded, a `weftline up` running on the data folder (it holds the folder's lock,
  `weftline-up.lock`, which names its URL): its admin endpoint.
- embedded, nothing running, the folder initialized: the folder itself.
- otherwise: a one-line error. Nothing is ever created: a mistyped --data-dir must not
  become an empty database that answers "no tables".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from weftline.admin import NotReadOnly, read_admin_token
from weftline.cli_args import CliError
from weftline.embedded import DataFolderLock
from weftline.ground.config import Settings
from weftline.storage.clickhouse import ClickHouse, StorageError


class RemoteClickHouse:
    """The read side of the ClickHouse interface over a server's admin endpoint."""

    def __init__(self, url: str, token: str, timeout_seconds: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout_seconds
        self.max_rows = 100_000
        self._http = httpx.Client(
            headers={"authorization": f"Bearer {token}"}, timeout=timeout_seconds + 10
        )
        info = self._call("GET", "/api/v1/admin/info")
        self.database: str = info["database"]
        self.valkey_url: str | None = info.get("valkey_url")

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            r = self._http.request(method, self.url + path, json=body)
        except httpx.HTTPError as e:
            raise CliError(
                f"cannot reach Weftline at {self.url} ({e}); is `weftline up` running there?",
                3,
            ) from e
        try:
            doc = r.json()
        except ValueError:
            doc = {"detail": r.text[:200]}
        if r.status_code in (401, 403):
            raise CliError(
                f"{self.url} refused the admin token ({doc.get('detail')}): pass the one in "
                "<data_dir>/admin-token with --data-dir, or set WEFTLINE_ADMIN_TOKEN",
                2,
            )
        if r.status_code == 400 and doc.get("error") == "not_read_only":
            raise NotReadOnly(doc.get("detail", r.text))
        if r.status_code == 400:
            raise StorageError(doc.get("detail", r.text))
        if r.status_code != 200:
            raise CliError(f"{self.url}: {r.status_code} {doc.get('detail', '')}", 3)
        return doc

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        doc = self._call(
            "POST",
            "/api/v1/admin/query",
            {
                "sql": sql,
                "params": params or {},
                "max_rows": self.max_rows,
                "timeout_seconds": self.timeout,
            },
        )
        self.truncated = bool(doc.get("truncated"))
        return doc["rows"]

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        raise StorageError("the admin endpoint is read-only")

    def insert(
        self, table: str, rows: Sequence[dict[str, Any]], dedup_token: str | None = None
    ) -> int:
        raise StorageError("the admin endpoint is read-only")

    def ping(self) -> bool:
        try:
            self.query("SELECT 1 AS ok")
            return True
        except (StorageError, CliError):
            return False

    def close(self) -> None:
        self._http.close()


@dataclass
class Reached:
    ch: ClickHouse
    valkey_url: str | None
    where: str  # for messages: "the server at …" or "the folder …"
    remote: bool


def lock_holder(path: Path) -> str | None:
    """What the holder of a lock file wrote into it (a running Weftline), or None when
    nobody holds it. Never creates it."""
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _initialized(clickhouse_dir: Path, database: str) -> bool:
    return (clickhouse_dir / "metadata" / f"{database}.sql").exists()


def _remote(url: str, settings: Settings, timeout: float) -> Reached:
    token = os.environ.get("WEFTLINE_ADMIN_TOKEN") or read_admin_token(settings)
    if not token:
        raise CliError(
            f"no admin token for {url}: set WEFTLINE_ADMIN_TOKEN, or pass the server's "
            "--data-dir (its admin-token file is read)",
            2,
        )
    ch = RemoteClickHouse(url, token, timeout)
    return Reached(ch, ch.valkey_url, f"the server at {url}", True)


@contextlib.contextmanager
def reach_storage(
    settings: Settings, url: str | None = None, timeout: float = 30.0
) -> Iterator[Reached]:
    from weftline.admin import use_default_database
    from weftline.storage.clickhouse import DataFolderBusy, clickhouse_from_settings

    if url:
        reached = _remote(url, settings, timeout)
    elif settings.clickhouse_url:
        try:
            ch = clickhouse_from_settings(settings)
        except StorageError as e:
            raise CliError(unreachable_clickhouse(settings, e), 3) from e
        reached = Reached(ch, settings.valkey_url, "ClickHouse (CLICKHOUSE_URL)", False)
    else:
        data = Path(settings.data_dir)
        chdir = data / "clickhouse"
        up = lock_holder(data / DataFolderLock.NAME)  # "pid N serving URL"
        served = re.search(r"serving (\S+)", up or "")
        holder = up or lock_holder(chdir / ".weftline.lock")
        if served:
            reached = _remote(_local(served.group(1)), settings, timeout)
        elif holder:
            raise CliError(
                f"the data folder {data.resolve()} is in use by {holder}, which serves no "
                "admin endpoint: stop it, or pass --url of a running `weftline up`",
                2,
            )
        elif _initialized(chdir, settings.clickhouse_database):
            try:
                ch = clickhouse_from_settings(settings)
            except DataFolderBusy as e:  # it started in between
                raise CliError(f"{e}; run the command again", 2) from e
            reached = Reached(ch, settings.valkey_url, f"the folder {chdir.resolve()}", False)
        else:
            raise CliError(
                f"no Weftline running and no data in {data.resolve()}: start it with "
                "`weftline up`, or pass --data-dir FOLDER (or --url URL of a running one)",
                2,
            )
    try:
        if not reached.remote:
            use_default_database(reached.ch)
        yield reached
    finally:
        reached.ch.close()


def _local(url: str) -> str:
    """A server listening on every interface is asked on the loopback one."""
    return re.sub(r"^http://(0\.0\.0\.0|\[::\]|::)(:\d+)", r"http://127.0.0.1\2", url)


def unreachable_clickhouse(settings: Settings, e: Exception) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(settings.clickhouse_url or "")
    where = f"{parts.scheme}://{parts.hostname}:{parts.port or 8123}"
    text = str(e)
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno_text:
        reason = errno_text.group(1).strip()
    elif "timed out" in text.lower():
        reason = "timed out"
    else:
        reason = text.splitlines()[0][:160] if text else type(e).__name__
    return (
        f"cannot reach ClickHouse at {where} ({reason}): start it, or fix CLICKHOUSE_URL "
        "(unset it to use the embedded chDB)"
    )
