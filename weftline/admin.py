"""The admin endpoint: read-only SQL against the running server's storage.

In embedded mode the running `weftline up` owns the chDB folder (one process per folder),
so `weftline query`, `alerts evaluate-once` and `grafana check` ask it instead of opening
the folder: `POST /api/v1/admin/query` runs one statement, read-only, bounded in time and
rows, and `GET /api/v1/admin/info` tells them the database and the Valkey to read named
metrics from. Both take the admin token (`admin_token`, or the one made once and kept in
`<data_dir>/admin-token`, readable by the folder's owner only) as a Bearer token; it reads
every project, so a project's query token is not enough, and the cookie is never read.

`bounded_sql` is also what the commands use when they open the folder themselves, so a
query means the same on both paths.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.ground.config import Settings, kept_secret
from weftline.ground.projects import ApiError
from weftline.ground.rejections import Reason
from weftline.storage.clickhouse import ClickHouse, StorageError

ADMIN_TOKEN_FILE = "admin-token"
MAX_ROWS = 100_000
MAX_SECONDS = 300.0
# Statement kinds that read: SELECT/WITH are wrapped (so LIMIT and SETTINGS apply to the
# whole of it), the others take the SETTINGS clause as they are.
WRAPPED = {"SELECT", "WITH"}
SUFFIXED = {"SHOW", "DESCRIBE", "DESC", "EXISTS"}


class NotReadOnly(ValueError):
    pass


def ensure_admin_token(settings: Settings) -> str:
    """Configured, or made once and kept in the data folder (mode 0600)."""
    if not settings.admin_token:
        settings.admin_token = kept_secret(
            settings.data_dir, ADMIN_TOKEN_FILE, lambda: secrets.token_hex(24)
        )
    return settings.admin_token


def read_admin_token(settings: Settings) -> str | None:
    """The CLI's side: configured, from the environment, or the data folder's; never made."""
    if settings.admin_token:
        return settings.admin_token
    path = Path(settings.data_dir) / ADMIN_TOKEN_FILE
    return path.read_text().strip() if path.exists() else None


def _skip_noise(sql: str, i: int) -> int:
    """Past whitespace, comments and opening parentheses from position i."""
    n = len(sql)
    while i < n:
        if sql[i].isspace() or sql[i] == "(":
            i += 1
        elif sql.startswith("--", i) or sql[i] == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    return i


def _statement_end(sql: str) -> int:
    """Where the first statement ends: the first `;` outside quotes and comments (or len).
    Quotes follow ClickHouse's lexer: '…' strings, "…" and `…` identifiers, backslash
    escapes and doubled quotes."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
            i += 1  # the closing quote; a doubled quote reopens on the next pass
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == ";":
            return i
        else:
            i += 1
    return n


def bounded_sql(sql: str, max_rows: int, max_seconds: float) -> tuple[str, int]:
    """One read-only statement with its bounds, and the offset of the user's text in it
    (ClickHouse's syntax errors give positions). Raises NotReadOnly otherwise."""
    end = _statement_end(sql)
    rest = sql[end:].lstrip("; \t\r\n")
    if rest:
        raise NotReadOnly("one statement at a time (there is text after the `;`)")
    body = sql[:end].rstrip()
    start = _skip_noise(body, 0)
    word = re.match(r"[A-Za-z]+", body[start:])
    kind = word.group(0).upper() if word else ""
    settings = (
        f"SETTINGS readonly = 1, max_execution_time = {max_seconds:g}, "
        "timeout_overflow_mode = 'throw'"
    )
    if kind in WRAPPED:
        prefix = "SELECT * FROM (\n"
        return f"{prefix}{body}\n) LIMIT {int(max_rows) + 1} {settings}", len(prefix)
    if kind in SUFFIXED:
        return f"{body}\n{settings}", 0
    shown = (body[start:].split() or [""])[0][:40]
    raise NotReadOnly(
        f"{shown!r} is not a read-only statement: only SELECT, WITH, SHOW, DESCRIBE and "
        "EXISTS run here"
    )


def use_default_database(ch: ClickHouse) -> None:
    """Unqualified table names mean Weftline's database, as a user types them.

    chDB: `USE` on the session (every other statement of Weftline qualifies its tables,
    so this changes nothing for them). Server: the HTTP client's default database."""
    client_of = getattr(ch, "_client", None)
    if callable(client_of):
        client_of().database = ch.database
    else:
        ch.command(f"USE {ch.database}")


_POSITION = re.compile(r"(failed at position )(\d+)")
_LINE = re.compile(r"\(line (\d+), col")


def one_line_error(e: Exception, offset: int = 0) -> str:
    """ClickHouse's message without its stack trace, its positions in the user's text."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    first = re.sub(r"^Code: \d+\. DB::Exception: ", "", first)
    first = re.sub(r"\. Stack trace:.*$", "", first)
    if offset:  # the user's text starts on the wrapper's second line
        first = _POSITION.sub(lambda m: m.group(1) + str(max(1, int(m.group(2)) - offset)), first)
        first = _LINE.sub(lambda m: f"(line {max(1, int(m.group(1)) - 1)}, col", first)
    return first


@dataclass
class Result:
    rows: list[dict[str, Any]]
    truncated: bool
    elapsed_ms: float


def run_bounded(
    ch: ClickHouse,
    sql: str,
    params: dict[str, Any] | None = None,
    max_rows: int = 1000,
    max_seconds: float = 30.0,
) -> Result:
    """Run one read-only statement with its bounds (raises NotReadOnly, StorageError)."""
    max_rows = max(1, min(int(max_rows), MAX_ROWS))
    max_seconds = max(0.1, min(float(max_seconds), MAX_SECONDS))
    wrapped, offset = bounded_sql(sql, max_rows, max_seconds)
    use_default_database(ch)
    t = time.perf_counter()
    try:
        rows = ch.query(wrapped, params)
    except StorageError as e:
        raise StorageError(one_line_error(e, offset)) from e
    truncated = len(rows) > max_rows
    return Result(rows[:max_rows], truncated, (time.perf_counter() - t) * 1000)


class AdminApi:
    def __init__(self, settings: Settings, ch_of, valkey_url: str | None) -> None:
        self.settings = settings
        self.ch_of = ch_of  # the runtime's ClickHouse, once the lifespan opened it
        self.valkey_url = valkey_url

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/admin/query", self.query, methods=["POST"]),
            Route("/api/v1/admin/info", self.info, methods=["GET"]),
        ]

    def _authorize(self, request: Request) -> None:
        want = self.settings.admin_token
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not want or scheme.lower() != "bearer":
            raise ApiError(Reason.UNAUTHORIZED, "send the admin token as a Bearer token")
        if not hmac.compare_digest(token.strip().encode(), want.encode()):
            raise ApiError(Reason.FORBIDDEN, "not the admin token")

    def _ch(self) -> ClickHouse:
        ch = self.ch_of()
        if ch is None:
            raise ApiError(Reason.STORAGE_UNAVAILABLE, "no ClickHouse here (--ingest-only)")
        return ch

    async def info(self, request: Request) -> Response:
        try:
            self._authorize(request)
            ch = self._ch()
        except ApiError as e:
            return e.response()
        return JSONResponse(
            {"database": ch.database, "valkey_url": self.valkey_url, "pid": os.getpid()}
        )

    async def query(self, request: Request) -> Response:
        try:
            self._authorize(request)
            ch = self._ch()
            try:
                body = json.loads(await request.body())
            except ValueError as e:
                raise ApiError(Reason.BAD_PARAMETER, f"the body is not JSON: {e}") from e
            if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
                raise ApiError(Reason.BAD_PARAMETER, 'send {"sql": "SELECT …"}')
            params = body.get("params") or {}
            if not isinstance(params, dict):
                raise ApiError(Reason.BAD_PARAMETER, "params must be an object")
            try:
                max_rows = int(body.get("max_rows", 1000))
                max_seconds = float(body.get("timeout_seconds", 30))
            except (TypeError, ValueError) as e:
                raise ApiError(Reason.BAD_PARAMETER, "max_rows and timeout_seconds: numbers") from e
            try:
                res = await asyncio.to_thread(
                    run_bounded, ch, body["sql"], params, max_rows, max_seconds
                )
            except NotReadOnly as e:
                raise ApiError(Reason.NOT_READ_ONLY, str(e)) from e
            except StorageError as e:
                raise ApiError(Reason.QUERY_FAILED, str(e)) from e
        except ApiError as e:
            return e.response()
        return JSONResponse(
            {"rows": res.rows, "truncated": res.truncated, "elapsed_ms": round(res.elapsed_ms, 1)}
        )
