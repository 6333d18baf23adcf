"""Read API under /api/v1 (query token as `Authorization: Bearer`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from weftline.dashboards.debug.live_hub import LiveHub
from weftline.ground.projects import ApiError, Projects, authorize, storage_unavailable
from weftline.ground.rejections import Reason
from weftline.ground.times import api_time
from weftline.storage import genai_queries, queries
from weftline.storage.clickhouse import ClickHouse, StorageError
from weftline.storage.keys import agent_index_key, agent_state_key

SSE_KEEPALIVE_SECONDS = 15.0
# What ClickHouse can compare with the tables' times: DateTime64(9) holds 1970 to
# 2262-04-11; a time outside reaches it as an overflow ("Decimal math overflow").
TIME_MIN = datetime(1970, 1, 1)
TIME_MAX = datetime(2262, 4, 11)


def parse_time(raw: str | None, name: str) -> datetime | None:
    """ISO 8601 or epoch milliseconds; naive times are UTC."""
    if raw is None or raw == "":
        return None
    try:
        if raw.lstrip("-").isdigit():
            dt = datetime.fromtimestamp(int(raw) / 1000, UTC)
        else:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ApiError(Reason.BAD_PARAMETER, f"{name} must be ISO 8601 or epoch ms") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    if not TIME_MIN <= dt <= TIME_MAX:
        raise ApiError(
            Reason.BAD_PARAMETER,
            f"{name} must be between {TIME_MIN:%Y-%m-%d} and {TIME_MAX:%Y-%m-%d}",
        )
    return dt


def parse_limit(raw: str | None, default: int = 100, maximum: int = 10_000) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(Reason.BAD_PARAMETER, f"limit must be 1..{maximum}")
    return int(raw)


def _s(v: bytes | None) -> str:
    return v.decode() if v else ""


async def agents_list(
    client: aioredis.Redis, ch: ClickHouse | None, project_id: int
) -> list[dict[str, Any]]:
    """Every agent seen, one entry per name: its current state from the agent events
    (Valkey, newest heartbeat wins) and what GenAI spans and stored events show of it
    (`seen_in`, runs, the last run's status)."""
    index = agent_index_key(project_id)
    ids = await client.zrevrange(index, 0, 9999)
    pipe = client.pipeline(transaction=False)
    for aid in ids:
        pipe.hgetall(agent_state_key(project_id, _s(aid)))
    states = await pipe.execute() if ids else []
    seen: list[dict[str, Any]] = []
    if ch is not None:
        seen = await asyncio.to_thread(genai_queries.agents_seen, ch, project_id)
    now_ms = time.time() * 1000
    agents: list[dict[str, Any]] = []
    expired = []
    for aid, h in zip(ids, states, strict=True):
        if not h:
            expired.append(aid)
            continue
        hb = int(h.get(b"heartbeat_ms", b"0"))
        agents.append(
            {
                "name": _s(h.get(b"agent_id")),
                "agent_id": _s(h.get(b"agent_id")),
                "status": _s(h.get(b"status")),
                "current_task": _s(h.get(b"current_task")) or None,
                "metrics": orjson.loads(h.get(b"metrics") or b"{}"),
                "last_heartbeat": api_time(hb),
                "heartbeat_age_seconds": round(max(0.0, now_ms - hb) / 1000, 3),
                "seen_in": ["agent_state"],
                "runs": 0,
                "last_run_status": None,
            }
        )
    by_name = {a["name"]: a for a in agents}
    for row in seen:
        a = by_name.get(row["name"])
        if a is None:
            a = {
                "name": row["name"],
                "agent_id": row["name"],
                "status": None,
                "current_task": None,
                "seen_in": [],
                "runs": 0,
                "last_run_status": None,
            }
            agents.append(a)
            by_name[row["name"]] = a
        a["seen_in"] = sorted(set(a["seen_in"]) | set(row["seen_in"]))
        a["runs"] = int(row["runs"])
        a["last_run_status"] = row["last_run_status"] or None
        a["last_seen"] = row["last_seen"]
    if expired:
        await client.zrem(index, *expired)
    return agents


class ReadApi:
    def __init__(
        self,
        projects: Projects,
        client: aioredis.Redis,
        ch: ClickHouse | None,
        hub: LiveHub | None = None,
    ) -> None:
        self.projects = projects
        self.client = client
        self.ch = ch
        self.hub = hub or LiveHub(client)

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/agents", self.agents, methods=["GET"]),
            Route("/api/v1/agents/{agent_id}/events", self.agent_events, methods=["GET"]),
            Route("/api/v1/live", self.live, methods=["GET"]),
        ]

    async def agents(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            agents = await agents_list(self.client, self.ch, project.id)
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        return JSONResponse({"project_id": project.id, "agents": agents})

    async def agent_events(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            start = parse_time(request.query_params.get("from"), "from")
            end = parse_time(request.query_params.get("to"), "to")
            limit = parse_limit(request.query_params.get("limit"))
            if self.ch is None:
                raise ApiError(Reason.STORAGE_UNAVAILABLE, "this process has no ClickHouse")
            rows = await asyncio.to_thread(
                queries.agent_events,
                self.ch,
                project.id,
                request.path_params["agent_id"],
                start,
                end,
                limit,
            )
        except ApiError as e:
            return e.response()
        except StorageError as e:
            return storage_unavailable(e).response()
        for r in rows:
            r["payload"] = orjson.loads(r["payload"]) if r.get("payload") else None
            r["ts"], r["received_at"] = api_time(r.get("ts")), api_time(r.get("received_at"))
        return JSONResponse(
            {"project_id": project.id, "agent_id": request.path_params["agent_id"], "events": rows}
        )

    async def live(self, request: Request) -> Response:
        """SSE: one event per stored item of the project (optionally one session's),
        through the process's one subscription (live_hub.py), within the live budget."""
        try:
            project = authorize(request, self.projects)
            reader = await self.hub.join(project.id, project.query_token)
        except ApiError as e:
            return e.response()
        session_id = request.query_params.get("session_id")
        return StreamingResponse(
            self.hub.events(reader, session_id, SSE_KEEPALIVE_SECONDS),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
