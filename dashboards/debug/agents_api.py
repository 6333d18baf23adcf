"""Agent runs read API (query token as `Authorization: Bearer`).

- `GET /api/v1/agents/{name}/runs?from=&to=&limit=` → `{"runs": [...]}`, newest first:
  run id, trace id, start, duration, status, usage (summed over the run's model calls),
  tool calls (name, count, errors), models, time waiting for a human, session id when
  the trace is linked to a session;
- `GET /api/v1/agent-runs/{run_id}`: one run's tree (model calls, tool calls, nested
  agents, handoffs) with timings, tokens and errors.

`GET /api/v1/agents` (every agent seen, in agent events and in GenAI spans) lives with
the other agent routes in `api.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.dashboards.debug.agent_runs import build_forest, hitl_intervals, run_summary, run_tree
from weftline.dashboards.debug.api import parse_limit, parse_time
from weftline.ground.projects import ApiError, Projects, authorize, storage_unavailable
from weftline.ground.rejections import Reason
from weftline.storage import genai_queries as gq
from weftline.storage.clickhouse import ClickHouse, StorageError


def _context(
    ch: ClickHouse, project_id: int, runs: list[dict[str, Any]]
) -> tuple[Any, dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """The forest of the runs' traces, their sessions, the hitl intervals and the app's
    agent events near them."""
    traces = sorted({r["trace_id"] for r in runs})
    forest = build_forest(
        gq.genai_spans_of(ch, project_id, traces), gq.span_parents(ch, project_id, traces)
    )
    sessions = gq.sessions_of_traces(ch, project_id, traces)
    intervals: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    if runs:
        lo = min(int(r["start_ns"]) for r in runs)
        hi = max(int(r["start_ns"]) + int(r["duration_ns"]) for r in runs)
        names = sorted({r["agent_name"] for r in runs} | {r["agent_id"] for r in runs} - {""})
        events = gq.agent_events_near(ch, project_id, names, traces, lo, hi)
        intervals = hitl_intervals([e for e in events if e["type"] == "hitl"], time.time_ns())
    return forest, sessions, intervals, events


def runs_for(
    ch: ClickHouse, project_id: int, agent: str, start: Any, end: Any, limit: int
) -> list[dict[str, Any]]:
    runs = gq.agent_runs(ch, project_id, agent, start, end, limit)
    forest, sessions, intervals, _ = _context(ch, project_id, runs)
    return [run_summary(r, forest, sessions, intervals) for r in runs]


def runs_in_traces(ch: ClickHouse, project_id: int, trace_ids: list[str]) -> list[dict[str, Any]]:
    """The runs of these traces with their trees, outermost runs only (a nested run is
    part of its parent's tree): what a session's timeline shows, one item per run."""
    runs = gq.runs_of_traces(ch, project_id, trace_ids)
    if not runs:
        return []
    forest, sessions, intervals, events = _context(ch, project_id, runs)
    out = []
    for r in runs:
        doc = run_tree(r, forest, sessions, intervals, events)
        if doc["parent_run_id"] is None:
            out.append(doc)
    return out


def tree_for(ch: ClickHouse, project_id: int, run_id: str) -> dict[str, Any] | None:
    run = gq.run_by_id(ch, project_id, run_id)
    if run is None:
        return None
    forest, sessions, intervals, events = _context(ch, project_id, [run])
    return run_tree(run, forest, sessions, intervals, events)


class AgentRunsApi:
    def __init__(self, projects: Projects, ch: Callable[[], ClickHouse | None]) -> None:
        self.projects = projects
        self.ch = ch

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/agents/{name}/runs", self.runs, methods=["GET"]),
            Route("/api/v1/agent-runs/{run_id}", self.run, methods=["GET"]),
        ]

    def _storage(self) -> ClickHouse:
        ch = self.ch()
        if ch is None:
            raise ApiError(Reason.STORAGE_UNAVAILABLE, "this process has no ClickHouse")
        return ch

    async def runs(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            start = parse_time(request.query_params.get("from"), "from")
            end = parse_time(request.query_params.get("to"), "to")
            limit = parse_limit(request.query_params.get("limit"), 100, 1000)
            name = request.path_params["name"]
            runs = await asyncio.to_thread(
                runs_for, self._storage(), project.id, name, start, end, limit
            )
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        return JSONResponse({"project_id": project.id, "agent_name": name, "runs": runs})

    async def run(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            run_id = request.path_params["run_id"].lower()
            doc = await asyncio.to_thread(tree_for, self._storage(), project.id, run_id)
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        if doc is None:
            return ApiError(Reason.NOT_FOUND, "no such agent run").response()
        return JSONResponse({"project_id": project.id, **doc})
