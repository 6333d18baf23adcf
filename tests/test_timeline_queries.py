"""The timeline's lookup tables (migration 0010) narrow its reads without dropping rows:
a session across midnight, agent events reached only through a trace, data stored
before the migration, redelivered copies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from weftline.dashboards.debug.timeline import build_timeline
from weftline.storage.clickhouse import ChdbClickHouse
from weftline.storage.migrate import applied_versions, load_migrations, migrate

SESSION = "7100000000000000001"
OTHER = "7100000000000000002"
TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"


def ms(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def seed(ch: ChdbClickHouse) -> dict[str, set[str]]:
    """Rows around yesterday's midnight; returns the uids the timeline must show."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def replay(session: str, uid: str, at: datetime, **kw: str) -> dict:
        return {
            "project_id": 1,
            "session_id": session,
            "event_uid": uid,
            "ts": ms(at),
            "kind": kw.pop("kind", "click"),
            "page_no": 1,
            "name": uid,
            **kw,
        }

    before, after = midnight - timedelta(milliseconds=100), midnight + timedelta(milliseconds=100)
    events = [
        replay(SESSION, "r-before-midnight", before),
        replay(SESSION, "r-after-midnight", after),
        replay(OTHER, "r-other-session", midnight),
        replay(SESSION, "r-fetch", after + timedelta(seconds=1), kind="network", trace_id=TRACE),
    ]
    ch.insert("replay_events", events)
    ch.insert("replay_events", events[:1])  # a redelivered copy: shown once

    def agent(uid: str, agent_id: str, at: datetime, session: str, trace: str = "") -> dict:
        return {
            "project_id": 1,
            "event_uid": uid,
            "type": "agent_state",
            "ts": ms(at),
            "received_at": ms(at),
            "agent_id": agent_id,
            "session_id": session,
            "trace_id": trace,
            "status": "busy",
        }

    ch.insert(
        "agent_events",
        [
            agent("a-session", "planner", before, SESSION),
            # the trace's own agent, days later and naming another session
            agent("a-trace-only", "executor", after + timedelta(days=2), OTHER, TRACE),
            agent("a-other", "planner", after, OTHER),
        ],
    )
    return {
        "replay": {"r-before-midnight", "r-after-midnight", "r-fetch"},
        "agent": {"a-session", "a-trace-only"},
    }


def uids(timeline: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"replay": [], "agent": []}
    for item in timeline["items"]:
        if item["source"] == "replay":
            out["replay"].append(item["ref"]["event_uid"])
        elif item["source"] == "agent":
            out["agent"].append(item["detail"]["event_uid"])
    return out


def check(ch: ChdbClickHouse, expected: dict[str, set[str]]) -> None:
    t = build_timeline(ch, 1, SESSION)
    got = uids(t)
    assert sorted(got["replay"]) == sorted(expected["replay"])  # once each, none of OTHER
    assert sorted(got["agent"]) == sorted(expected["agent"])
    assert TRACE in {x["trace_id"] for x in t["traces"]}


def test_reads_cover_midnight_trace_only_agents_and_redelivery(ch):
    check(ch, seed(ch))


def test_rows_stored_before_the_migration_are_found(chdb_session):
    db = chdb_session.with_database(f"t_{uuid.uuid4().hex[:12]}")
    applied_versions(db)  # creates schema_migrations
    for mig in load_migrations():  # the schema as it was before 0010
        if mig.version < 10:
            for stmt in mig.statements:
                db.command(stmt.replace("${db}", db.database))
            db.insert("schema_migrations", [{"version": mig.version, "name": mig.name}])
    expected = seed(db)
    assert migrate(db)[:1] == [10]  # and any later ones
    check(db, expected)
