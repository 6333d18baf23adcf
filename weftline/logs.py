"""Logging: text or JSON lines on stderr, and the HTTP middleware that times every request
(`weftline_http_request_duration_seconds`) and, when asked, writes an access log line with
a request id (also sent back as `X-Request-Id`)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from weftline.ground.metrics import HTTP_REQUEST_SECONDS

access_log = logging.getLogger("weftline.access")

# Label values from fixed sets only: a method outside these is "other", a path no route
# matched is "unmatched" (never the client's path).
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"}
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if fmt == "json":
        JsonFormatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    if level != "debug":
        # Their retry warnings repeat what the one-line error says.
        for name in ("urllib3", "urllib3.connectionpool", "clickhouse_connect"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _route_of(scope: dict[str, Any]) -> str:
    route = scope.get("route")  # set by Starlette's router on the scope it was given
    path = getattr(route, "path", None)
    if not path:
        return "unmatched"
    mount = scope.get("root_path", "")
    return path if not mount else mount + path


class RequestMetrics:
    """ASGI middleware: duration by route template, method and status; access log."""

    def __init__(self, app: Any, access: bool = False) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = ""
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if REQUEST_ID_RE.match(cand) else ""
                break
        rid = rid or uuid.uuid4().hex[:16]
        status = [500]

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope.get("method", "GET")
            method = method if method in METHODS else "other"
            route = _route_of(scope)
            HTTP_REQUEST_SECONDS.labels(route, method, str(status[0])).observe(seconds)
            if self.access:
                # The path without its query string: `?key=` carries ingest keys.
                access_log.info(
                    "%s %s %d %.1f ms",
                    method,
                    scope.get("path", ""),
                    status[0],
                    seconds * 1000,
                    extra={
                        "request_id": rid,
                        "route": route,
                        "status": status[0],
                        "duration_ms": round(seconds * 1000, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )
