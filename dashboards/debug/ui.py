"""Server-rendered debugging view under /ui/ (Jinja2). Login by query token into a cookie;
nothing is shown without it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from weftline.dashboards.debug.api import parse_time
from weftline.dashboards.debug.issue_page import issue_context
from weftline.dashboards.debug.replay import replay_document
from weftline.dashboards.debug.session_page import session_context
from weftline.dashboards.debug.traces_api import build_tree, trace_filter, trace_sessions
from weftline.ground.config import ProjectConfig
from weftline.ground.projects import ApiError, Projects, same_origin
from weftline.ground.times import api_time
from weftline.storage import replay_queries, sentry_queries, timeline_queries, trace_queries
from weftline.storage.clickhouse import ClickHouse

COOKIE = "weftline_token"
# Text badges, not emoji: headless and minimal Linux desktops often lack an emoji font.
ICONS = {
    "agent": "AGT",
    "agent_run": "RUN",
    "span": "SPN",
    "click": "CLK",
    "network": "NET",
    "error": "ERR",
    "page": "PGE",
    "log": "LOG",
    "input": "INP",
}

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATIC = Path(__file__).parent / "static"
STATIC_FILES = frozenset({"player.js", "session.js", "player.css"})
REPLAY_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; media-src data:; connect-src 'self';"
    " frame-src 'self' about:; object-src 'none'; base-uri 'none'; form-action 'self'"
)


class Ui:
    def __init__(self, projects: Projects, ch: ClickHouse | None) -> None:
        self.projects = projects
        self.ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/ui/login", self.login, methods=["GET", "POST"]),
            Route("/ui/logout", self.logout, methods=["GET"]),
            Route("/ui/", self.sessions, methods=["GET"]),
            # Session ids are the clients' strings and may hold '/': the replay route
            # is tried first, so `a/b/replay` is session `a/b`'s replay.
            Route("/ui/sessions/{session_id:path}/replay", self.replay, methods=["GET"]),
            Route("/ui/sessions/{session_id:path}", self.session, methods=["GET"]),
            Route("/ui/static/{name}", self.static, methods=["GET"]),
            Route("/ui/issues", self.issues, methods=["GET"]),
            Route("/ui/issues/{group_id}", self.issue, methods=["GET"]),
            Route("/ui/issues/{group_id}/status", self.issue_status, methods=["POST"]),
            Route("/ui/traces", self.traces, methods=["GET"]),
            Route("/ui/traces/{trace_id}", self.trace, methods=["GET"]),
        ]

    def _project(self, request: Request) -> ProjectConfig | None:
        return self.projects.by_token(request.cookies.get(COOKIE))

    def _render(self, request: Request, name: str, ctx: dict[str, Any], status: int = 200):
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._render(request, "login.html", {"project": None, "error": None})
        if not same_origin(request):
            return HTMLResponse("This form only accepts posts from its own page", status_code=403)
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
        qp = request.query_params
        f = {
            "q": qp.get("q", "")[:200],
            "user": qp.get("user", "")[:200],
            "errors": qp.get("errors") == "1",
            "from": qp.get("from", ""),
            "to": qp.get("to", ""),
        }
        tracked: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        error = None
        try:
            start = parse_time(f["from"], "from")
            end = parse_time(f["to"], "to")
        except ApiError as e:
            start = end = None
            error = str(e)
        if self.ch is not None:
            tracked = await asyncio.to_thread(
                replay_queries.list_sessions,
                self.ch,
                project.id,
                start,
                end,
                f["user"] or None,
                200,
                f["errors"],
                f["q"],
            )
            if not (f["user"] or f["errors"] or start or end):
                seen = {r["session_id"] for r in tracked}
                rows = await asyncio.to_thread(
                    timeline_queries.recent_sessions, self.ch, project.id, f["q"], 200
                )
                others = [r for r in rows if r["session_id"] not in seen]
        for r in tracked:
            r["started_at"] = api_time(r["started_at"])
            r["duration_s"] = round(int(r["duration_ms"]) / 1000, 1)
        return self._render(
            request,
            "sessions.html",
            {"project": project, "sessions": tracked, "others": others, "f": f, "error": error},
        )

    async def session(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        if self.ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        sid = request.path_params["session_id"]
        # Decode the recording while the page renders: the player asks for it next.
        prefetch = asyncio.create_task(asyncio.to_thread(replay_document, self.ch, project.id, sid))
        prefetch.add_done_callback(lambda t: t.exception())  # its error shows on /replay
        ctx = await asyncio.to_thread(session_context, self.ch, project.id, sid)
        resp = self._render(request, "session.html", {"project": project, "icons": ICONS, **ctx})
        # The replay iframe (srcdoc) inherits this policy: whatever the recorded page
        # names, the browser may load nothing but this server's own files and data: URLs.
        resp.headers["content-security-policy"] = REPLAY_CSP
        return resp

    async def replay(self, request: Request) -> Response:
        """The session's recording as player messages (dashboards/debug/replay.py)."""
        project = self._project(request)
        if project is None:
            return JSONResponse({"error": "not logged in"}, status_code=401)
        if self.ch is None:
            return JSONResponse({"error": "no ClickHouse in this process"}, status_code=503)
        sid = request.path_params["session_id"]
        doc = await asyncio.to_thread(replay_document, self.ch, project.id, sid)
        if doc is None:
            return JSONResponse({"error": "no recording for this session"}, status_code=404)
        return Response(orjson.dumps(doc), media_type="application/json")

    async def static(self, request: Request) -> Response:
        """The player's ES modules and styles, shipped in the package (no build step)."""
        name = request.path_params["name"]
        path = STATIC / name
        if name not in STATIC_FILES or not path.is_file():
            return Response("not found", status_code=404)
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(
            path.read_bytes(),
            media_type=media,
            headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
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
        gid = request.path_params["group_id"][:64]
        ctx = await asyncio.to_thread(
            issue_context, self.ch, project.id, gid, request.query_params.get("event", "")[:64]
        )
        if ctx is None:
            return HTMLResponse("No such issue", status_code=404)
        return self._render(request, "issue.html", {"project": project, **ctx})

    async def issue_status(self, request: Request) -> Response:
        """Resolve / ignore / unresolve from the issue page (a form POST)."""
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        if self.ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        if not same_origin(request):
            # The cookie comes along with any same-site page's post: only this server's
            # own pages may use it to change state.
            return HTMLResponse("This form only accepts posts from its own page", status_code=403)
        gid = request.path_params["group_id"][:64]
        status = str((await request.form()).get("status", ""))
        if status not in sentry_queries.STATUSES:
            return HTMLResponse("status must be resolved, ignored or unresolved", status_code=400)
        if await asyncio.to_thread(sentry_queries.get_issue, self.ch, project.id, gid) is None:
            return HTMLResponse("No such issue", status_code=404)
        await asyncio.to_thread(sentry_queries.set_status, self.ch, project.id, gid, status)
        return RedirectResponse(f"/ui/issues/{gid}", status_code=303)

    async def traces(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        keys = ("service", "from", "to", "min_duration_ms", "status", "session_id")
        f = {k: request.query_params.get(k, "")[:200] for k in keys}
        rows: list[dict[str, Any]] = []
        error = None
        try:
            flt = trace_filter({**{k: v for k, v in f.items() if v}, "limit": "200"})
        except ApiError as e:
            flt, error = None, e.detail
        if self.ch is not None and flt is not None:
            rows = await asyncio.to_thread(trace_queries.trace_summaries, self.ch, project.id, flt)
        for r in rows:
            r["start"] = api_time(int(r["start_ns"]) // 1_000_000)
            r["duration_ms"] = round(int(r["duration_ns"]) / 1e6, 1)
        return self._render(
            request, "traces.html", {"project": project, "traces": rows, "f": f, "error": error}
        )

    async def trace(self, request: Request) -> Response:
        project = self._project(request)
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        if self.ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        tid = request.path_params["trace_id"].lower()[:64]
        ch = self.ch
        rows = await asyncio.to_thread(trace_queries.trace_spans, ch, project.id, tid)
        sessions = await asyncio.to_thread(timeline_queries.sessions_of_trace, ch, project.id, tid)
        errors = await asyncio.to_thread(timeline_queries.errors_for, ch, project.id, [], [tid])
        logs = await asyncio.to_thread(
            trace_queries.logs, ch, project.id, trace_queries.LogFilter(trace_id=tid, limit=500)
        )
        events = []
        for e in errors[:20]:
            eid = e["event_id"]
            full = await asyncio.to_thread(sentry_queries.error_by_id, ch, project.id, eid)
            if full:
                full["exceptions"] = orjson.loads(full["exceptions"]) if full["exceptions"] else []
                full["timestamp"] = api_time(full["timestamp"])
                events.append(full)
        if not rows and not events and not logs:
            return self._render(
                request, "trace.html", {"project": project, "trace_id": tid, "missing": True}, 404
            )
        spans, t0, t1 = build_tree(rows)
        total = max(1e-6, (t1 - t0) / 1e6)
        for sp in spans:
            sp["offset_pct"] = round(sp["offset_ms"] / total * 100, 2)
            sp["width_pct"] = max(0.5, round(sp["duration_ms"] / total * 100, 2))
            sp["start"] = api_time(sp["start"].replace("+00:00", ""))
        for lg in logs:
            lg["ts"] = api_time(int(lg["time_ns"]) // 1_000_000)
        logs.sort(key=lambda lg: int(lg["time_ns"]))
        return self._render(
            request,
            "trace.html",
            {
                "project": project,
                "trace_id": tid,
                "spans": spans,
                "duration_ms": total if rows else 0,
                "sessions": trace_sessions(spans, sessions),
                "events": events,
                "logs": logs,
                "missing": False,
            },
        )
