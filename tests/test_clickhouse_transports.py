"""The two ClickHouse transports: embedded chDB and clickhouse-connect over HTTP (against
the chDB HTTP test endpoint). Same migrations, same SQL, same rows in → same rows out."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import clickhouse_connect
import httpx
import lz4.frame
import orjson
import pytest
from backports import zstd
from clickhouse_connect.driver.exceptions import DatabaseError

from weftline.enrich.agent_events import STORED_COLUMNS, decode_agent_entry
from weftline.storage import queries
from weftline.storage.clickhouse import ClickHouseConnect, StorageError
from weftline.storage.native_rows import to_columns


def agent_rows(n: int, entry: str = "1700000000000-0", tricky: str = "") -> list[dict]:
    now = datetime.now(UTC).isoformat()
    events = []
    for i in range(n):
        events.append(
            {
                "type": "agent_state",
                "agent_id": f"agent{tricky}",
                "status": "busy",
                "current_task": f"t{i}",
                "metrics": {"cpu_usage": 0.5 + i, "total_tasks": i},
                "ts": now,
                "session_id": "s1",
            }
        )
        events.append(
            {
                "type": "task_update",
                "agent_id": f"agent{tricky}",
                "task_id": f"task{i}",
                "state": "failed",
                "duration_ms": 12.5,
                "error": f"boom\t'{tricky}'\n",
            }
        )
    fields = {
        b"p": orjson.dumps(events),
        b"project": b"1",
        b"received_at": str(int(time.time() * 1000)).encode(),
    }
    rows = decode_agent_entry(entry, fields)
    return [{k: getattr(r, k) for k in STORED_COLUMNS} for r in rows]


def span_rows() -> list[dict]:
    # Recent times: rows past their TTL may vanish in a background merge.
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    return [
        {
            "project_id": 1,
            "source": "otlp",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": f"b7ad6b716920333{i}",
            "parent_span_id": "",
            "name": "GET /x",
            "kind": "server",
            "op": "",
            "status_code": "ok",
            "status_message": "",
            "service_name": "api",
            "start_time": f"{day} 00:00:00.123456789",
            "duration_ns": 1_500_000_123 + i,
            "resource_attributes": {"service.name": "api"},
            "attributes": {"http.method": "GET", "quote": "it's \\ tab\t"},
            "event_times": [f"{day} 00:00:00.987654321"],
            "event_names": ["exception"],
            "event_attributes": [{"exception.type": "ValueError"}],
            "link_trace_ids": [],
            "link_span_ids": [],
            "link_attributes": [],
            "session_id": "s1",
            "received_at": f"{day} 00:00:01.001",
            "retention_days": 30,
        }
        for i in range(3)
    ]


def all_rows(ch, table: str, order: str) -> list[dict]:
    return ch.query(f"SELECT * FROM {ch.database}.{table} FINAL ORDER BY {order}")


def test_migrations_create_the_same_tables(any_ch):
    tables = {
        r["name"]
        for r in any_ch.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", {"db": any_ch.database}
        )
    }
    assert {"agent_events", "spans", "schema_migrations"} <= tables
    assert queries.count_agent_events(any_ch) == 0


def test_insert_is_idempotent_per_token(any_ch):
    rows = agent_rows(5)
    for _ in range(3):
        any_ch.insert("agent_events", rows, "agent:1-0:1-0:1")
    # Deduplicated at insert time (same token), not only collapsed by FINAL.
    raw = any_ch.query(f"SELECT count() AS n FROM {any_ch.database}.agent_events")
    assert int(raw[0]["n"]) == 10
    any_ch.insert("agent_events", rows, "agent:other")  # another batch, same rows
    assert queries.count_agent_events(any_ch) == 10


def test_same_rows_in_same_rows_out(ch, chs):
    """Rows written through chDB (JSONEachRow) and through HTTP (Native) read back equal,
    nanoseconds, maps, arrays and nullable columns included."""
    if isinstance(ch, ClickHouseConnect):
        pytest.skip("needs the embedded transport on one side")
    agents, spans = agent_rows(4, tricky="ü\t'\\"), span_rows()
    for c in (ch, chs):
        c.insert("agent_events", agents, "a1")
        c.insert("spans", spans, "s1")
    assert chs.native_fallbacks == 0
    a = all_rows(ch, "agent_events", "event_uid")
    b = all_rows(chs, "agent_events", "event_uid")
    assert len(a) == 8 and a == b
    s1, s2 = all_rows(ch, "spans", "span_id"), all_rows(chs, "spans", "span_id")
    assert len(s1) == 3 and s1 == s2
    assert s2[0]["start_time"].endswith(" 00:00:00.123456789")
    assert s2[0]["event_times"][0].endswith(" 00:00:00.987654321")
    assert s2[0]["attributes"]["quote"] == "it's \\ tab\t"


def test_rows_native_cannot_carry_go_as_json_each_row(chs, ch):
    rows = agent_rows(2)
    rows[1] = {k: v for k, v in rows[1].items() if k != "retention_days"}  # DEFAULT applies
    rows[0]["ts"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.5+02:00")
    before = chs.native_fallbacks
    chs.insert("agent_events", rows, "mixed")
    assert chs.native_fallbacks == before + 1
    got = all_rows(chs, "agent_events", "event_uid")
    assert [r["retention_days"] for r in got] == [30] * 4
    if not isinstance(ch, ClickHouseConnect):
        ch.insert("agent_events", rows, "mixed")
        assert all_rows(ch, "agent_events", "event_uid") == got


def test_native_conversion_matches_server_parsing():
    types = {"t": "DateTime64(3, 'UTC')", "n": "DateTime64(9, 'UTC')", "d": "DateTime('UTC')"}
    rows = [
        {"t": "2024-05-01 12:00:00.5", "n": "2024-05-01T12:00:00.000000001Z", "d": "1970-01-02"}
    ]
    names, _, data = to_columns(rows, types)
    assert names == ["t", "n", "d"]
    assert data == [[1714564800500, 1714564800000000001, 86400]]
    assert to_columns([{"t": 5}], types) is None  # a number for a date-time: server decides
    assert to_columns([{"x": 1}], types) is None  # unknown column


def test_bound_parameters_with_awkward_values(any_ch):
    tricky = "ü\t'\\\"%s{x:String}"
    any_ch.insert("agent_events", agent_rows(3, tricky=tricky), "p1")
    got = queries.agent_events(any_ch, 1, f"agent{tricky}", None, None, 100)
    assert len(got) == 6
    assert {r["agent_id"] for r in got} == {f"agent{tricky}"}
    assert queries.agent_events(any_ch, 2, f"agent{tricky}", None, None, 100) == []
    # Long parameters move to a multipart form body.
    big = "x" * 20_000
    assert any_ch.query("SELECT length({v:String}) AS n", {"v": big}) == [{"n": 20000}]


def test_storage_errors(any_ch):
    with pytest.raises(StorageError, match="UNKNOWN_TABLE|doesn't exist|Unknown table"):
        any_ch.query(f"SELECT * FROM {any_ch.database}.nope")
    with pytest.raises(StorageError, match="SYNTAX_ERROR|Syntax error"):
        any_ch.command("CREAT TABLE x")
    with pytest.raises(StorageError):
        any_ch.insert("agent_events", [{"project_id": "not a number"}], "bad")


def test_errors_look_like_clickhouse(ch_http_server):
    url = ch_http_server.url
    r = httpx.post(url, content=b"SELECT * FROM system.nothing")
    assert r.status_code == 404
    assert r.headers["x-clickhouse-exception-code"] == "60"
    assert r.text.startswith("Code: 60. DB::Exception:") and "(version " in r.text
    r = httpx.post(url, content=b"SELEC 1")
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (400, "62")
    r = httpx.post(url, params={"no_such_setting": "1"}, content=b"SELECT 1")
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (404, "115")
    r = httpx.get(url, params={"query": "CREATE DATABASE nope_get"})
    assert r.headers["x-clickhouse-exception-code"] == "164"  # GET implies readonly
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=ch_http_server.port, autogenerate_session_id=False
    )
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT * FROM nowhere.nothing")
    assert err.value.code == 81  # UNKNOWN_DATABASE


def test_compression_both_ways(ch_http_server):
    url = ch_http_server.url
    sql = b"SELECT number FROM numbers(1000) FORMAT JSONEachRow"
    for enc, dec in (("zstd", zstd.decompress), ("lz4", lz4.frame.decompress)):
        r = httpx.Client(headers={"Accept-Encoding": enc}).post(
            url,
            params={"enable_http_compression": "1"},
            headers={"Accept-Encoding": enc},
            content=sql,
        )
        assert r.headers["content-encoding"] == enc
        body = dec(r.content)
        assert len(body.splitlines()) == 1000
    r = httpx.post(url, headers={"Content-Encoding": "lz4"}, content=lz4.frame.compress(sql))
    assert len(r.content.splitlines()) == 1000
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=ch_http_server.port, compress=True
    )
    assert client.write_compression == "lz4"  # inserts are sent compressed
    assert client.compression  # and responses are asked for compressed


def test_sessions_keep_settings(ch_http_server):
    a = clickhouse_connect.get_client(host="127.0.0.1", port=ch_http_server.port)
    b = clickhouse_connect.get_client(host="127.0.0.1", port=ch_http_server.port)
    a.command("SET max_threads = 3")
    assert a.command("SELECT getSetting('max_threads')") == 3
    assert b.command("SELECT getSetting('max_threads')") != 3
    r = httpx.post(
        ch_http_server.url, params={"session_id": "nope", "session_check": "1"}, content=b"SELECT 1"
    )
    assert r.headers["x-clickhouse-exception-code"] == "372"


def test_native_reads_decode_every_column_type(chs):
    """clickhouse-connect's own Native reader over the endpoint (what Grafana-like tools and
    ad-hoc scripts use) sees the same values as the JSON path."""
    chs.insert("spans", span_rows(), "n1")
    client = clickhouse_connect.get_client(
        host=chs._conn_args["host"], port=chs._conn_args["port"], database=chs.database
    )
    res = client.query("SELECT * FROM spans FINAL ORDER BY span_id")
    row = dict(zip(res.column_names, res.result_rows[0], strict=True))
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=123456)
    assert row["start_time"].replace(tzinfo=UTC) == day
    assert row["attributes"] == {"http.method": "GET", "quote": "it's \\ tab\t"}
    assert row["event_attributes"] == [{"exception.type": "ValueError"}]
    assert row["duration_ns"] == 1_500_000_123


def test_failed_insert_is_a_storage_error_then_succeeds(ch_http_server, chs):
    chs.column_types("agent_events")  # so the failure meets the INSERT itself
    ch_http_server.faults(fail_next=1)
    with pytest.raises(StorageError):
        chs.insert("agent_events", agent_rows(1), "f1")
    chs.insert("agent_events", agent_rows(1), "f1")
    assert queries.count_agent_events(chs) == 2
