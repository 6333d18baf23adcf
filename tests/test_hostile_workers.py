"""Workers never stall on one entry (issue #13, first rows of its table): a value no
column can hold, a broken item beside a good one, a batch that fails to store. Real
valkey-server, real chDB, the real consumer loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest

from tests.conftest import wait_for
from tests.test_sentry_edge import auth, env_bytes
from weftline.enrich.sentry import decode_envelope_entry
from weftline.enrich.stream_consumer import ConsumerOptions, Entry, StreamConsumer, is_permanent
from weftline.ground.sentry_envelope import serialize_envelope
from weftline.storage import sentry_queries as q
from weftline.storage.clickhouse import StorageError
from weftline.storage.keys import GROUP, dlq_stream, in_stream
from weftline.storage.valkey import connect
from weftline.storage.writer import write_tables

NOW_MS = int(time.time() * 1000)
NOW_CH = time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime())  # inside every TTL


def sentry_entry(items: list[tuple[dict, bytes]], headers: dict | None = None) -> Entry:
    payload = serialize_envelope(headers or {}, items)
    return Entry(
        f"{NOW_MS}-0", {b"p": payload, b"project": b"1", b"received_at": str(NOW_MS).encode()}
    )


def tables(rows) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.table:
            out.setdefault(r.table, []).append(r.data)
    return out


# ---------- values checked against their column types at decode ----------


def test_client_report_quantity_1e30_is_clamped_and_stored(ch):
    report = {
        "timestamp": time.time(),
        "discarded_events": [
            {"reason": "queue_overflow", "category": "error", "quantity": 1e30},
            {"reason": "x" * 50, "category": "made-up", "quantity": -5},
        ],
    }
    rows = decode_envelope_entry(sentry_entry([({"type": "client_report"}, orjson.dumps(report))]))
    got = tables(rows)["sentry_client_outcomes"]
    assert [r["quantity"] for r in got] == [2**32 - 1, 0]
    asyncio.run(write_tables(ch, tables(rows), "t:1"))  # the insert takes it
    assert q.count_rows(ch, "sentry_client_outcomes", 1) == 2
    labels = [r.data["discarded"] for r in rows if not r.table and "discarded" in r.data]
    assert labels == [("queue_overflow", "error"), ("other", "other")]  # bounded labels


def test_transaction_start_29e9_is_replaced_and_stored(ch):
    tid, sid = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    txn = {
        "type": "transaction",
        "transaction": "/x",
        "start_timestamp": 29e9,  # year 2888: past DateTime64(9)'s 2262
        "timestamp": time.time(),
        "contexts": {"trace": {"trace_id": tid, "span_id": sid, "op": "http.server"}},
        "spans": [
            {
                "span_id": uuid.uuid4().hex[:16],
                "start_timestamp": -1e300,
                "timestamp": 1e300,
                "op": "db",
            }
        ],
    }
    rows = decode_envelope_entry(sentry_entry([({"type": "transaction"}, orjson.dumps(txn))]))
    spans = tables(rows)["spans"]
    assert len(spans) == 2
    for sp in spans:
        assert sp["start_time"].startswith(time.strftime("%Y", time.gmtime()))
        assert 0 <= sp["duration_ns"] < 2**63
    asyncio.run(write_tables(ch, tables(rows), "t:2"))
    assert q.count_rows(ch, "spans", 1) == 2


def test_bad_session_item_does_not_take_the_error_event_down():
    eid = uuid.uuid4().hex
    event = {"event_id": eid, "message": "boom", "level": "error"}
    session = {"sid": uuid.uuid4().hex, "errors": "abc", "started": time.time()}
    rows = decode_envelope_entry(
        sentry_entry(
            [
                ({"type": "event"}, orjson.dumps(event)),
                ({"type": "session"}, orjson.dumps(session)),
            ],
            {"event_id": eid},
        )
    )
    got = tables(rows)
    assert [r["event_id"] for r in got["sentry_errors"]] == [eid]
    assert "sentry_sessions" not in got
    [raw] = got["sentry_items"]  # the bad item is kept raw, with its reason
    assert "errors must be a number" in raw["headers"]
    outcomes = [r.data for r in rows if not r.table and "type" in r.data]
    assert {"type": "session", "outcome": "invalid"} in outcomes


def test_unknown_item_types_are_one_label():
    items = [({"type": f"kind{n}"}, b"{}") for n in range(50)]
    rows = decode_envelope_entry(sentry_entry(items))
    assert {r.data["type"] for r in rows if not r.table} == {"other"}


# ---------- what is permanent, what is retried ----------


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (TypeError("Integer exceeds 64-bit range"), True),
        (OverflowError("int too big"), True),
        (Exception("Code: 407. DB::Exception: Decimal math overflow"), True),
        (Exception("Code: 27. DB::Exception: CANNOT_PARSE_INPUT_ASSERTION_FAILED"), True),
        (Exception("Code: 243. DB::Exception: Cannot reserve 1.00 MiB (NOT_ENOUGH_SPACE)"), False),
        (Exception("Code: 60. DB::Exception: Table t.x does not exist. (UNKNOWN_TABLE)"), False),
        (Exception("Code: 252. Too many parts (TOO_MANY_PARTS)"), False),
        (ConnectionError("reset"), False),
        (RuntimeError("cannot schedule new futures after shutdown"), False),
    ],
)
def test_permanent_or_transient(error, permanent):
    """Handler errors by class; ClickHouse's errors as storage classifies them."""
    if type(error) is Exception:
        error = StorageError.from_exception(error)
    assert is_permanent(error) is permanent


class TableHandler:
    """A handler storing each entry's `q` and `t` fields into sentry_client_outcomes
    through the real writer: the storage side of the split, without decode checks."""

    kind = "sentry"

    def __init__(self, ch) -> None:
        self.ch = ch
        self.stores: list[int] = []
        self.failing: Exception | None = None

    def decode(self, entry: Entry) -> list[dict[str, Any]]:
        return [
            {
                "project_id": 1,
                "row_uid": entry.id,
                "timestamp": entry.fields[b"t"].decode(),
                "reason": "r",
                "category": "c",
                "quantity": int(entry.fields[b"q"]),
                "sdk": "",
                "received_at": NOW_CH,
            }
        ]

    async def store(self, rows, token: str) -> None:
        self.stores.append(len(rows))
        if self.failing is not None:
            raise self.failing
        await write_tables(self.ch, {"sentry_client_outcomes": rows}, token)

    async def after_store(self, rows) -> None:
        return None


def run_consumer(
    valkey_url: str, handler, until, timeout: float = 20.0, workers: int = 1
) -> StreamConsumer:
    async def main() -> StreamConsumer:
        client = connect(valkey_url)
        opts = ConsumerOptions(batch_max_age_ms=50, claim_idle_ms=600, backoff_max=0.2)
        consumers = [StreamConsumer(client, handler, f"w{n}", opts) for n in range(workers)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(until) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await client.aclose()
        return consumers[0]

    return asyncio.run(main())


def test_failing_batch_is_split_down_to_the_poison_entries(valkey, vk, ch):
    good_t = NOW_CH
    entries = [("5", good_t)] * 3 + [(str(10**30), good_t)] + [("7", "not a time")]
    entries += [("9", good_t)] * 3
    for qty, t in entries:
        vk.xadd(in_stream("sentry"), {"q": qty, "t": t})
    handler = TableHandler(ch)
    consumer = run_consumer(valkey.url, handler, lambda: vk.xlen(in_stream("sentry")) == 0)
    assert q.count_rows(ch, "sentry_client_outcomes", 1) == 6
    dead = vk.xrange(dlq_stream("sentry"))
    assert len(dead) == 2
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert reasons[0].startswith("cannot be stored: StorageError")  # the unparsable time
    assert "64-bit range" in reasons[1]  # the int past 64 bits
    assert consumer.stats.splits >= 2
    assert handler.stores[0] == 8  # the whole batch was tried first


def test_full_disk_is_retried_never_dead_lettered(valkey, vk, ch):
    vk.xadd(in_stream("sentry"), {"q": "1", "t": NOW_CH})
    handler = TableHandler(ch)
    handler.failing = StorageError.from_exception(
        Exception("Code: 243. DB::Exception: Cannot reserve 1.00 MiB (NOT_ENOUGH_SPACE)")
    )
    # Longer than claim_idle_ms, with an idle second worker claiming stale entries: the
    # retrying worker keeps its entry (no delivery is counted, nothing dead-lettered).
    consumer = run_consumer(
        valkey.url, handler, lambda: len(handler.stores) >= 12, timeout=3, workers=2
    )
    assert len(handler.stores) >= 5
    assert vk.xlen(dlq_stream("sentry")) == 0
    assert vk.xlen(in_stream("sentry")) == 1
    [p] = vk.xpending_range(in_stream("sentry"), GROUP, "-", "+", 10)
    assert p["times_delivered"] == 1
    assert consumer.stats.dead == 0
    handler.failing = None  # the disk has room again: stored once
    run_consumer(valkey.url, handler, lambda: vk.xlen(in_stream("sentry")) == 0)
    assert q.count_rows(ch, "sentry_client_outcomes", 1) == 1


# ---------- end to end: the edge, the worker, the next event ----------


def test_poison_envelopes_never_stall_later_events(settings, valkey, vk, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p = settings.projects[0]
    url = f"{srv.url}/api/{p.id}/envelope/"
    report = {
        "discarded_events": [{"reason": "queue_overflow", "category": "error", "quantity": 1e30}]
    }
    txn = {
        "type": "transaction",
        "start_timestamp": 29e9,
        "timestamp": time.time(),
        "contexts": {"trace": {"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16]}},
    }
    session = {"sid": uuid.uuid4().hex, "errors": "abc"}
    bodies = [
        env_bytes(extra=[({"type": "client_report"}, orjson.dumps(report))]),
        env_bytes(extra=[({"type": "transaction"}, orjson.dumps(txn))]),
        env_bytes(
            {"message": "beside a bad session"},
            extra=[({"type": "session"}, orjson.dumps(session))],
        ),
        env_bytes({"message": "after"}),
    ]
    for body in bodies:
        assert http.post(url, content=body, headers=auth(p.public_key)).status_code == 200
    wait_for(lambda: q.count_errors(ch, p.id) == 2)
    wait_for(lambda: vk.xlen(in_stream("sentry")) == 0)
    assert q.count_rows(ch, "sentry_client_outcomes", p.id) == 1
    assert q.count_rows(ch, "spans", p.id) == 1
    assert vk.xlen(dlq_stream("sentry")) == 0


def test_readyz_and_metrics_show_a_stalled_stream(settings, valkey, vk, ch, serve, http):
    settings.stream_stall_seconds = 1.0
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)  # nobody drains the stream
    assert http.get(f"{srv.url}/readyz").status_code == 200
    p = settings.projects[0]
    body = env_bytes({"message": "waits"})
    r = http.post(f"{srv.url}/api/{p.id}/envelope/", content=body, headers=auth(p.public_key))
    assert r.status_code == 200
    assert http.get(f"{srv.url}/readyz").status_code == 200  # first seen now
    time.sleep(1.2)
    r = http.get(f"{srv.url}/readyz")
    assert r.status_code == 503
    assert "has not moved" in r.json()["checks"]["stalled_sentry"]
    text = http.get(f"{srv.url}/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('weftline_stream_stalled_seconds{kind="sentry"}')
    )
    assert float(line.split()[-1]) >= 1.0
    serve(settings, valkey.url, ch=ch, run_workers=True)
    wait_for(lambda: vk.xlen(in_stream("sentry")) == 0)
    assert http.get(f"{srv.url}/readyz").status_code == 200
