"""Issues and errors read API (query token as `Authorization: Bearer`).

GET   /api/v1/issues?project_id=&from=&to=&status=&limit=   groups, newest last seen first
GET   /api/v1/issues/{group_id}                            group + latest event, hourly
                                                           histogram, linked sessions/traces
PATCH /api/v1/issues/{group_id}  {"status": "resolved"|"ignored"|"unresolved"}
GET   /api/v1/errors/{event_id}                            one stored error event
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.dashboards.debug.api import parse_limit, parse_time
from weftline.ground.projects import ApiError, Projects, authorize, storage_unavailable
from weftline.ground.rejections import Reason
from weftline.ground.times import api_time
from weftline.storage import sentry_queries as q
from weftline.storage import timeline_queries
from weftline.storage.clickhouse import ClickHouse, StorageError

HEX32 = re.compile(r"^[0-9a-f]{32}$")
JSON_FIELDS = ("exceptions", "contexts", "request", "breadcrumbs")


ISSUE_TIMES = ("first_seen", "last_seen", "last_received", "status_updated_at")


def _event(row: dict[str, Any]) -> dict[str, Any]:
    for k in JSON_FIELDS:
        row[k] = orjson.loads(row[k]) if row.get(k) else None
    row["timestamp"], row["received_at"] = api_time(row["timestamp"]), api_time(row["received_at"])
    return row


def _issue_view(row: dict[str, Any]) -> dict[str, Any]:
    """Times in the API's format; a status never set is null."""
    return {**row, **{k: api_time(row.get(k)) for k in ISSUE_TIMES if k in row}}


class IssuesApi:
    def __init__(self, projects: Projects, ch: Callable[[], ClickHouse | None]) -> None:
        self.projects = projects
        self._ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/issues", self.list_issues, methods=["GET"]),
            Route("/api/v1/issues/{group_id}", self.issue, methods=["GET", "PATCH"]),
            Route("/api/v1/errors/{event_id}", self.error, methods=["GET"]),
        ]

    def ch(self) -> ClickHouse:
        ch = self._ch()
        if ch is None:
            raise ApiError(Reason.STORAGE_UNAVAILABLE, "this process has no ClickHouse")
        return ch

    async def _run(self, handler: Callable[[], Any]) -> Response:
        try:
            return await handler()
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()

    async def list_issues(self, request: Request) -> Response:
        async def go() -> Response:
            project = authorize(request, self.projects)
            p = request.query_params
            start = parse_time(p.get("from"), "from")
            end = parse_time(p.get("to"), "to")
            status = p.get("status") or None
            if status is not None and status not in q.STATUSES:
                raise ApiError(Reason.BAD_PARAMETER, f"status must be one of {q.STATUSES}")
            limit = parse_limit(p.get("limit"), default=100, maximum=1000)
            rows = await asyncio.to_thread(
                q.list_issues, self.ch(), project.id, start, end, status, limit
            )
            return JSONResponse(
                {"project_id": project.id, "issues": [_issue_view(r) for r in rows]}
            )

        return await self._run(go)

    def _group_id(self, request: Request) -> str:
        gid = request.path_params["group_id"]
        if not HEX32.match(gid):
            raise ApiError(Reason.BAD_PARAMETER, "group_id is 32 lowercase hex characters")
        return gid

    async def issue(self, request: Request) -> Response:
        if request.method == "PATCH":
            return await self._run(lambda: self._patch(request))

        async def go() -> Response:
            project = authorize(request, self.projects)
            gid = self._group_id(request)
            ch = self.ch()
            issue = await asyncio.to_thread(q.get_issue, ch, project.id, gid)
            if issue is None:
                raise ApiError(Reason.NOT_FOUND, f"no issue {gid} in project {project.id}")
            end = parse_time(request.query_params.get("to"), "to") or datetime.now(UTC).replace(
                tzinfo=None
            )
            start = parse_time(request.query_params.get("from"), "from") or end - timedelta(
                hours=24
            )
            latest, hist, linked, sessions = await asyncio.gather(
                asyncio.to_thread(q.latest_event, ch, project.id, gid),
                asyncio.to_thread(q.hourly_histogram, ch, project.id, gid, start, end),
                asyncio.to_thread(q.linked_ids, ch, project.id, gid),
                asyncio.to_thread(timeline_queries.sessions_of_issue, ch, project.id, gid),
            )
            return JSONResponse(
                {
                    "project_id": project.id,
                    "issue": _issue_view(issue),
                    "latest_event": _event(latest) if latest else None,
                    "histogram": {
                        "interval": "1h",
                        "buckets": [{**b, "hour": api_time(b["hour"])} for b in hist],
                    },
                    **linked,
                    "sessions": sessions,
                }
            )

        return await self._run(go)

    async def _patch(self, request: Request) -> Response:
        project = authorize(request, self.projects)
        gid = self._group_id(request)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise ApiError(Reason.INVALID_JSON, "body must be JSON") from None
        status = body.get("status") if isinstance(body, dict) else None
        if status not in q.STATUSES:
            raise ApiError(Reason.BAD_PARAMETER, f"status must be one of {q.STATUSES}")
        ch = self.ch()
        if await asyncio.to_thread(q.get_issue, ch, project.id, gid) is None:
            raise ApiError(Reason.NOT_FOUND, f"no issue {gid} in project {project.id}")
        await asyncio.to_thread(q.set_status, ch, project.id, gid, status)
        issue = await asyncio.to_thread(q.get_issue, ch, project.id, gid)
        return JSONResponse({"project_id": project.id, "issue": _issue_view(issue)})

    async def error(self, request: Request) -> Response:
        async def go() -> Response:
            project = authorize(request, self.projects)
            eid = request.path_params["event_id"].replace("-", "").lower()
            if not HEX32.match(eid):
                raise ApiError(Reason.BAD_PARAMETER, "event_id is 32 hex characters")
            row = await asyncio.to_thread(q.error_by_id, self.ch(), project.id, eid)
            if row is None:
                raise ApiError(Reason.NOT_FOUND, f"no error {eid} in project {project.id}")
            return JSONResponse({"project_id": project.id, "event": _event(row)})

        return await self._run(go)
