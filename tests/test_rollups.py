"""Per-minute rollups stay exact under redelivery, and cover data stored before 0006."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from tests.grafana_seed import NOW, agent_dataset, span_rows
from weftline.enrich.agent_events import AgentEventsHandler, decode_agent_entry
from weftline.ground.config import Settings
from weftline.storage.migrate import load_migrations

ROLLUP_TOTALS = """
SELECT
    (SELECT sum(events) FROM {db}.agent_events_1m) AS events,
    (SELECT sumIf(events, status = 'failed') FROM {db}.agent_events_1m
        WHERE type = 'task_update') AS failed,
    (SELECT sum(value_count) FROM {db}.agent_events_1m) AS values,
    (SELECT round(sum(value_sum), 3) FROM {db}.agent_events_1m) AS value_sum,
    (SELECT count() FROM (SELECT project_id, agent_id, argMaxMerge(status)
        FROM {db}.agent_last_state GROUP BY project_id, agent_id)) AS agents,
    (SELECT sum(spans) FROM {db}.spans_1m) AS spans,
    (SELECT sum(errors) FROM {db}.spans_1m) AS span_errors
"""


def totals(ch) -> dict:
    return ch.query(ROLLUP_TOTALS.format(db=ch.database))[0]


def _entry(project: int, events: list) -> tuple[str, dict]:
    import orjson

    entry_id = f"{int(NOW.timestamp() * 1000)}-0"
    fields = {
        b"project": str(project).encode(),
        b"received_at": str(int(NOW.timestamp() * 1000)).encode(),
        b"p": orjson.dumps(events),
    }
    return entry_id, fields


def test_same_batch_same_token_leaves_rollups_unchanged(ch) -> None:
    handler = AgentEventsHandler(ch, aioredis.Redis(), lambda p: 30, 3600)
    entry_id, fields = _entry(1, agent_dataset(NOW)[1])
    rows = decode_agent_entry(entry_id, fields)
    token = f"agent:{entry_id}:{entry_id}:1"
    spans = span_rows(NOW)

    asyncio.run(handler.store(rows, token))
    ch.insert("spans", spans, "otlp:1-0:1-0:1")
    first = totals(ch)
    assert first["events"] == len(rows) > 300
    assert first["failed"] == 10 and first["spans"] == 280 and first["agents"] == 5

    # The worker's retry after a timeout, or a redelivered batch: same rows, same token.
    asyncio.run(handler.store(rows, token))
    ch.insert("spans", spans, "otlp:1-0:1-0:1")
    assert totals(ch) == first
    raw = ch.query(f"SELECT count() AS n FROM {ch.database}.agent_events")[0]["n"]
    assert raw == len(rows)

    # A different batch still counts.
    entry2, fields2 = _entry(2, agent_dataset(NOW)[2])
    asyncio.run(handler.store(decode_agent_entry(entry2 + "1", fields2), "agent:x:y:1"))
    after = totals(ch)
    assert after["events"] == first["events"] + 30
    assert after["agents"] == first["agents"] + 1


def test_last_state_is_idempotent_even_without_a_token(ch) -> None:
    entry_id, fields = _entry(1, agent_dataset(NOW)[1])
    from dataclasses import asdict

    from weftline.enrich.agent_events import STORED_COLUMNS

    rows = [
        {k: v for k, v in asdict(r).items() if k in STORED_COLUMNS}
        for r in decode_agent_entry(entry_id, fields)
    ]
    q = (
        f"SELECT agent_id, argMaxMerge(status) AS status, max(last_heartbeat) AS hb "
        f"FROM {ch.database}.agent_last_state GROUP BY agent_id ORDER BY agent_id"
    )
    ch.insert("agent_events", rows, "tok-a")
    once = ch.query(q)
    ch.insert("agent_events", rows, "tok-b")  # a differently-tokened redelivery
    assert ch.query(q) == once
    assert {r["agent_id"]: r["status"] for r in once}["retired"] == "terminated"


def test_migration_backfills_rollups_from_existing_rows(chdb_session) -> None:
    db = chdb_session.with_database(f"t_{uuid.uuid4().hex[:12]}")
    from weftline.storage.migrate import applied_versions

    applied_versions(db)
    for mig in load_migrations():
        if mig.version >= 6:
            continue
        for stmt in mig.statements:
            db.command(stmt.replace("${db}", db.database))
        db.insert("schema_migrations", [{"version": mig.version, "name": mig.name}])
    entry_id, fields = _entry(1, agent_dataset(NOW)[1])
    from dataclasses import asdict

    from weftline.enrich.agent_events import STORED_COLUMNS

    rows = [
        {k: v for k, v in asdict(r).items() if k in STORED_COLUMNS}
        for r in decode_agent_entry(entry_id, fields)
    ]
    db.insert("agent_events", rows, "a:1")
    db.insert("agent_events", rows, "a:2")  # a duplicate: FINAL in the backfill drops it
    db.insert("spans", span_rows(NOW), "s:1")
    from weftline.storage.migrate import migrate

    assert migrate(db) == [m.version for m in load_migrations() if m.version >= 6]
    t = totals(db)
    assert t["events"] == len(rows) and t["spans"] == 280 and t["agents"] == 5


def test_settings_default_keeps_alert_loop_on() -> None:
    assert Settings().alerts_enabled is True


WEB_ERROR_TOTALS = """
SELECT
    (SELECT uniqMerge(events) FROM {db}.replay_events_1m) AS replay_events,
    (SELECT uniqMergeIf(events, kind = 'issue') FROM {db}.replay_events_1m) AS issues,
    (SELECT round(quantilesTDigestMergeIf(0.5, 0.75, 0.95, 0.99)(value_q,
        kind = 'web_vital' AND name = 'LCP')[2]) FROM {db}.replay_events_1m) AS lcp_p75,
    (SELECT uniqMerge(events) FROM {db}.sentry_errors_1m) AS errors,
    (SELECT uniqMerge(users) FROM {db}.sentry_errors_1m) AS users,
    (SELECT uniqMerge(events) FROM {db}.sentry_groups) AS group_events,
    (SELECT count() FROM (SELECT group_id FROM {db}.sentry_groups
        GROUP BY group_id HAVING min(first_seen) >= now() - INTERVAL 1 HOUR)) AS new_groups
"""


def test_replay_and_error_rollups_survive_redelivery_under_other_tokens(ch) -> None:
    """A stream entry claimed by another worker lands in another batch, under another
    token, so the views fire again; an SDK may resend an event. The uniq states over
    event ids keep every figure the same."""
    from tests.grafana_seed import (
        replay_entries,
        replay_handler,
        seed_replay,
        seed_sentry,
        sentry_entries,
        sentry_handler,
        store_entries,
    )

    seed_replay(ch, NOW)
    seed_sentry(ch, NOW)
    q = WEB_ERROR_TOTALS.format(db=ch.database)
    first = ch.query(q)[0]
    # 25 page views, 48 web vitals, 12 page loads, 5 rage/dead clicks and thrashing
    assert first["replay_events"] == 90 and first["issues"] == 5
    assert first["errors"] == 50 and first["group_events"] == 50 and first["new_groups"] == 2

    entries = replay_entries(NOW)
    store_entries(replay_handler(ch), entries[:10], "replay:redelivered:1")
    store_entries(replay_handler(ch), entries[5:], "replay:redelivered:2")
    # Sentry: the same events again (same event ids), batched differently.
    redelivered = [e for es in sentry_entries(NOW).values() for e in es]
    handler = sentry_handler(ch)
    store_entries(handler, redelivered[:20], "sentry:redelivered:1")
    store_entries(handler, redelivered[10:], "sentry:redelivered:2")
    assert ch.query(q)[0] == first
    final = f"SELECT count() AS n FROM {ch.database}.sentry_errors FINAL"
    assert ch.query(final)[0]["n"] == 50
