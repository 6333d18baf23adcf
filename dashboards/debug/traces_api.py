"""Read API for traces and logs (query token as `Authorization: Bearer`).

- `GET /api/v1/traces/{trace_id}`: one trace as a tree (spans in depth-first order with
  depth, children, offset and duration), its services, linked sessions and errors;
- `GET /api/v1/traces?service=&from=&to=&min_duration_ms=&status=&session_id=&limit=`:
  trace summaries, newest first; `session_id` gives every trace with a span tied to
  that session;
- `GET /api/v1/logs?service=&from=&to=&trace_id=&session_id=&min_severity=&q=&limit=`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.dashboards.debug.api import parse_limit, parse_time
from weftline.ground.otlp_wire import hex_id, normalize_status
from weftline.ground.projects import ApiError, Projects, authorize, storage_unavailable
from weftline.ground.rejections import Reason
from weftline.ground.times import api_time
from weftline.storage import timeline_queries
from weftline.storage import trace_queries as tq
from weftline.storage.clickhouse import ClickHouse, StorageError

SEVERITY_FLOORS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _iso(ns: int) -> str | None:
    return api_time(int(ns) // 1_000_000)


def build_tree(spans: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """Spans (each with start_ns, duration_ns) → depth-first order with depth, children
    and offsets from the trace start. A span whose parent is missing becomes a root
    (`orphan`); parent cycles are cut, so every span appears exactly once."""
    if not spans:
        return [], 0, 0
    for s in spans:
        s["start_ns"] = int(s["start_ns"])
        s["duration_ns"] = int(s["duration_ns"])
    t0 = min(s["start_ns"] for s in spans)
    t1 = max(s["start_ns"] + s["duration_ns"] for s in spans)
    by_id: dict[str, dict[str, Any]] = {}
    for s in sorted(spans, key=lambda s: (s["start_ns"], s["span_id"])):
        by_id.setdefault(s["span_id"], s)
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for sid, s in by_id.items():
        parent = s["parent_span_id"]
        if parent and parent in by_id and parent != sid:
            children.setdefault(parent, []).append(sid)
        else:
            roots.append(sid)
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(root: str) -> None:
        stack = [(root, 0)]
        while stack:
            sid, depth = stack.pop()
            if sid in seen:
                continue
            seen.add(sid)
            s = by_id[sid]
            kids = [k for k in children.get(sid, []) if k not in seen]
            ordered.append(_span_view(s, depth, kids, t0))
            stack.extend((k, depth + 1) for k in reversed(kids))

    for r in roots:
        walk(r)
    for sid in by_id:  # only spans on a parent cycle are left
        if sid not in seen:
            by_id[sid]["_cycle"] = True
            walk(sid)
    return ordered, t0, t1


def _span_view(s: dict[str, Any], depth: int, kids: list[str], t0: int) -> dict[str, Any]:
    start = s["start_ns"]
    return {
        "span_id": s["span_id"],
        "parent_span_id": s["parent_span_id"] or None,
        "depth": depth,
        "children": kids,
        "orphan": bool(s["parent_span_id"]) and depth == 0,
        "name": s["name"],
        "service": s["service_name"],
        "kind": s["kind"],
        "source": s["source"],
        "op": s["op"] or None,
        "status": s["status_code"],
        "status_message": s["status_message"] or None,
        "start": _iso(start),
        "offset_ms": _ms(start - t0),
        "duration_ms": _ms(s["duration_ns"]),
        "session_id": s["session_id"] or None,
        "attributes": s["attributes"],
        "resource_attributes": s["resource_attributes"],
        "events": [
            {"offset_ms": _ms(int(t) - t0), "name": n, "attributes": a}
            for t, n, a in zip(
                s["event_times_ns"], s["event_names"], s["event_attributes"], strict=False
            )
        ],
        "links": [
            {"trace_id": t, "span_id": i, "attributes": a}
            for t, i, a in zip(
                s["link_trace_ids"], s["link_span_ids"], s["link_attributes"], strict=False
            )
        ],
    }


def _errors(ordered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in ordered:
        exceptions = [
            {
                "type": e["attributes"].get("exception.type"),
                "message": e["attributes"].get("exception.message"),
                "offset_ms": e["offset_ms"],
            }
            for e in s["events"]
            if e["name"] == "exception"
        ]
        if s["status"] == "error" or exceptions:
            out.append(
                {
                    "span_id": s["span_id"],
                    "name": s["name"],
                    "service": s["service"],
                    "message": s["status_message"],
                    "exceptions": exceptions,
                }
            )
    return out


def trace_filter(q: Mapping[str, str]) -> tq.TraceFilter:
    """The trace list's filters from query parameters (the API's and the UI's)."""
    status = None
    if q.get("status"):
        status = normalize_status(q["status"])
        if status not in ("ok", "error"):
            raise ApiError(Reason.BAD_PARAMETER, "status must be ok or error")
    return tq.TraceFilter(
        start=parse_time(q.get("from"), "from"),
        end=parse_time(q.get("to"), "to"),
        service=q.get("service") or None,
        min_duration_ns=_duration_ms(q.get("min_duration_ms")),
        status=status,
        session_id=q.get("session_id") or None,
        limit=parse_limit(q.get("limit"), maximum=1000),
    )


def _duration_ms(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(Reason.BAD_PARAMETER, "min_duration_ms must be a number") from None
    if not 0 <= v < 1e12:
        raise ApiError(Reason.BAD_PARAMETER, "min_duration_ms out of range")
    return int(v * 1_000_000)


def _severity(raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    if raw.isdigit() and int(raw) <= 255:
        return int(raw)
    floor = SEVERITY_FLOORS.get(raw.lower())
    if floor is None:
        raise ApiError(
            Reason.BAD_PARAMETER, f"min_severity: a number or one of {sorted(SEVERITY_FLOORS)}"
        )
    return floor


def _trace_id_param(raw: str | None, name: str = "trace_id") -> str | None:
    if raw is None or raw == "":
        return None
    tid = hex_id(raw, 16)
    if tid is None:
        raise ApiError(Reason.BAD_PARAMETER, f"{name} must be 32 hex characters")
    return tid


def trace_sessions(
    spans: list[dict[str, Any]], linked: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Sessions the trace touches, each with why."""
    out = {r["session_id"]: r["reason"] for r in linked}
    for s in spans:
        if s["session_id"]:
            out.setdefault(s["session_id"], "span attribute session.id")
    return [{"session_id": k, "reason": v} for k, v in sorted(out.items())]


class TracesApi:
    def __init__(self, projects: Projects, ch: Callable[[], ClickHouse | None]) -> None:
        self.projects = projects
        self._ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/traces", self.traces, methods=["GET"]),
            Route("/api/v1/traces/{trace_id}", self.trace, methods=["GET"]),
            Route("/api/v1/logs", self.logs, methods=["GET"]),
        ]

    def ch(self) -> ClickHouse:
        ch = self._ch()
        if ch is None:
            raise ApiError(Reason.STORAGE_UNAVAILABLE, "this process has no ClickHouse")
        return ch

    async def trace(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            trace_id = _trace_id_param(request.path_params["trace_id"])
            assert trace_id is not None
            rows = await asyncio.to_thread(tq.trace_spans, self.ch(), project.id, trace_id)
            if not rows:
                raise ApiError(Reason.NOT_FOUND, f"no spans of trace {trace_id}")
            linked = await asyncio.to_thread(
                timeline_queries.sessions_of_trace, self.ch(), project.id, trace_id
            )
            error_events = await asyncio.to_thread(
                timeline_queries.errors_for, self.ch(), project.id, [], [trace_id]
            )
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        ordered, t0, t1 = build_tree(rows)
        return JSONResponse(
            {
                "project_id": project.id,
                "trace_id": trace_id,
                "start": _iso(t0),
                "duration_ms": _ms(t1 - t0),
                "span_count": len(ordered),
                "services": sorted({s["service"] for s in ordered}),
                "session_ids": sorted(
                    {s["session_id"] for s in ordered if s["session_id"]}
                    | {r["session_id"] for r in linked}
                ),
                "sessions": trace_sessions(ordered, linked),
                "error_event_ids": [e["event_id"] for e in error_events],
                "root_span_ids": [s["span_id"] for s in ordered if s["depth"] == 0],
                "errors": _errors(ordered),
                "spans": ordered,
            }
        )

    async def traces(self, request: Request) -> Response:
        q = request.query_params
        try:
            project = authorize(request, self.projects)
            f = trace_filter(q)
            rows = await asyncio.to_thread(tq.trace_summaries, self.ch(), project.id, f)
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        traces = [
            {
                "trace_id": r["trace_id"],
                "start": _iso(int(r["start_ns"])),
                "duration_ms": _ms(int(r["duration_ns"])),
                "span_count": int(r["span_count"]),
                "error_count": int(r["error_count"]),
                "services": r["services"],
                "root_name": r["root_name"],
                "root_service": r["root_service"],
                "session_ids": r["session_ids"],
            }
            for r in rows
        ]
        return JSONResponse({"project_id": project.id, "traces": traces})

    async def logs(self, request: Request) -> Response:
        q = request.query_params
        try:
            project = authorize(request, self.projects)
            f = tq.LogFilter(
                start=parse_time(q.get("from"), "from"),
                end=parse_time(q.get("to"), "to"),
                service=q.get("service") or None,
                trace_id=_trace_id_param(q.get("trace_id")),
                session_id=q.get("session_id") or None,
                min_severity=_severity(q.get("min_severity")),
                contains=q.get("q") or None,
                limit=parse_limit(q.get("limit"), maximum=10_000),
            )
            rows = await asyncio.to_thread(tq.logs, self.ch(), project.id, f)
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        out = []
        for r in rows:
            out.append(
                {
                    "log_uid": r["log_uid"],
                    "time": _iso(int(r["time_ns"])),
                    "time_ns": str(r["time_ns"]),
                    "severity_number": r["severity_number"],
                    "severity_text": r["severity_text"],
                    "body": r["body"],
                    "trace_id": r["trace_id"] or None,
                    "span_id": r["span_id"] or None,
                    "service": r["service_name"],
                    "scope": r["scope_name"] or None,
                    "event_name": r["event_name"] or None,
                    "session_id": r["session_id"] or None,
                    "attributes": r["attributes"],
                    "resource_attributes": r["resource_attributes"],
                }
            )
        return JSONResponse({"project_id": project.id, "logs": out})


def openapi_paths() -> dict[str, Any]:
    """OpenAPI entries for the OTLP receiver and this read API."""
    token = [{"queryToken": []}]
    ingest = [{"ingestKey": []}, {"bearerIngestKey": []}, {"ingestKeyQuery": []}]

    def q(name: str, kind: str = "string", description: str = "") -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": {"type": kind}, "description": description}

    window = [q("project_id", "integer"), q("from", description="ISO 8601 or epoch ms"), q("to")]
    otlp_body = {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }

    def export(signal: str, what: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": what,
                "security": ingest,
                "requestBody": otlp_body,
                "responses": {
                    "200": {"description": f"Export{signal}ServiceResponse (partial_success)"},
                    "400": {"description": "undecodable (google.rpc.Status)"},
                    "401": {"description": "no ingest key"},
                    "403": {"description": "unknown key or origin not allowed"},
                    "413": {"description": "body over the limit, before or after gzip"},
                    "415": {"description": "not application/x-protobuf or application/json"},
                    "429": {"description": "project over its rate limit (Retry-After)"},
                    "503": {"description": "buffer full or unavailable (Retry-After)"},
                },
            }
        }

    return {
        "/v1/traces": export("Trace", "OTLP/HTTP traces"),
        "/v1/logs": export("Logs", "OTLP/HTTP logs"),
        "/v1/metrics": export(
            "Metrics", "OTLP/HTTP metrics: validated, not stored (all in partial_success)"
        ),
        "/api/v1/traces": {
            "get": {
                "summary": "Trace summaries, newest first",
                "security": token,
                "parameters": [
                    *window,
                    q("service"),
                    q("min_duration_ms", "number"),
                    q("status", description="ok or error"),
                    q("session_id", description="traces with a span tied to this session"),
                    q("limit", "integer"),
                ],
                "responses": {"200": {"description": "traces"}},
            }
        },
        "/api/v1/traces/{trace_id}": {
            "get": {
                "summary": "One trace: spans depth-first with depth, children and offsets",
                "security": token,
                "parameters": [
                    {
                        "name": "trace_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": {"description": "trace"}, "404": {"description": "unknown"}},
            }
        },
        "/api/v1/logs": {
            "get": {
                "summary": "OTLP log records, newest first",
                "security": token,
                "parameters": [
                    *window,
                    q("service"),
                    q("trace_id"),
                    q("session_id"),
                    q("min_severity", description="number or trace|debug|info|warn|error|fatal"),
                    q("q", description="substring of the body, case-insensitive"),
                    q("limit", "integer"),
                ],
                "responses": {"200": {"description": "logs"}},
            }
        },
    }
