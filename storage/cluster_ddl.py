"""Migrations for a ClickHouse cluster (`clickhouse_cluster = "name"`).

Each `CREATE TABLE ${db}.t … ENGINE = <X>MergeTree …` of a migration becomes two tables,
both created ON CLUSTER:

- `t_local`: Replicated<X>MergeTree on every replica of every shard, keeping the
  columns, ORDER BY, PARTITION BY, TTL and indexes; the insert-deduplication window
  setting becomes its replicated form;
- `t`: a Distributed table over `t_local`, sharded by a hash of the sort key, so the
  rows that ReplacingMergeTree must collapse (same key) always meet on one shard and
  `FINAL` stays exact per shard.

Queries and inserts keep using `t`, so readers and writers need no change. `ALTER TABLE`
statements are applied to both tables. A materialized view is created ON CLUSTER between
the local tables (inserts land in `src_local` on each shard, and the view must fire
there), so rollups aggregate per shard and queries merge the shards' states through the
Distributed table. `INSERT … SELECT` backfills run once, as written, between Distributed
tables. Anything else a migration might hold is refused rather than guessed.
"""

from __future__ import annotations

import re

CREATE_RE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<db>[A-Za-z_$][\w${}]*)\."
    r"(?P<table>[A-Za-z_]\w*)\s*(?P<body>\(.*\))\s*ENGINE\s*=\s*(?P<engine>\w*MergeTree)"
    r"(?P<args>\s*\([^)]*\))?(?P<rest>.*)$",
    re.I | re.S,
)
STORAGE_ONLY_ALTER_RE = re.compile(
    r"^\s*(MODIFY\s+TTL|REMOVE\s+TTL|MODIFY\s+SETTING|RESET\s+SETTING|MATERIALIZE|"
    r"ADD\s+INDEX|DROP\s+INDEX|CLEAR\s+INDEX|ADD\s+PROJECTION|DROP\s+PROJECTION|"
    r"MODIFY\s+ORDER\s+BY)\b",
    re.I,
)
ALTER_RE = re.compile(
    r"^\s*ALTER\s+TABLE\s+(?P<db>[A-Za-z_$][\w${}]*)\.(?P<table>[A-Za-z_]\w*)\s+(?P<rest>.*)$",
    re.I | re.S,
)
ORDER_BY_RE = re.compile(
    r"\bORDER\s+BY\s+(?P<key>\(.*?\)|[^\s]+)\s*(?=$|PARTITION|PRIMARY|SAMPLE|TTL|SETTINGS)",
    re.I | re.S,
)
MV_RE = re.compile(
    r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<db>\w+)\."
    r"(?P<view>\w+)\s+TO\s+(?P=db)\.(?P<target>\w+)\s+AS\s+(?P<select>.*)$",
    re.I | re.S,
)
INSERT_SELECT_RE = re.compile(r"^\s*INSERT\s+INTO\s+[\w.]+\s*(\([^)]*\))?\s*SELECT\b", re.I)
DB_RE = re.compile(r"^\s*CREATE\s+DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?(?P<db>\w+)\s*$", re.I)


class ClusterDdlError(ValueError):
    """A migration statement this module does not know how to run on a cluster."""


def _q(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cluster_statements(stmt: str, cluster: str) -> list[str]:
    """The statements that apply `stmt` (one migration statement, `${db}` already
    substituted or not) to every node of `cluster`."""
    on = f"ON CLUSTER {_q(cluster)}"
    m = DB_RE.match(stmt)
    if m:
        return [f"CREATE DATABASE IF NOT EXISTS {m.group('db')} {on}"]
    m = CREATE_RE.match(stmt)
    if m:
        db, table = m.group("db"), m.group("table")
        local = f"{table}_local"
        ine = "IF NOT EXISTS " if m.group("ine") else ""
        args = (m.group("args") or "").strip()
        extra = args[1:-1].strip() if args else ""
        zk_path = f"/clickhouse/tables/{{shard}}/{{database}}/{local}"
        engine_args = ", ".join(a for a in (_q(zk_path), "'{replica}'", extra) if a)
        rest = re.sub(
            r"\bnon_replicated_deduplication_window\b",
            "replicated_deduplication_window",
            m.group("rest"),
        )
        order = ORDER_BY_RE.search(rest)
        if not order:
            raise ClusterDdlError(f"{table}: no ORDER BY to shard by")
        key = order.group("key").strip()
        key_args = key[1:-1] if key.startswith("(") else key
        return [
            f"CREATE TABLE {ine}{db}.{local} {on} {m.group('body')}\n"
            f"ENGINE = Replicated{m.group('engine')}({engine_args}){rest}",
            f"CREATE TABLE {ine}{db}.{table} {on} AS {db}.{local}\n"
            f"ENGINE = Distributed({_q(cluster)}, {_q(db)}, {_q(local)}, "
            f"sipHash64({key_args}))",
        ]
    m = MV_RE.match(stmt)
    if m:
        db = m.group("db")
        ine = "IF NOT EXISTS " if m.group("ine") else ""
        # Every table a migration's view reads is a Weftline table of this database,
        # so each has a local form.
        select = re.sub(rf"\b{re.escape(db)}\.(\w+)\b", rf"{db}.\1_local", m.group("select"))
        return [
            f"CREATE MATERIALIZED VIEW {ine}{db}.{m.group('view')} {on} "
            f"TO {db}.{m.group('target')}_local AS {select}"
        ]
    if INSERT_SELECT_RE.match(stmt):
        return [stmt]
    m = ALTER_RE.match(stmt)
    if m:
        db, table, rest = m.group("db"), m.group("table"), m.group("rest")
        if STORAGE_ONLY_ALTER_RE.match(rest):
            # TTL, settings and indexes belong to the MergeTree that stores the rows; a
            # Distributed table has none and refuses them.
            return [f"ALTER TABLE {db}.{table}_local {on} {rest}"]
        return [
            f"ALTER TABLE {db}.{table}_local {on} {rest}",
            f"ALTER TABLE {db}.{table} {on} {rest}",
        ]
    raise ClusterDdlError(f"no cluster form for: {stmt[:80]!r}")
