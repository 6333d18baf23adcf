"""Server-rendered debugging view under /ui/ (Jinja2). Login by query token into a cookie;
nothing is shown without it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from weftline.dashboards.debug.timeline import build_timeline, waterfall
from weftline.dashboards.debug.traces_api import build_tree, trace_sessions
from weftline.ground.config import ProjectConfig
from weftline.ground.projects import Projects
from weftline.storage import sentry_queries, timeline_queries, trace_queries
from weftline.storage.clickhouse import ClickHouse

COOKIE = "weftline_token"
# Text badges, not emoji: headless and minimal Linux desktops often lack an emoji font.
ICONS = {
    "agent": "AGT",
    "span": "SPN",
    "click": "CLK",
    "network": "NET",
    "error": "ERR",
    "page": "PGE",
    "log": "LOG",
    "input": "INP",
}

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class Ui:
    def __init__(self, projects: Projects, ch: ClickHouse | None) -> None:
        self.projects = projects
        self.ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/ui/login", self.login, methods=["GET", "POST"]),
            Route("/ui/logout", self.logout, methods=["GET"]),
            Route("/ui/", self.sessions, methods=["GET"]),
            Route("/ui/sessions/{session_id}", self.session, methods=["GET"]),
            Route("/ui/issues", self.issues, methods=["GET"]),
            Route("/ui/issues/{group_id}", self.issue, methods=["GET"]),
            Route("/ui/traces/{trace_id}", self.trace, methods=["GET"]),
        ]

    def _project(self, request: Request) -> ProjectConfig | None:
        return self.projects.by_token(request.cookies.get(COOKIE))

    def _render(self, request: Request, name: str, ctx: dict[str, Any], status: int = 200):
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._render(request, "login.html", {"project": None, "error": None})
        form = await request.form()
        token = str(form.get("token", ""))
        project = self.projects.by_token(token)
        if project is None:
            # 200 with the message, as login forms do: the browser shows the page, not an error.
            return self._render(request, "login.html", {"project": None, "error": "Unknown token."})
        resp = RedirectResponse("/ui/", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 86400)
        return resp

    async def logout(self, request: Request) -> Response:
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    async def sessions(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        q = request.query_params.get("q", "")
        rows = []
        if self.ch is not None:
            rows = await asyncio.to_thread(
                timeline_queries.recent_sessions, self.ch, project.id, q, 200
            )
        return self._render(
            request, "sessions.html", {"project": project, "sessions": rows, "q": q}
        )

    async def session(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        if self.ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        sid = request.path_params["session_id"]
        t = await asyncio.to_thread(build_timeline, self.ch, project.id, sid)
        waterfalls = []
        for tr in t["traces"]:
            spans = [
                i
                for i in t["items"]
                if i["kind"] == "span" and i["ref"]["trace_id"] == tr["trace_id"]
            ]
            waterfalls.append({**tr, "rows": waterfall(spans)})
        return self._render(
            request,
            "session.html",
            {"project": project, "t": t, "waterfalls": waterfalls, "icons": ICONS},
        )

    async def issues(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        rows = []
        if self.ch is not None:
            rows = await asyncio.to_thread(
                sentry_queries.list_issues, self.ch, project.id, None, None, None, 200
            )
        return self._render(request, "issues.html", {"project": project, "issues": rows})

    async def issue(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        if self.ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        gid = request.path_params["group_id"]
        issue = await asyncio.to_thread(sentry_queries.get_issue, self.ch, project.id, gid)
        if issue is None:
            return HTMLResponse("No such issue", status_code=404)
        latest = await asyncio.to_thread(sentry_queries.latest_event, self.ch, project.id, gid)
        sessions = await asyncio.to_thread(
            timeline_queries.sessions_of_issue, self.ch, project.id, gid
        )
        exceptions = orjson.loads(latest["exceptions"]) if latest and latest["exceptions"] else []
        return self._render(
            request,
            "issue.html",
            {
                "project": project,
                "issue": issue,
                "latest": latest,
                "sessions": sessions,
                "exceptions": exceptions,
            },
        )

    async def trace(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        if self.ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        tid = request.path_params["trace_id"].lower()
        rows = await asyncio.to_thread(trace_queries.trace_spans, self.ch, project.id, tid)
        if not rows:
            return HTMLResponse("No such trace", status_code=404)
        spans, t0, t1 = build_tree(rows)
        total = max(1e-6, (t1 - t0) / 1e6)
        for sp in spans:
            sp["offset_pct"] = round(sp["offset_ms"] / total * 100, 2)
            sp["width_pct"] = max(0.5, round(sp["duration_ms"] / total * 100, 2))
        sessions = await asyncio.to_thread(
            timeline_queries.sessions_of_trace, self.ch, project.id, tid
        )
        return self._render(
            request,
            "trace.html",
            {
                "project": project,
                "trace_id": tid,
                "spans": spans,
                "duration_ms": total,
                "sessions": trace_sessions(spans, sessions),
            },
        )
