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

from weftline.ground.config import Settings

TOKEN_RE = re.compile(r"^[A-Za-z0-9:{}_.\-]{1,200}$")


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _param_text(value: Any) -> Any:
    """chDB takes parameter values as text, read like the HTTP interface's `param_x`: in
    ClickHouse's escaped format, so a tab or backslash in a string is escaped; arrays
    must be ClickHouse array literals (quoted and escaped here; the server parses them as
    values, never as SQL)."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
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


# ClickHouse error codes that the same rows will hit on every attempt: the data itself
# cannot be parsed, converted or fitted into its column. Anything else (a full disk, too
# many parts, memory, a connection, a table missing while a migration runs, an exception in
# a view) can pass on a retry, so it is transient: a worker retries it and never drops it.
PERMANENT_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF (a truncated row)
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
        441,  # CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING
        467,  # CANNOT_PARSE_BOOL
        675,  # CANNOT_PARSE_IPV4
        676,  # CANNOT_PARSE_IPV6
    }
)
# The same, said in words (chDB and clickhouse-connect's own client-side conversions).
PERMANENT_TEXT = re.compile(
    r"CANNOT_PARSE_|exceeds 64-bit range|Decimal math overflow|out of range|"
    r"int too big to convert|cannot convert|invalid literal",
    re.I,
)
CODE_RE = re.compile(r"Code: (\d+)\.")


def _client_data_error(e: BaseException) -> bool:
    try:
        from clickhouse_connect.driver.exceptions import DataError
    except ImportError:  # pragma: no cover - a runtime dependency
        return False
    return isinstance(e, DataError)


class StorageError(Exception):
    """ClickHouse did not take the query. `permanent`: the same rows will fail the same way
    on every retry (a data error: split the batch and dead-letter the entry that fails
    alone); otherwise the caller retries with backoff and acknowledges nothing meanwhile.
    `code` is ClickHouse's error code when it gave one."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code

    @classmethod
    def from_exception(cls, e: BaseException) -> StorageError:
        text = str(e)
        code = getattr(e, "code", None)
        if not isinstance(code, int):
            m = CODE_RE.search(text)
            code = int(m.group(1)) if m else None
        if code is not None:
            permanent = code in PERMANENT_CODES
        elif _client_data_error(e):  # clickhouse-connect could not encode the rows
            permanent = True
        else:  # no server code: a client-side conversion, a connection, a timeout
            permanent = bool(PERMANENT_TEXT.search(text)) and isinstance(
                e, ValueError | TypeError | OverflowError
            )
        return cls(text, permanent=permanent, code=code)


# Views are not transactional: an INSERT whose view throws raises, yet the source table
# keeps its rows. The retry (same token) is then a duplicate for the source table, and by
# default ClickHouse would skip the views for a duplicate block; with this setting each
# view's target checks its own dedup window instead, so the retry reaches the views that
# missed the rows and the others ignore it.
VIEW_DEDUP = {"deduplicate_blocks_in_dependent_materialized_views": 1}


def _check_token(token: str) -> str:
    if not TOKEN_RE.match(token):
        raise ValueError(f"bad dedup token {token!r}")
    return token


def _insert_settings(dedup_token: str | None) -> str:
    parts = [f"{k} = {v}" for k, v in VIEW_DEDUP.items()]
    if dedup_token is not None:
        parts.append(f"insert_deduplication_token = '{_check_token(dedup_token)}'")
    return ", ".join(parts)


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
                raise StorageError.from_exception(e) from e

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            try:
                res = self._session.query(sql, "JSONEachRow", params=_params(params))
            except Exception as e:
                raise StorageError.from_exception(e) from e
            data = res.bytes()
        return [orjson.loads(line) for line in data.splitlines() if line]

    def insert(
        self, table: str, rows: Sequence[dict[str, Any]], dedup_token: str | None = None
    ) -> int:
        if not rows:
            return 0
        try:
            # One JSON array (JSONEachRow reads `[{...},{...}]` too): a single orjson call
            # instead of one per row, several times cheaper on wide rows.
            body = orjson.dumps(rows if isinstance(rows, list) else list(rows))
        except TypeError as e:  # e.g. "Integer exceeds 64-bit range": the rows themselves
            raise StorageError(str(e), permanent=True) from e
        # A plain INSERT with the rows inline, not chDB's streaming insert: send_insert()/
        # finish() report the rows as written even when ClickHouse failed (NOT_ENOUGH_SPACE,
        # an exception in a materialized view), and a worker would acknowledge rows that
        # were never kept. This form raises every server-side error.
        sql = f"INSERT INTO {self.database}.{table} SETTINGS {_insert_settings(dedup_token)}"
        with self._lock:
            try:
                self._session.query(f"{sql} FORMAT JSONEachRow\n{body.decode()}", "CSV")
            except Exception as e:
                raise StorageError.from_exception(e) from e
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


class ClickHouseConnect:
    """A ClickHouse server over HTTP with clickhouse-connect (server mode).

    - Inserts travel as Native, compressed (lz4), each with its own
      `insert_deduplication_token` setting; rows the Native converter is unsure about
      travel as JSONEachRow instead (see storage/native_rows.py), with the same token.
    - Reads ask for JSONEachRow (compressed), so callers get exactly the values the
      embedded transport returns.
    - Parameters are bound by the server (`{name:Type}` → `param_name`).
    - No HTTP session: one client serves every thread, and server-side session locks
      would serialize them.
    The client connects lazily and reconnects on the next call after a failure, so a
    process can start before ClickHouse does.
    """

    def __init__(
        self,
        url: str,
        database: str = "weftline",
        *,
        insert_settings: dict[str, Any] | None = None,
        cluster: str | None = None,
        connect_timeout: int = 5,
        send_receive_timeout: int = 120,
        _client: Any = None,
    ) -> None:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "clickhouse"):
            raise ValueError(f"CLICKHOUSE_URL must be http(s)://host:port, not {url!r}")
        secure = parts.scheme == "https"
        self.url = url
        self._conn_args = {
            "host": parts.hostname or "localhost",
            "port": parts.port or (8443 if secure else 8123),
            "username": unquote(parts.username or "default"),
            "password": unquote(parts.password or ""),
            "interface": "https" if secure else "http",
            "compress": True,
            "autogenerate_session_id": False,
            "connect_timeout": connect_timeout,
            "send_receive_timeout": send_receive_timeout,
        }
        self.database = database
        self.insert_settings = dict(insert_settings or {})
        # On a cluster, migrations run ON CLUSTER (storage/migrate.py), and inserts into
        # the Distributed tables reach the shards before the insert returns, so the
        # dedup token and "stored" mean the same as on one server.
        self.cluster = cluster
        if cluster:
            self.insert_settings.setdefault("distributed_foreground_insert", 1)
        self.native_fallbacks = 0
        self._client_obj = _client
        self._client_lock = threading.Lock()
        self._types: dict[str, dict[str, str]] = {}
        self._owner = _client is None
        on_cluster = f" ON CLUSTER '{cluster}'" if cluster else ""
        self.command(f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")

    def _client(self) -> Any:
        with self._client_lock:
            if self._client_obj is None:
                import clickhouse_connect

                try:
                    self._client_obj = clickhouse_connect.get_client(**self._conn_args)
                except Exception as e:
                    raise StorageError(f"ClickHouse at {self._safe_url()}: {e}") from e
            return self._client_obj

    def _safe_url(self) -> str:
        a = self._conn_args
        return f"{a['interface']}://{a['host']}:{a['port']}"

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        client = self._client()
        try:
            client.command(sql, parameters=params or None)
        except Exception as e:
            raise StorageError.from_exception(e) from e

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        client = self._client()
        try:
            data = client.raw_query(
                sql,
                parameters=params or None,
                fmt="JSONEachRow",
                # Pinned so both transports return the same JSON whatever the server's
                # default (it changed in ClickHouse 25.x).
                settings={
                    "enable_http_compression": 1,
                    "output_format_json_quote_64bit_integers": 0,
                },
                transport_settings={"Accept-Encoding": "gzip"},
            )
        except Exception as e:
            raise StorageError.from_exception(e) from e
        return [orjson.loads(line) for line in data.splitlines() if line]

    def column_types(self, table: str, names: Sequence[str] = ()) -> dict[str, str]:
        types = self._types.get(table)
        if types is None or any(n not in types for n in names):  # a migration added one
            rows = self.query(f"DESCRIBE TABLE {self.database}.{table}")
            types = {
                r["name"]: r["type"]
                for r in rows
                if r.get("default_type") not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")
            }
            self._types[table] = types
        return types

    def insert(
        self, table: str, rows: Sequence[dict[str, Any]], dedup_token: str | None = None
    ) -> int:
        from weftline.storage.native_rows import to_columns

        if not rows:
            return 0
        settings = {**VIEW_DEDUP, **self.insert_settings}
        if dedup_token is not None:
            settings["insert_deduplication_token"] = _check_token(dedup_token)
        client = self._client()
        try:
            types = self.column_types(table, list(rows[0]))
            native = to_columns(rows, types, client.server_tz)
            if native is not None:
                names, type_names, data = native
                client.insert(
                    table,
                    data,
                    column_names=names,
                    database=self.database,
                    column_type_names=type_names,
                    settings=settings,
                )
            else:
                import gzip

                self.native_fallbacks += 1
                body = orjson.dumps(rows if isinstance(rows, list) else list(rows))
                client.raw_insert(
                    f"{self.database}.{table}",
                    insert_block=gzip.compress(body, 3),
                    settings=settings,
                    fmt="JSONEachRow",
                    compression="gzip",
                )
        except Exception as e:
            self._types.pop(table, None)  # the schema may have moved on
            raise StorageError.from_exception(e) from e
        return len(rows)

    def ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except StorageError:
            return False

    def with_database(self, database: str) -> ClickHouseConnect:
        """The same client seen through another database (tests isolate by database)."""
        return ClickHouseConnect(
            self.url,
            database,
            insert_settings=self.insert_settings,
            cluster=self.cluster,
            _client=self._client(),
        )

    def close(self) -> None:
        if self._owner and self._client_obj is not None:
            self._client_obj.close()
            self._client_obj = None


def open_clickhouse(
    url: str | None,
    data_dir: str | Path,
    database: str,
    *,
    insert_settings: dict[str, Any] | None = None,
    cluster: str | None = None,
) -> ClickHouse:
    """chDB in the data folder when `url` is None (embedded), else a ClickHouse server over
    HTTP (`CLICKHOUSE_URL`, e.g. http://user:password@clickhouse:8123)."""
    if url is None:
        return ChdbClickHouse(Path(data_dir) / "clickhouse", database)
    return ClickHouseConnect(url, database, insert_settings=insert_settings, cluster=cluster)


def clickhouse_from_settings(settings: Settings) -> ClickHouse:
    """The one way the processes open ClickHouse: from the settings' URL, data folder,
    database and cluster, so no command forgets one of them."""
    return open_clickhouse(
        settings.clickhouse_url,
        settings.data_dir,
        settings.clickhouse_database,
        cluster=settings.clickhouse_cluster,
    )
