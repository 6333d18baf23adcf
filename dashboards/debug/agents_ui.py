"""The agents pages of the debugging view: /ui/agents (every agent with its current
state and recent runs), /ui/agents/{name} (its runs with tokens and tool errors) and
/ui/agent-runs/{run_id} (one run's tree as a waterfall). Same login cookie as the rest
of /ui/."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from weftline.dashboards.debug.agents_api import runs_for, tree_for
from weftline.dashboards.debug.api import agents_list
from weftline.dashboards.debug.ui import COOKIE, templates
from weftline.ground.projects import Projects
from weftline.storage.clickhouse import ClickHouse


class AgentsUi:
    def __init__(
        self, projects: Projects, client: aioredis.Redis, ch: Callable[[], ClickHouse | None]
    ) -> None:
        self.projects = projects
        self.client = client
        self.ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/ui/agents", self.agents, methods=["GET"]),
            Route("/ui/agents/{name}", self.agent, methods=["GET"]),
            Route("/ui/agent-runs/{run_id}", self.run, methods=["GET"]),
        ]

    def _render(self, request: Request, name: str, ctx: dict[str, Any], status: int = 200):
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    async def agents(self, request: Request) -> Response:
        project = self.projects.by_token(request.cookies.get(COOKIE))
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        agents = await agents_list(self.client, self.ch(), project.id)
        return self._render(request, "agents.html", {"project": project, "agents": agents})

    async def agent(self, request: Request) -> Response:
        project = self.projects.by_token(request.cookies.get(COOKIE))
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        ch = self.ch()
        if ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        name = request.path_params["name"]
        runs = await asyncio.to_thread(runs_for, ch, project.id, name, None, None, 200)
        agents = await agents_list(self.client, ch, project.id)
        state = next((a for a in agents if a["name"] == name), None)
        return self._render(
            request, "agent.html", {"project": project, "name": name, "runs": runs, "state": state}
        )

    async def run(self, request: Request) -> Response:
        project = self.projects.by_token(request.cookies.get(COOKIE))
        if project is None:
            return RedirectResponse("/ui/login", status_code=303)
        ch = self.ch()
        if ch is None:
            return HTMLResponse("ClickHouse is not available in this process", status_code=503)
        doc = await asyncio.to_thread(tree_for, ch, project.id, request.path_params["run_id"])
        if doc is None:
            return HTMLResponse("No such agent run", status_code=404)
        return self._render(request, "agent_run.html", {"project": project, "r": doc})
