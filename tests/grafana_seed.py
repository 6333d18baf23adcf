"""A realistic dataset for the dashboard and alert tests: agent events go through the
real decoder (`decode_agent_entry`) and the real insert path; spans are rows in the
shape the OTLP and Sentry workers write to the shared `spans` table."""

from __future__ import annotations

import random
import secrets
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from enrich.agent_events import STORED_COLUMNS, decode_agent_entry
from storage.clickhouse import ClickHouse

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def store_agent_events(
    ch: ClickHouse,
    project_id: int,
    events: list[dict[str, Any]],
    *,
    entry_ms: int | None = None,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """One stream entry carrying `events`, decoded and inserted like the worker does."""
    entry_ms = entry_ms or int(NOW.timestamp() * 1000) + random.randint(0, 10**6)
    entry_id = f"{entry_ms}-{random.randint(0, 999)}"
    fields = {
        b"project": str(project_id).encode(),
        b"received_at": str(int(datetime.now(UTC).timestamp() * 1000)).encode(),
        b"p": orjson.dumps(events),
    }
    rows = decode_agent_entry(entry_id, fields)
    data = [{k: v for k, v in asdict(r).items() if k in STORED_COLUMNS} for r in rows]
    ch.insert("agent_events", data, token or f"agent:{entry_id}:{entry_id}:1")
    return data


def agent_dataset(now: datetime = NOW) -> dict[int, list[dict[str, Any]]]:
    rnd = random.Random(7)
    p1: list[dict[str, Any]] = []
    for minute in range(60, 0, -1):
        t = now - timedelta(minutes=minute)
        for agent, status in (("planner", "busy"), ("coder", "busy"), ("reviewer", "idle")):
            p1.append(
                {
                    "type": "agent_state",
                    "agent_id": agent,
                    "status": status,
                    "current_task": f"task-{minute}",
                    "ts": iso(t),
                    "metrics": {"total_tasks": 60 - minute, "cpu_usage": 0.5},
                }
            )
        if minute > 20:  # the stuck agent stopped sending heartbeats 20 minutes ago
            p1.append(
                {
                    "type": "agent_state",
                    "agent_id": "stuck-bot",
                    "status": "busy",
                    "current_task": "crawl",
                    "ts": iso(t),
                }
            )
    p1.append(
        {
            "type": "agent_state",
            "agent_id": "retired",
            "status": "terminated",
            "ts": iso(now - timedelta(minutes=40)),
        }
    )
    for i in range(50):
        failed = i % 5 == 0
        p1.append(
            {
                "type": "task_update",
                "task_id": f"t{i}",
                "agent_id": rnd.choice(["planner", "coder"]),
                "state": "failed" if failed else "done",
                "duration_ms": rnd.uniform(200, 5000),
                "error": "TimeoutError: model call exceeded 30s" if failed else None,
                "ts": iso(now - timedelta(minutes=rnd.randint(1, 55))),
            }
        )
    for i in range(6):
        opened = now - timedelta(minutes=30 - i)
        p1.append(
            {
                "type": "hitl",
                "hitl_id": f"q{i}",
                "kind": "question",
                "state": "opened",
                "agent_id": "planner",
                "ts": iso(opened),
            }
        )
        if i < 4:
            p1.append(
                {
                    "type": "hitl",
                    "hitl_id": f"q{i}",
                    "kind": "question",
                    "state": "answered",
                    "agent_id": "planner",
                    "response_time_ms": 60_000.0 * (i + 1),
                    "ts": iso(opened + timedelta(minutes=i + 1)),
                }
            )
    actions = ["node_click", "node_drag_stop", "edge_connect", "viewport_change", "node_add"]
    for i in range(40):
        p1.append(
            {
                "type": "visualization_interaction",
                "action": actions[i % len(actions)],
                "node_id": f"n{i % 7}",
                "node_type": "agent",
                "ts": iso(now - timedelta(minutes=rnd.randint(1, 50))),
            }
        )
    p2 = [
        {
            "type": "agent_state",
            "agent_id": "p2-worker",
            "status": "busy",
            "ts": iso(now - timedelta(minutes=m)),
        }
        for m in range(30, 0, -1)
    ]
    return {1: p1, 2: p2}


def seed_agents(ch: ClickHouse, now: datetime = NOW) -> None:
    for project, events in agent_dataset(now).items():
        for i in range(0, len(events), 100):
            store_agent_events(ch, project, events[i : i + 100])


def _ts9(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")


def span_rows(now: datetime = NOW, project_id: int = 1, count: int = 120) -> list[dict[str, Any]]:
    rnd = random.Random(11)
    rows = []
    for i in range(count):
        start = now - timedelta(minutes=rnd.randint(1, 55), seconds=rnd.randint(0, 59))
        trace = secrets.token_hex(16)
        root = secrets.token_hex(8)
        slow = i % 10 == 0
        route = rnd.choice(["GET /api/flows", "POST /api/agents/run", "GET /api/tasks"])
        server_ms = rnd.uniform(900, 2500) if slow else rnd.uniform(20, 180)
        error = i % 12 == 0
        common = {
            "project_id": project_id,
            "trace_id": trace,
            "resource_attributes": {"service.version": "1.4.2"},
            "received_at": now.strftime("%Y-%m-%d %H:%M:%S.000"),
            "session_id": f"s{i % 9}",
        }
        rows.append(
            {
                **common,
                "source": "otlp",
                "span_id": root,
                "parent_span_id": "",
                "name": route,
                "kind": "server",
                "op": "",
                "status_code": "error" if error else "unset",
                "service_name": "api",
                "start_time": _ts9(start),
                "duration_ns": int(server_ms * 1e6),
                "attributes": {"http.route": route.split(" ")[1]},
            }
        )
        rows.append(
            {
                **common,
                "source": "otlp",
                "span_id": secrets.token_hex(8),
                "parent_span_id": root,
                "name": "SELECT flows",
                "kind": "client",
                "op": "db",
                "status_code": "ok",
                "service_name": "api",
                "start_time": _ts9(start + timedelta(milliseconds=5)),
                "duration_ns": int(server_ms * 0.6e6),
                "attributes": {"db.system": "postgresql"},
            }
        )
        if i % 3 == 0:
            rows.append(
                {
                    **common,
                    "source": "sentry",
                    "span_id": secrets.token_hex(8),
                    "parent_span_id": "",
                    "name": "/flows/:id",
                    "kind": "unspecified",
                    "op": "pageload",
                    "status_code": "ok",
                    "service_name": "web",
                    "start_time": _ts9(start - timedelta(milliseconds=50)),
                    "duration_ns": int((server_ms + 300) * 1e6),
                    "attributes": {"browser.name": "Chrome"},
                }
            )
    return rows


def seed_spans(ch: ClickHouse, now: datetime = NOW) -> None:
    ch.insert("spans", span_rows(now), f"otlp:seed:{secrets.token_hex(4)}")
