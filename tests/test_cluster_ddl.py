"""ClickHouse cluster DDL: every migration's ON CLUSTER / Replicated / Distributed form
parses in the real engine (EXPLAIN SYNTAX), and the local tables' shape runs."""

from __future__ import annotations

import re
import uuid

import pytest

from weftline.storage.cluster_ddl import ClusterDdlError, cluster_statements
from weftline.storage.migrate import load_migrations


def generated(db: str, cluster: str = "weftline") -> list[tuple[str, str]]:
    out = []
    for mig in load_migrations():
        for stmt in mig.statements:
            for s in cluster_statements(stmt.replace("${db}", db), cluster):
                out.append((mig.name, s))
    return out


def test_every_migration_has_a_cluster_form_that_parses(chdb_session):
    stmts = generated("weftline")
    tables = {
        m.group(1)
        for _, s in stmts
        if (m := re.match(r"CREATE TABLE IF NOT EXISTS weftline\.(\w+) ON CLUSTER", s))
    }
    assert {"agent_events", "agent_events_local", "spans", "spans_local"} <= tables
    # Tables written by worker batches carry a dedup window; the cluster form must keep it.
    windowed = {
        m.group(1)
        for mig in load_migrations()
        for st in mig.statements
        if "non_replicated_deduplication_window" in st
        and (m := re.search(r"CREATE TABLE IF NOT EXISTS \$\{db\}\.(\w+)", st))
    }
    assert {"agent_events", "spans"} <= windowed
    views = 0
    for _name, s in stmts:
        if s.startswith(("CREATE MATERIALIZED VIEW", "INSERT INTO", "ALTER TABLE")):
            # EXPLAIN SYNTAX does not take views or ALTERs (and analyzes INSERT's SELECT
            # against tables that do not exist here); EXPLAIN AST runs the same parser.
            assert chdb_session.query(f"EXPLAIN AST {s}")
            text = s
        else:
            canonical = chdb_session.query(f"EXPLAIN SYNTAX {s}")
            text = "\n".join(str(v) for row in canonical for v in row.values())
        if s.startswith("INSERT INTO"):  # a backfill: runs once, between Distributed tables
            assert "_local" not in s
            continue
        assert "ON CLUSTER weftline" in text.replace("'", "")
        if s.startswith("ALTER TABLE"):  # applied to the local and the Distributed table
            continue
        if s.startswith("CREATE MATERIALIZED VIEW"):
            views += 1
            # fires on the shard where rows land, reads and writes local tables only
            assert re.search(r" TO weftline\.\w+_local", text)
            assert not re.search(r"weftline\.(?!\w+_local\b)\w+", text.split(" AS ", 1)[1])
        elif "Distributed(" not in s:
            assert re.search(r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/", text)
            name = re.search(r"weftline\.(\w+?)(?:_local)? ON CLUSTER", text).group(1)
            assert ("replicated_deduplication_window" in text) == (name in windowed), name
            assert "non_replicated" not in text
        else:
            assert "ENGINE = Distributed(" in text and "sipHash64(" in text
    assert views >= 1


def test_distributed_sharding_key_is_the_sort_key():
    stmts = dict(generated("db"))
    dist = [s for s in stmts.values() if "Distributed(" in s and ".spans " in s][0]
    assert "sipHash64(project_id, service_name, name, toDateTime(start_time), trace_id, " in dist
    assert "span_id)" in dist


def test_local_tables_run_on_the_engine(chdb_session):
    """The replicated local table minus replication (no Keeper here) is a valid table with
    the same columns, TTL, indexes and settings: create it and insert into it."""
    db = f"c_{uuid.uuid4().hex[:10]}"
    view = chdb_session.with_database(db)
    for _, s in generated(db):
        if "Distributed(" in s or not s.startswith("CREATE TABLE"):
            continue
        plain = s.replace(" ON CLUSTER 'weftline'", "")
        plain = re.sub(
            r"ENGINE = Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(, )?",
            r"ENGINE = \1(",
            plain,
        )
        view.command(plain)
    view.command(
        f"INSERT INTO {db}.agent_events_local (project_id, event_uid, type, ts, received_at) "
        "VALUES (1, 'e1', 'hitl', now64(3), now64(3))"
    )
    assert view.query(f"SELECT count() AS n FROM {db}.agent_events_local FINAL") == [{"n": 1}]


def test_unknown_statements_are_refused():
    with pytest.raises(ClusterDdlError):
        cluster_statements("CREATE VIEW db.v AS SELECT 1", "c")
    alter = cluster_statements("ALTER TABLE db.spans ADD COLUMN x String", "c")
    assert alter == [
        "ALTER TABLE db.spans_local ON CLUSTER 'c' ADD COLUMN x String",
        "ALTER TABLE db.spans ON CLUSTER 'c' ADD COLUMN x String",
    ]


def test_storage_alters_go_to_the_local_table_only():
    ttl = cluster_statements(
        "ALTER TABLE ${db}.trace_times MODIFY TTL day + toIntervalDay(retention_days + 1)",
        "weftline",
    )
    assert ttl == [
        "ALTER TABLE ${db}.trace_times_local ON CLUSTER 'weftline' "
        "MODIFY TTL day + toIntervalDay(retention_days + 1)"
    ]
    add = cluster_statements("ALTER TABLE ${db}.spans ADD COLUMN x String", "weftline")
    assert [a.split(" ON ")[0] for a in add] == [
        "ALTER TABLE ${db}.spans_local",
        "ALTER TABLE ${db}.spans",
    ]
