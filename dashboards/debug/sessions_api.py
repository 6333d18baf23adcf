"""Read API for OpenReplay sessions (query token as `Authorization: Bearer`).

GET /api/v1/sessions?from=&to=&user_id=&errors_only=&q=&limit=
    (user_id: the tracker's user or the user of a Sentry event of the session)
GET /api/v1/sessions/{session_id}?project_id=&limit=   → the session and its timeline
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.dashboards.debug.api import parse_limit, parse_time
from weftline.dashboards.debug.replay import replay_document
from weftline.dashboards.debug.timeline import build_timeline
from weftline.ground.projects import ApiError, Projects, authorize, storage_unavailable
from weftline.ground.rejections import Reason
from weftline.ground.times import api_time
from weftline.storage import replay_queries
from weftline.storage.clickhouse import ClickHouse, StorageError

# Timeline item fields kept only when they hold something.
_OPTIONAL = (
    "name",
    "selector",
    "url",
    "method",
    "status",
    "duration_ms",
    "value",
    "request_headers",
    "response_headers",
    "request_body",
    "response_body",
    "request_size",
    "response_size",
    "trace_id",
    "span_id",
    "stack",
)
_NUMERIC = ("status", "request_size", "response_size", "duration_ms", "x", "y")


def timeline_item(row: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "ts": api_time(row["ts"]),
        "kind": row["kind"],
        "id": row["event_uid"],
        "page_no": row["page_no"],
        "tab_id": row["tab_id"],
        "page_url": row["page_url"],
    }
    for k in _NUMERIC:
        if k in row and isinstance(row[k], str):
            row[k] = float(row[k]) if "." in row[k] else int(row[k])
    for k in _OPTIONAL:
        v = row.get(k)
        if v not in (None, "", 0, {}):
            item[k] = v
    if row["kind"] == "click" or row["kind"] == "viewport":
        item["x"], item["y"] = row["x"], row["y"]
    if row.get("stack"):
        item["stack"] = _maybe_json(row["stack"])
    if row.get("details"):
        item["details"] = _maybe_json(row["details"])
    return item


def _maybe_json(s: str) -> Any:
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        return s


def parse_flag(raw: str | None, name: str) -> bool:
    if raw is None or raw in ("", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise ApiError(Reason.BAD_PARAMETER, f"{name} must be true or false")


def session_view(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k in ("started_at", "last_event_at"):
        out[k] = api_time(out.get(k))
    for k in ("duration_ms", "pages_count", "events_count", "errors_count"):
        if k in out:
            out[k] = int(out[k])
    out["ended"] = bool(out.get("ended"))
    # Missing is null, not "" (the columns are non-nullable Strings) nor 0 for a size.
    for k, v in out.items():
        if v == "" or (k in ("screen_width", "screen_height") and v == 0):
            out[k] = None
    return out


class SessionsApi:
    def __init__(self, projects: Projects, ch: ClickHouse | None) -> None:
        self.projects = projects
        self.ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/sessions", self.list, methods=["GET"]),
            Route("/api/v1/sessions/{session_id:path}/replay", self.replay, methods=["GET"]),
            Route("/api/v1/sessions/{session_id:path}", self.detail, methods=["GET"]),
        ]

    async def replay(self, request: Request) -> Response:
        """The recording as the player reads it: decoded DOM, CSS, input, pointer and
        page messages in time order, `t` in ms since the session's start."""
        sid = request.path_params["session_id"]
        try:
            project = authorize(request, self.projects)
            if len(sid) > 256:
                raise ApiError(Reason.NOT_FOUND, "no such session")
            doc = await asyncio.to_thread(replay_document, self._ch(), project.id, sid)
            if doc is None:
                raise ApiError(Reason.NOT_FOUND, f"no recording of session {sid}")
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        return Response(orjson.dumps(doc), media_type="application/json")

    def _ch(self) -> ClickHouse:
        if self.ch is None:
            raise ApiError(Reason.STORAGE_UNAVAILABLE, "this process has no ClickHouse")
        return self.ch

    async def list(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            q = request.query_params
            start = parse_time(q.get("from"), "from")
            end = parse_time(q.get("to"), "to")
            limit = parse_limit(q.get("limit"), default=50, maximum=1000)
            user_id = q.get("user_id")
            errors_only = parse_flag(q.get("errors_only"), "errors_only")
            rows = await asyncio.to_thread(
                replay_queries.list_sessions,
                self._ch(),
                project.id,
                start,
                end,
                user_id,
                limit,
                errors_only,
                q.get("q", "")[:200],
            )
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        return JSONResponse({"project_id": project.id, "sessions": [session_view(r) for r in rows]})

    async def detail(self, request: Request) -> Response:
        """The session as one timeline: tracker events, agent events, the spans of every
        trace tied to it and the errors on both sides, in time order, each with the
        reason it belongs here. `timeline` keeps the tracker's own events as stored."""
        sid = request.path_params["session_id"]
        try:
            project = authorize(request, self.projects)
            if len(sid) > 256:
                raise ApiError(Reason.NOT_FOUND, "no such session")
            limit = parse_limit(request.query_params.get("limit"), default=5000, maximum=50_000)
            ch = self._ch()
            session = await asyncio.to_thread(replay_queries.get_session, ch, project.id, sid)
            rows = await asyncio.to_thread(replay_queries.timeline, ch, project.id, sid, limit)
            unified = await asyncio.to_thread(build_timeline, ch, project.id, sid)
            if session is None and not unified["items"]:
                raise ApiError(Reason.NOT_FOUND, f"no session {sid} in project {project.id}")
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        return JSONResponse(
            {
                "project_id": project.id,
                "session_id": sid,
                "session": session_view(session) if session else None,
                "items": unified["items"],
                "traces": unified["traces"],
                "timeline": [timeline_item(r) for r in rows],
            }
        )
