"""Every storage failure is seen: an INSERT raises on any server-side error (a view's
included) on both transports, says whether a retry can pass, and the retry with the same
dedup token reaches the views that missed the rows without doubling the others."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.test_clickhouse_transports import agent_rows
from weftline.storage.clickhouse import StorageError
from weftline.storage.writer import write_tables


def counts(ch, db: str) -> tuple[int, int, int]:
    source = ch.query(f"SELECT count() AS n FROM {db}.agent_events")[0]["n"]
    probe = ch.query(f"SELECT count() AS n FROM {db}.probe")[0]["n"]
    rollup = ch.query(f"SELECT sum(events) AS n FROM {db}.agent_events_1m")[0]["n"]
    return int(source), int(probe), int(rollup)


def test_a_view_that_fails_once_ends_with_every_row_once(any_ch):
    db = any_ch.database
    # A view on the real agent_events table that throws while `fail_switch` has a row,
    # beside the schema's own rollup view (agent_events_1m_mv).
    any_ch.command(f"CREATE TABLE {db}.fail_switch (on UInt8) ENGINE = MergeTree ORDER BY on")
    any_ch.command(
        f"CREATE TABLE {db}.probe (event_uid String) ENGINE = MergeTree ORDER BY event_uid "
        "SETTINGS non_replicated_deduplication_window = 1000"
    )
    any_ch.command(
        f"CREATE MATERIALIZED VIEW {db}.probe_mv TO {db}.probe AS SELECT event_uid "
        f"FROM {db}.agent_events "
        f"WHERE throwIf((SELECT count() FROM {db}.fail_switch) > 0, 'probe view fails') = 0"
    )
    any_ch.command(f"INSERT INTO {db}.fail_switch VALUES (1)")
    rows = agent_rows(20, entry="1700000000000-7")
    n = len(rows)
    token = f"agent:{uuid.uuid4().hex}"

    with pytest.raises(StorageError) as err:
        asyncio.run(write_tables(any_ch, {"agent_events": rows}, token))
    assert "probe view fails" in str(err.value)
    assert err.value.permanent is False  # an exception in a view can pass on retry
    source, probe, _ = counts(any_ch, db)
    # Not transactional: the source kept the rows although the INSERT raised.
    assert (source, probe) == (n, 0)

    any_ch.command(f"TRUNCATE TABLE {db}.fail_switch")
    asyncio.run(write_tables(any_ch, {"agent_events": rows}, token))
    assert counts(any_ch, db) == (n, n, n)
    asyncio.run(write_tables(any_ch, {"agent_events": rows}, token))  # a redelivery
    assert counts(any_ch, db) == (n, n, n)


def test_data_errors_are_permanent_and_the_rest_transient(any_ch):
    good = agent_rows(1)[0]
    cases = {
        "integer over 64 bits": {**good, "project_id": 2**70},
        "text for a number": {**good, "project_id": "abc"},
        "negative unsigned": {**good, "project_id": -1},
    }
    for what, row in cases.items():
        with pytest.raises(StorageError) as err:
            any_ch.insert("agent_events", [row], uuid.uuid4().hex)
        assert err.value.permanent is True, (what, str(err.value))
    with pytest.raises(StorageError) as err:  # e.g. a migration not applied yet
        any_ch.insert("not_created_yet", [good], uuid.uuid4().hex)
    assert err.value.permanent is False
    assert err.value.code == 60  # UNKNOWN_TABLE
