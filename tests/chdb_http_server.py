"""TEST FIXTURE: a ClickHouse-HTTP-compatible endpoint served from chDB.

Not part of Weftline. No recent ClickHouse server can be installed where the tests run, so
the server transport (clickhouse-connect over HTTP) is exercised against this endpoint:
the real client library, the real SQL and the real wire formats, with the real ClickHouse
engine (chDB) behind it. It implements the part of ClickHouse's HTTP interface that
clickhouse-connect uses:

- `GET /ping`, `GET /` → `Ok.`; queries by `POST /` (query in the body, or in `?query=`
  with the body as INSERT data) and `GET /?query=` (read-only, as ClickHouse does);
- URL parameters: `database`, `default_format`, `query_id`, `session_id`,
  `session_check`, `readonly`, `param_<name>` (server-side bound parameters, passed to
  the engine unparsed, as escaped text), and any other name as a ClickHouse setting
  (unknown names fail with UNKNOWN_SETTING, like the server);
- multipart/form-data bodies (clickhouse-connect moves long bound parameters there);
- request bodies with `Content-Encoding` lz4 (frame), zstd, br, gzip, deflate, and
  chunked transfer encoding; response compression with `enable_http_compression=1` and
  `Accept-Encoding`;
- any output format the engine has (clickhouse-connect asks for Native, TabSeparated
  and JSON); INSERT data in any input format (clickhouse-connect sends Native);
- sessions: `SET` and `USE` persist per `session_id`; a session busy with another query
  answers SESSION_IS_LOCKED;
- errors as ClickHouse sends them: the status from ClickHouse's exception→HTTP table,
  `X-ClickHouse-Exception-Code`, a `Code: N. DB::Exception: … (NAME) (version …)` body;
- `X-ClickHouse-Query-Id`, `-Format`, `-Timezone`, `-Summary` response headers.

What it does not do: the native protocol's block info header (`client_protocol_version`
is accepted and ignored, so clients fall back to protocol 0, which clickhouse-connect
handles), ClickHouse's own `compress=1`/`decompress=1` block format, external data
tables, authentication, progress headers, temporary tables in sessions. Queries run one
at a time (chDB is not safe for concurrent calls).

Fault injection for tests, on `/_fixture/faults` (POST a JSON object): `insert_delay`
(seconds to hold every INSERT after receiving it), `insert_marker` (a file written when an
INSERT arrives), `fail_next` (answer the next N queries with a 503 error).

Run: python tests/chdb_http_server.py --data DIR [--host 127.0.0.1] [--port 8123]
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import email.policy
import gzip
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Names that steer the HTTP handler itself; everything else in the URL is a setting.
TRANSPORT_PARAMS = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "user",
    "password",
    "quota_key",
    "buffer_size",
    "wait_end_of_query",
    "client_protocol_version",
    "role",
    "stacktrace",
    "readonly",
    "compress",
    "decompress",
}

READ_ONLY_RE = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN)\b", re.I)
TRAILING_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.I)
INSERT_FORMAT_RE = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)[ \t]*(\r?\n)?",
    re.I | re.S,
)
SET_RE = re.compile(r"^\s*SET\s+(?P<body>.+?)\s*;?\s*$", re.I | re.S)
USE_RE = re.compile(r"^\s*USE\s+`?(?P<db>[A-Za-z0-9_]+)`?\s*;?\s*$", re.I)
CODE_RE = re.compile(r"Code:\s*(\d+)\.")

# ClickHouse's exception→HTTP status table (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
# by error name; numbers come from the engine itself at start-up.
STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        [
            "UNKNOWN_USER",
            "WRONG_PASSWORD",
            "AUTHENTICATION_FAILED",
            "SET_NON_GRANTED_ROLE",
            "ACCESS_DENIED",
        ],
        403,
    ),
    **dict.fromkeys(
        [
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ],
        400,
    ),
    **dict.fromkeys(
        [
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ],
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
}


class QueryFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data, 3)
    if encoding == "deflate":
        return zlib.compress(data, 3)
    if encoding == "br":
        import brotli

        return brotli.compress(data, quality=3)
    if encoding == "zstd":
        from backports import zstd

        return zstd.compress(data)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.compress(data)
    raise ValueError(encoding)


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        try:
            return zlib.decompress(data)
        except zlib.error:
            return zlib.decompress(data, -zlib.MAX_WBITS)
    if encoding == "br":
        import brotli

        return brotli.decompress(data)
    if encoding == "zstd":
        from backports import zstd

        return zstd.decompress(data)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise QueryFailed(-1, f"Unknown compression method: {encoding}")


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Session:
    def __init__(self) -> None:
        self.settings: dict[str, str] = {}
        self.database: str | None = None
        self.busy = False
        self.used = time.monotonic()


class Engine:
    """chDB behind a lock, with the server's per-query settings and database."""

    def __init__(self, data_dir: str | Path) -> None:
        from chdb import session

        self._s = session.Session(str(data_dir))
        self.lock = threading.Lock()
        rows = self._run("SELECT version(), timezone()", "TabSeparated").decode().split("\t")
        self.version, self.timezone = rows[0], rows[1].strip()
        self.baseline = dict(self._tsv("SELECT name, value FROM system.settings"))
        self.code_names = {
            int(c): n
            for c, n in self._tsv(
                "SELECT number, errorCodeToName(number) AS n FROM numbers(2000) WHERE n != ''"
            )
        }
        self.codes = {n: c for c, n in self.code_names.items()}
        self.applied: dict[str, str] = {}
        self.current_db = "default"

    def _run(self, sql: str, fmt: str, params: dict[str, str] | None = None) -> bytes:
        return self._s.query(sql, fmt, params=params or {}).bytes()

    def _tsv(self, sql: str) -> list[list[str]]:
        out = self._run(sql, "TabSeparated").decode()
        return [line.split("\t") for line in out.splitlines() if line]

    def code_of(self, name: str, default: int = 1000) -> int:
        return self.codes.get(name, default)

    def status_of(self, code: int) -> int:
        return STATUS_BY_NAME.get(self.code_names.get(code, ""), 500)

    def prepare(self, settings: dict[str, str], database: str) -> None:
        """Make the session's settings exactly `settings` (on top of the baseline)."""
        for name in list(self.applied):
            if name not in settings:
                self._s.query(f"SET {name} = {_sql_string(self.baseline[name])}")
                del self.applied[name]
        for name, value in settings.items():
            if name not in self.baseline:
                raise QueryFailed(
                    self.code_of("UNKNOWN_SETTING"),
                    f"Code: {self.code_of('UNKNOWN_SETTING')}. DB::Exception: Unknown setting "
                    f"'{name}'. (UNKNOWN_SETTING)",
                )
            if self.applied.get(name) != value:
                self._s.query(f"SET {name} = {_sql_string(value)}")
                self.applied[name] = value
        if database != self.current_db:
            self._s.query(f"USE `{database}`")
            self.current_db = database

    def execute(self, sql: str, fmt: str, params: dict[str, str]) -> tuple[bytes, Any]:
        res = self._s.query(sql, fmt, params=params)
        return res.bytes(), res

    def insert_file(self, target: str, fmt: str, data: bytes) -> Any:
        # chDB reads INSERT data from a file; the body goes there unchanged.
        with tempfile.NamedTemporaryFile(suffix="." + fmt.lower(), delete=False) as f:
            f.write(data)
            path = f.name
        try:
            return self._s.query(
                f"INSERT INTO {target} FROM INFILE {_sql_string(path)} FORMAT {fmt}"
            )
        finally:
            os.unlink(path)


class Faults:
    def __init__(self) -> None:
        self.insert_delay = 0.0
        self.insert_marker: str | None = None
        self.fail_next = 0
        self.lock = threading.Lock()

    def take_failure(self) -> bool:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False


class Request:
    def __init__(self, method: str, params: dict[str, str], body: bytes, headers: Any) -> None:
        self.method = method
        self.params = params
        self.body = body
        self.headers = headers


def _parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_param("filename", header="content-disposition") is not None:
            raise QueryFailed(
                48,
                "Code: 48. DB::Exception: external data is not served by the "
                "test fixture. (NOT_IMPLEMENTED)",
            )
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = payload.decode()
    return fields


class Server:
    def __init__(self, data_dir: str | Path) -> None:
        self.engine = Engine(data_dir)
        self.sessions: dict[str, Session] = {}
        self.sessions_lock = threading.Lock()
        self.faults = Faults()

    def _fail(self, name: str, text: str) -> QueryFailed:
        code = self.engine.code_of(name)
        return QueryFailed(code, f"Code: {code}. DB::Exception: {text}. ({name})")

    def handle(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        query_id = req.params.get("query_id") or str(uuid.uuid4())
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "X-ClickHouse-Server-Display-Name": "chdb-http-fixture",
        }
        session: Session | None = None
        try:
            params = dict(req.params)
            body = _decompress(req.body, req.headers.get("Content-Encoding", ""))
            ctype = req.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data"):
                params.update(_parse_multipart(body, ctype))
                body = b""
            session = self._enter_session(params)
            status, extra, out = self._execute(req.method, params, body, session)
            headers.update(extra)
            return status, headers, self._encode(out, req, params, session, headers)
        except QueryFailed as e:
            msg = e.message
            code = e.code if e.code >= 0 else self.engine.code_of("UNKNOWN_COMPRESSION_METHOD")
            if "(version " not in msg:
                msg = f"{msg} (version {self.engine.version})"
            headers["X-ClickHouse-Exception-Code"] = str(code)
            headers["Content-Type"] = "text/plain; charset=UTF-8"
            status = 503 if code == self.engine.code_of("SOCKET_TIMEOUT") else None
            return status or self.engine.status_of(code), headers, (msg + "\n").encode()
        finally:
            if session is not None:
                with self.sessions_lock:
                    session.busy = False

    def _enter_session(self, params: dict[str, str]) -> Session | None:
        sid = params.get("session_id")
        if not sid:
            return None
        with self.sessions_lock:
            s = self.sessions.get(sid)
            if s is None:
                if params.get("session_check") == "1":
                    raise self._fail("SESSION_NOT_FOUND", f"Session {sid} not found")
                s = self.sessions[sid] = Session()
            if s.busy:
                raise self._fail(
                    "SESSION_IS_LOCKED", f"Session {sid} is locked by a concurrent client"
                )
            s.busy = True
            s.used = time.monotonic()
            return s

    def _execute(
        self, method: str, params: dict[str, str], body: bytes, session: Session | None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.faults.take_failure():
            raise self._fail("SOCKET_TIMEOUT", "injected failure (test fixture)")
        bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = dict(session.settings) if session else {}
        settings.update(
            {
                k: v
                for k, v in params.items()
                if k not in TRANSPORT_PARAMS and not k.startswith("param_")
            }
        )
        database = params.get("database") or (session.database if session else None) or "default"
        query = params.get("query", "")
        data = b""
        m = INSERT_FORMAT_RE.match(query) if query else None
        if m and body:
            data = body
        else:
            text = query + body.decode("utf-8", errors="surrogateescape")
            m = INSERT_FORMAT_RE.match(text)
            if m and len(text) > m.end():
                data = text[m.end() :].encode("utf-8", errors="surrogateescape")
                query = text[: m.end()]
            else:
                m = None
                query = text
        if not query.strip():
            raise self._fail("SYNTAX_ERROR", "Empty query")
        readonly = params.get("readonly", "0") != "0" or method == "GET"
        if readonly and (m or not READ_ONLY_RE.match(query)) and not SET_RE.match(query):
            raise self._fail(
                "READONLY",
                "Cannot execute query in readonly mode. For queries over HTTP, method GET "
                "implies readonly. You should use method POST for modifying queries",
            )
        started = time.perf_counter_ns()
        if m:
            if self.faults.insert_marker:
                Path(self.faults.insert_marker).write_text(str(time.time()))
            if self.faults.insert_delay:
                time.sleep(self.faults.insert_delay)
        with self.engine.lock:
            try:
                self.engine.prepare(settings, database)
                set_m, use_m = SET_RE.match(query), USE_RE.match(query)
                if m:
                    res = self.engine.insert_file(m.group("target"), m.group("fmt"), data)
                    out, fmt = b"", "TabSeparated"
                else:
                    fm = TRAILING_FORMAT_RE.search(query)
                    fmt = fm.group(1) if fm else params.get("default_format", "TabSeparated")
                    out, res = self.engine.execute(query, fmt, bind)
                if set_m:
                    # Ask the engine what the SET changed (it parses the statement); only a
                    # session keeps it, but the engine state must be tracked either way.
                    changed = dict(
                        self.engine._tsv("SELECT name, value FROM system.settings WHERE changed")
                    )
                    for name, value in changed.items():
                        if self.engine.baseline.get(name) != value:
                            if session is not None and settings.get(name) != value:
                                session.settings[name] = value
                            self.engine.applied[name] = value
                if use_m:
                    self.engine.current_db = use_m.group("db")
                    if session is not None:
                        session.database = use_m.group("db")
            except QueryFailed:
                raise
            except Exception as e:  # chDB raises its own types with ClickHouse's text
                text = str(e)
                cm = CODE_RE.search(text)
                code = int(cm.group(1)) if cm else self.engine.code_of("STD_EXCEPTION", 1001)
                # chDB repeats "Code: N. DB::Exception:" once; ClickHouse says it once.
                text = re.sub(r"^(Code: \d+\. DB::Exception: )\1", r"\1", text)
                raise QueryFailed(code, text) from None
        summary = {
            "read_rows": str(res.rows_read()),
            "read_bytes": str(res.bytes_read()),
            "written_rows": str(res.rows_written()),
            "written_bytes": str(res.bytes_written()),
            "total_rows_to_read": "0",
            "result_rows": "0",
            "result_bytes": str(len(out)),
            "elapsed_ns": str(time.perf_counter_ns() - started),
        }
        headers = {
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":")),
            "Content-Type": CONTENT_TYPES.get(
                fmt,
                "application/json; charset=UTF-8"
                if fmt.startswith("JSON")
                else "application/octet-stream",
            ),
        }
        return 200, headers, out

    def _encode(
        self,
        out: bytes,
        req: Request,
        params: dict[str, str],
        session: Session | None,
        headers: dict[str, str],
    ) -> bytes:
        enabled = params.get("enable_http_compression") or (
            session.settings.get("enable_http_compression") if session else None
        )
        if enabled not in ("1", "true", "True"):
            return out
        accepted = [
            a.split(";")[0].strip().lower()
            for a in req.headers.get("Accept-Encoding", "").split(",")
        ]
        for enc in accepted:
            if enc in ("gzip", "deflate", "br", "zstd", "lz4"):
                headers["Content-Encoding"] = enc
                return _compress(out, enc)
        return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-http-fixture"
    app: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "Keep-Alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._read_body()
        if url.path in ("/ping", "/") and "query" not in params and not body:
            self._send(200, {"Content-Type": "text/html; charset=UTF-8"}, b"Ok.\n")
            return
        if url.path == "/_fixture/faults" and self.command == "POST":
            spec = json.loads(body or b"{}")
            f = self.app.faults
            with f.lock:
                f.insert_delay = float(spec.get("insert_delay", f.insert_delay))
                f.insert_marker = spec.get("insert_marker", f.insert_marker)
                f.fail_next = int(spec.get("fail_next", f.fail_next))
            self._send(200, {"Content-Type": "application/json"}, b"{}")
            return
        if url.path != "/":
            self._send(
                404,
                {"Content-Type": "text/plain; charset=UTF-8"},
                f"There is no handle {url.path}\n".encode(),
            )
            return
        status, headers, out = self.app.handle(Request(self.command, params, body, self.headers))
        self._send(status, headers, out)

    do_GET = do_POST = do_HEAD = _dispatch


def make_server(data_dir: str | Path, host: str, port: int) -> ThreadingHTTPServer:
    Handler.app = Server(data_dir)
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    return httpd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8123)
    args = p.parse_args(argv)
    httpd = make_server(args.data, args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"chdb-http-fixture listening on http://{args.host}:{httpd.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
