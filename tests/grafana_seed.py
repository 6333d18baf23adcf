"""A realistic dataset for the dashboard and alert tests: agent events go through the
real decoder (`decode_agent_entry`) and the real insert path; OpenReplay tracker
batches (encoded with the tracker's wire format) and Sentry envelopes go through their
workers' real `decode` and `store`; spans are rows in the shape the OTLP and Sentry
workers write to the shared `spans` table."""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from weftline.enrich.agent_events import STORED_COLUMNS, decode_agent_entry
from weftline.storage.clickhouse import ClickHouse

NOW = datetime.now(UTC).replace(microsecond=0)


def fresh_now() -> datetime:
    """Data seeded relative to the wall clock at seeding (not at import): a test that runs
    minutes after collection still sees "5 minutes ago" as 5 minutes ago."""
    return datetime.now(UTC).replace(microsecond=0)


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


def agent_dataset(now: datetime | None = None) -> dict[int, list[dict[str, Any]]]:
    now = now or fresh_now()  # at call time: a long test run moves on
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


def seed_agents(ch: ClickHouse, now: datetime | None = None) -> None:
    now = now or fresh_now()  # at call time: a long test run moves on
    for project, events in agent_dataset(now).items():
        for i in range(0, len(events), 100):
            store_agent_events(ch, project, events[i : i + 100])


def _ts9(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")


def span_rows(
    now: datetime | None = None, project_id: int = 1, count: int = 120
) -> list[dict[str, Any]]:
    now = now or fresh_now()  # at call time: a long test run moves on
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


def seed_spans(ch: ClickHouse, now: datetime | None = None) -> None:
    now = now or fresh_now()  # at call time: a long test run moves on
    ch.insert("spans", span_rows(now), f"otlp:seed:{secrets.token_hex(4)}")


# --- OpenReplay tracker sessions, through the real batch decoder and handler ---------

UAS = {
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/124.0.0.0 Safari/537.36",
    "firefox": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "safari": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
}
# 12 sessions: 6 Chrome on Windows, 4 Firefox on Ubuntu, 2 Safari on iPhones.
SESSION_BROWSERS = ["chrome"] * 6 + ["firefox"] * 4 + ["safari"] * 2
APP = "https://app.example"


def session_vitals(i: int) -> dict[str, float]:
    """Session i's measurements: spread so that percentiles are easy to reason about."""
    return {
        "LCP": 1000.0 + 300 * i,  # 1000 .. 4300 ms
        "TTFB": 100.0 + 20 * i,
        "INP": 50.0 + 25 * i,  # 50 .. 325 ms
        "CLS": 0.01 * i,
        "page_load": 800.0 + 100 * i,  # PageLoadTiming.loadEventEnd
    }


def replay_entries(now: datetime | None = None, project_id: int = 1) -> list[tuple[str, dict]]:
    """(entry id, fields) as the edge enqueues them: a start and a batch per session."""
    now = now or fresh_now()  # at call time: a long test run moves on
    from weftline.enrich.openreplay_decode import encode_message as m

    out: list[tuple[str, dict]] = []
    for i, browser in enumerate(SESSION_BROWSERS):
        sid = str(7_100_000_000_000_000 + project_id * 1000 + i)
        start = now - timedelta(minutes=50 - 3 * i)
        t0 = int(start.timestamp() * 1000)
        base = {
            b"project": str(project_id).encode(),
            b"received_at": str(t0).encode(),
            b"sid": sid.encode(),
            b"started_at": str(t0).encode(),
            b"delay": b"0",
        }
        meta = {"trackerVersion": "16.0.0", "userUUID": secrets.token_hex(16), "width": 1280}
        out.append(
            (
                f"{t0}-{2 * i}",
                {**base, b"t": b"start", b"ua": UAS[browser].encode(), b"p": orjson.dumps(meta)},
            )
        )
        v = session_vitals(i)
        home, flows = f"{APP}/", f"{APP}/flows/42?tab=graph#top"
        body = (
            m(81, (1, 0, 0, t0, home))
            + m(0, (t0,))
            + m(118, ("tab1",))
            + m(122, (home, "", t0, "Home"))
            + m(23, (5, 12, 14, 90, 92, 95, int(v["page_load"]), 60, 60))
            + m(124, ("TTFB", str(v["TTFB"])))
            + m(124, ("LCP", str(v["LCP"])))
            + m(0, (t0 + 60_000,))
            + m(122, (flows, home, t0 + 60_000, "Flow 42"))
            + m(124, ("INP", str(v["INP"])))
            + m(124, ("CLS", str(v["CLS"])))
            + m(68, (8, 3, "Run", "#run", 320, 1250))
        )
        if i < 3:  # the tracker's heuristics: rage clicks on "Run"
            body += m(125, (9, t0 + 61_000, "click_rage", "Run", "#run", '{"Count":4}', flows))
        if i == 3:
            body += m(0, (t0 + 120_000,)) + m(122, (home, flows, t0 + 120_000, "Home"))
            body += m(125, (12, t0 + 121_000, "dead_click", "Docs", "a.docs", "", home))
        if i == 4:
            body += m(114, (t0 + 62_000,))
        out.append(
            (
                f"{t0 + 1}-{2 * i + 1}",
                {**base, b"t": b"batch", b"received_at": str(t0 + 130_000).encode(), b"p": body},
            )
        )
    return out


def replay_handler(ch: ClickHouse):
    import redis.asyncio as aioredis

    from weftline.enrich.openreplay import OpenReplayHandler
    from weftline.ground.config import OpenReplaySettings

    return OpenReplayHandler(ch, aioredis.Redis(), lambda _p: 30, OpenReplaySettings())


def store_entries(handler: Any, entries: list[tuple[str, dict]], token: str) -> None:
    """Decode like the worker and store them as one batch under `token`."""
    import asyncio

    from weftline.enrich.stream_consumer import Entry

    rows = [r for eid, f in entries for r in handler.decode(Entry(eid, f))]
    asyncio.run(handler.store(rows, token))


def seed_replay(ch: ClickHouse, now: datetime | None = None) -> None:
    now = now or fresh_now()  # at call time: a long test run moves on
    handler = replay_handler(ch)
    for eid, fields in replay_entries(now):
        store_entries(handler, [(eid, fields)], f"replay:{eid}:{eid}:1")


# --- Sentry errors, as envelopes through the real envelope decoder and handler -------

PRODUCTION, STAGING = "production", "staging"


@dataclass(frozen=True)
class ErrorSpec:
    key: str  # names the issue in tests; the group id is the grouping's own
    exc_type: str
    function: str
    release: str
    environment: str
    minutes_ago: list[float]
    users: int = 3


def error_specs() -> list[ErrorSpec]:
    # A: an old production issue, resolved two days ago, back now (a regression);
    # B: new in production (all events in the last 4 minutes: an error-rate spike);
    # C: new but only in staging; D: old, nothing in the last days.
    return [
        ErrorSpec(
            "A-old", "TypeError", "renderFlow", "web@1.1.0", PRODUCTION, [3 * 1440, 3 * 1440 - 1]
        ),
        ErrorSpec(
            "A",
            "TypeError",
            "renderFlow",
            "web@1.2.0",
            PRODUCTION,
            [10 + 1.5 * k for k in range(30)],
            users=10,
        ),
        ErrorSpec(
            "B",
            "ValueError",
            "runAgent",
            "web@1.2.0",
            PRODUCTION,
            [0.5 + 0.25 * k for k in range(12)],
            users=4,
        ),
        ErrorSpec("C", "KeyError", "loadTask", "web@1.3.0-rc1", STAGING, [20, 21, 22, 23, 24]),
        ErrorSpec("D", "RangeError", "oldCode", "web@1.0.0", PRODUCTION, [4 * 1440]),
    ]


def error_envelope(spec: ErrorSpec, k: int, at: datetime) -> tuple[str, bytes]:
    from weftline.ground.sentry_envelope import serialize_envelope

    # Stable ids: building the entries again is the SDK resending the same events.
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"weftline-seed:{spec.key}:{k}").hex
    event = {
        "event_id": event_id,
        "timestamp": at.timestamp(),
        "platform": "javascript",
        "level": "error",
        "release": spec.release,
        "environment": spec.environment,
        "user": {"id": f"user-{k % spec.users}"},
        "exception": {
            "values": [
                {
                    "type": spec.exc_type,
                    "value": f"failed in {spec.function} #{k}",
                    "stacktrace": {
                        "frames": [
                            {"function": "main", "filename": "app.js", "in_app": True},
                            {"function": spec.function, "filename": "flows.js", "in_app": True},
                        ]
                    },
                }
            ]
        },
    }
    env = serialize_envelope(
        {"event_id": event_id, "sent_at": at.timestamp()},
        [({"type": "event"}, orjson.dumps(event))],
    )
    return event_id, env


def sentry_entries(now: datetime | None = None) -> dict[str, list[tuple[str, dict]]]:
    """Entries per issue key; received when the error happened."""
    now = now or fresh_now()  # at call time: a long test run moves on
    out: dict[str, list[tuple[str, dict]]] = {}
    n = 0
    for spec in error_specs():
        for k, ago in enumerate(spec.minutes_ago):
            at = now - timedelta(minutes=ago)
            _, env = error_envelope(spec, k, at)
            ms = int(at.timestamp() * 1000)
            n += 1
            out.setdefault(spec.key, []).append(
                (f"{ms}-{n}", {b"project": b"1", b"received_at": str(ms).encode(), b"p": env})
            )
    return out


def sentry_handler(ch: ClickHouse):
    from weftline.enrich.sentry import SentryHandler

    return SentryHandler(ch, lambda _pid: None)


def group_of(ch: ClickHouse, entries: list[tuple[str, dict]]) -> str:
    from weftline.enrich.stream_consumer import Entry

    rows = sentry_handler(ch).decode(Entry(*entries[0]))
    return next(r.data["group_id"] for r in rows if r.table == "sentry_errors")


def seed_sentry(ch: ClickHouse, now: datetime | None = None) -> dict[str, str]:
    """Stores every error; resolves issue A two days ago (so its new events regress it).
    Returns issue key → group id."""
    now = now or fresh_now()  # at call time: a long test run moves on
    handler = sentry_handler(ch)
    entries = sentry_entries(now)
    for es in entries.values():
        for eid, fields in es:
            store_entries(handler, [(eid, fields)], f"sentry:{eid}:{eid}:1")
    groups = {key: group_of(ch, es) for key, es in entries.items()}
    resolved = now - timedelta(days=2)
    ch.insert(
        "sentry_issue_status",
        [
            {
                "project_id": 1,
                "group_id": groups["A"],
                "status": "resolved",
                "updated_at": resolved.strftime("%Y-%m-%d %H:%M:%S.000"),
                "version": int(resolved.timestamp() * 1e9),
            }
        ],
    )
    return groups
