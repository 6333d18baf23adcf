"""ClickHouse access: one small interface, two transports.

Callers use `ClickHouse` only. The embedded transport runs chDB in this process;
the server transport (clickhouse-connect over HTTP) plugs in behind the same
methods. Every query takes bound parameters (`{name:Type}` placeholders); only
identifiers from validated configuration are ever put into SQL text.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

TOKEN_RE = re.compile(r"^[A-Za-z0-9:{}_.\-]{1,200}$")


def _param_text(value: Any) -> Any:
    """chDB takes parameter values as text: arrays must be ClickHouse array literals
    (quoted and escaped here; the server parses them as values, never as SQL)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return value


def _literal(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return _param_text(v)
    raise TypeError(f"unsupported array element {type(v).__name__}")


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _param_text(v) for k, v in (params or {}).items()}


class StorageError(Exception):
    """ClickHouse did not take the query; the caller may retry."""


class ClickHouse(Protocol):
    database: str

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def insert(
        self, table: str, rows: Sequence[dict[str, Any]], dedup_token: str | None = None
    ) -> int: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class DataFolderBusy(RuntimeError):
    pass


class ChdbClickHouse:
    """chDB (in-process ClickHouse) on a data folder.

    chDB allows one data path per process and is not safe for concurrent calls,
    so calls are serialized; a lock file stops two processes from opening the
    same folder (that would corrupt it).
    """

    def __init__(self, path: str | Path, database: str = "weftline") -> None:
        from chdb import session

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.database = database
        self._lockfile = open(self.path / ".weftline.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.seek(0)
            holder = self._lockfile.read().strip() or "another process"
            self._lockfile.close()
            raise DataFolderBusy(
                f"ClickHouse data folder {self.path} is in use by {holder}; stop it first"
            ) from None
        self._lockfile.seek(0)
        self._lockfile.truncate()
        self._lockfile.write(f"pid {os.getpid()}\n")
        self._lockfile.flush()
        self._lock = threading.Lock()
        self._session = session.Session(str(self.path))
        self.command(f"CREATE DATABASE IF NOT EXISTS {database}")

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self._lock:
            try:
                self._session.query(sql, "CSV", params=_params(params))
            except Exception as e:  # chDB raises its own error types
                raise StorageError(str(e)) from e

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            try:
                res = self._session.query(sql, "JSONEachRow", params=_params(params))
            except Exception as e:
                raise StorageError(str(e)) from e
            data = res.bytes()
        return [orjson.loads(line) for line in data.splitlines() if line]

    def insert(
        self, table: str, rows: Sequence[dict[str, Any]], dedup_token: str | None = None
    ) -> int:
        if not rows:
            return 0
        settings = ""
        if dedup_token is not None:
            if not TOKEN_RE.match(dedup_token):
                raise ValueError(f"bad dedup token {dedup_token!r}")
            settings = f" SETTINGS insert_deduplication_token = '{dedup_token}'"
        body = b"\n".join(orjson.dumps(r) for r in rows)
        with self._lock:
            try:
                with self._session.send_insert(
                    f"INSERT INTO {self.database}.{table}{settings}", "JSONEachRow"
                ) as ins:
                    ins.append(body)
                    ins.finish()
            except Exception as e:
                raise StorageError(str(e)) from e
        return len(rows)

    def ping(self) -> bool:
        try:
            self.query("SELECT 1 AS ok")
            return True
        except StorageError:
            return False

    def with_database(self, database: str) -> ChdbClickHouse:
        """The same chDB session seen through another database (tests isolate by database,
        since chDB allows one data folder per process)."""
        view = object.__new__(ChdbClickHouse)
        view.__dict__.update(self.__dict__)
        view.database = database
        view._owner = False
        view.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        return view

    def close(self) -> None:
        if not getattr(self, "_owner", True):
            return
        with self._lock:
            try:
                self._session.close()
            finally:
                self._lockfile.close()


def open_clickhouse(url: str | None, data_dir: str | Path, database: str) -> ClickHouse:
    if url is None:
        return ChdbClickHouse(Path(data_dir) / "clickhouse", database)
    raise NotImplementedError(
        "ClickHouse server mode (CLICKHOUSE_URL) is not built yet; unset it to run embedded"
    )
