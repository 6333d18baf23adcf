"""Nothing accepted is lost: backpressure, poison entries, Valkey down or restarted,
ClickHouse failing."""

from __future__ import annotations

import threading
import time

import httpx
import orjson

from tests.conftest import wait_for
from tests.test_agent_ingest import metric, post, state
from weftline.embedded import EmbeddedValkey
from weftline.storage.keys import GROUP, dlq_stream, in_stream
from weftline.storage.queries import count_agent_events


def test_backpressure_503_then_everything_accepted_is_stored(settings, valkey, vk, ch, serve, http):
    settings.backlog_budget.agent = 3
    ingest = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    codes = [post(http, ingest, p1, [state(f"a{i}")]).status_code for i in range(5)]
    assert codes == [202, 202, 202, 503, 503]
    r = post(http, ingest, p1, [state("late")])
    assert r.status_code == 503
    assert r.headers["retry-after"] == str(settings.retry_after_seconds)
    assert r.json()["error"] == "backlog_full"
    assert http.get(f"{ingest.url}/readyz").status_code == 503
    assert (
        metric(
            http,
            ingest,
            "weftline_ingest_rejected_requests_total",
            kind="agent",
            reason="backlog_full",
        )
        == 3
    )

    # A worker drains the backlog: exactly the three accepted requests land.
    serve(settings, valkey.url, ch=ch, run_workers=True)
    wait_for(lambda: vk.xlen(in_stream("agent")) == 0)
    assert count_agent_events(ch) == 3
    assert post(http, ingest, p1, [state("again")]).status_code == 202


def test_poison_entry_goes_to_dlq_and_does_not_block(settings, valkey, vk, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    # Written around the edge, as a bug or an older version might.
    vk.xadd(in_stream("agent"), {"p": b"\x00garbage", "project": "1", "received_at": "1"})
    vk.xadd(in_stream("agent"), {"project": "1"})
    assert post(http, srv, p1, [state("after")]).status_code == 202
    wait_for(lambda: count_agent_events(ch) == 1)
    wait_for(lambda: vk.xlen(dlq_stream("agent")) == 2)
    dead = vk.xrange(dlq_stream("agent"))
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert reasons[0].startswith("entry has no ")
    assert reasons[1].startswith("invalid agent events")
    assert all(int(f[b"deliveries"]) == 1 for _, f in dead)
    wait_for(lambda: vk.xlen(in_stream("agent")) == 0)  # acked just after rows are visible
    assert vk.xpending(in_stream("agent"), GROUP)["pending"] == 0
    assert metric(http, srv, "weftline_dlq_entries", kind="agent") == 2


def test_entry_over_max_deliveries_is_dead_lettered(settings, valkey, vk, ch, serve, http):
    """An entry that keeps killing its consumers (delivered again and again) ends in the DLQ."""
    settings.max_deliveries = 2
    p1 = settings.projects[0]
    payload = orjson.dumps([state("x")])
    eid = vk.xadd(
        in_stream("agent"),
        {"p": payload, "project": "1", "received_at": str(int(time.time() * 1000))},
    )
    vk.xgroup_create(in_stream("agent"), GROUP, id="0", mkstream=True)
    for n in range(3):  # three consumers "die" holding it
        vk.xreadgroup(GROUP, f"dead-{n}", {in_stream("agent"): ">" if n == 0 else "0"}, count=1)
        vk.xclaim(in_stream("agent"), GROUP, f"dead-{n}", 0, [eid])
    serve(settings, valkey.url, ch=ch)
    wait_for(lambda: vk.xlen(dlq_stream("agent")) == 1, timeout=20)
    [(_, fields)] = vk.xrange(dlq_stream("agent"))
    assert b"without being stored" in fields[b"reason"]
    assert count_agent_events(ch, p1.id) == 0


def test_valkey_down_gives_503_not_500(settings, tmp_path, ch, serve, http):
    vkserver = EmbeddedValkey(tmp_path / "vk")
    vkserver.start()
    srv = serve(settings, vkserver.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    assert post(http, srv, p1, [state()]).status_code == 202
    vkserver.stop()
    started = time.monotonic()
    r = post(http, srv, p1, [state()])
    assert r.status_code == 503
    assert time.monotonic() - started < 5
    assert r.json()["error"] == "buffer_unavailable"
    assert r.headers["retry-after"]
    assert http.get(f"{srv.url}/readyz").status_code == 503
    assert http.get(f"{srv.url}/healthz").status_code == 200


def test_valkey_killed_and_restarted_keeps_accepted_entries(settings, tmp_path, ch, serve, http):
    """AOF: entries acknowledged with 202 survive a SIGKILL of valkey-server."""
    data = tmp_path / "vk"
    first = EmbeddedValkey(data)
    first.start()
    ingest = serve(settings, first.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    for i in range(20):
        assert post(http, ingest, p1, [state(f"a{i}"), state(f"b{i}")]).status_code == 202
    first.kill()
    second = EmbeddedValkey(data, port=first.port)
    second.start()
    try:
        serve(settings, second.url, ch=ch, run_workers=True)
        wait_for(lambda: count_agent_events(ch) == 40, timeout=20)
        time.sleep(0.5)
        assert count_agent_events(ch) == 40
    finally:
        second.stop()


def test_clickhouse_failure_is_retried_and_nothing_acked(settings, valkey, vk, ch, serve, http):
    """A real ClickHouse failure (the table is gone): entries stay pending, inserts are
    retried with backoff, and once the table is back every event lands once."""
    ch.command(f"RENAME TABLE {ch.database}.agent_events TO {ch.database}.agent_events_away")
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    for i in range(5):
        assert post(http, srv, p1, [state(f"a{i}")]).status_code == 202
    wait_for(
        lambda: (
            metric(http, srv, "weftline_storage_insert_failures_total", table="agent_events") >= 3
        )
    )
    assert vk.xlen(in_stream("agent")) == 5
    ch.command(f"RENAME TABLE {ch.database}.agent_events_away TO {ch.database}.agent_events")
    wait_for(lambda: vk.xlen(in_stream("agent")) == 0, timeout=20)
    assert count_agent_events(ch) == 5


def test_live_sse_delivers_state_change(settings, valkey, ch, serve):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    got: list[dict] = []
    connected = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(timeout=20) as c,
            c.stream(
                "GET",
                f"{srv.url}/api/v1/live?project_id={p1.id}",
                headers={"authorization": f"Bearer {p1.query_token}"},
            ) as r,
        ):
            assert r.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in r.iter_lines():
                connected.set()
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    got.append({"event": event, **orjson.loads(line[6:])})
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert connected.wait(10)
    sent = time.monotonic()
    with httpx.Client() as c:
        assert post(c, srv, p1, [state("live-1", "error", current_task="t9")]).status_code == 202
    t.join(15)
    assert got, "no SSE event arrived"
    assert got[0]["event"] == "agent_state"
    assert (got[0]["agent_id"], got[0]["status"]) == ("live-1", "error")
    assert time.monotonic() - sent < 5


def test_live_feed_filters_by_session(settings, valkey, ch, serve):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    got: list[dict] = []
    connected = threading.Event()

    def listen() -> None:
        with (
            httpx.Client(timeout=20) as c,
            c.stream(
                "GET",
                f"{srv.url}/api/v1/live?session_id=sess-A",
                headers={"authorization": f"Bearer {p1.query_token}"},
            ) as r,
        ):
            for line in r.iter_lines():
                connected.set()
                if line.startswith("data: "):
                    got.append(orjson.loads(line[6:]))
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert connected.wait(10)
    with httpx.Client() as c:
        assert post(c, srv, p1, [state("b", session_id="sess-B")]).status_code == 202
        time.sleep(0.5)
        assert post(c, srv, p1, [state("a", session_id="sess-A")]).status_code == 202
    t.join(15)
    assert [(g["agent_id"], g["session_id"]) for g in got] == [("a", "sess-A")]
