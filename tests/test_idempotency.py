"""A client that resends (its answer was lost, or it got a 503 after the append) is stored
once: agent events by Idempotency-Key (or per-event event_id), Sentry by event_id, OTLP
by span id. Real valkey-server and chDB."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.conftest import wait_for
from tests.test_agent_ingest import metric, post
from tests.test_otlp_edge import PB, span_request
from weftline.storage import trace_queries as tq
from weftline.storage.keys import in_stream
from weftline.storage.queries import count_agent_events


def tasks(n: int, **kw) -> list[dict]:
    return [
        {"type": "task_update", "agent_id": "idem", "task_id": f"t{i}", "state": "done", **kw}
        for i in range(n)
    ]


def test_agent_events_resent_with_the_same_key_are_appended_once(
    settings, valkey, vk, ch, serve, http
):
    settings.idempotency_window_seconds = 2
    srv = serve(settings, valkey.url, ch=ch)
    p1, p2 = settings.projects
    deduplicated = "weftline_ingest_deduplicated_requests_total"
    before = metric(http, srv, deduplicated, kind="agent")  # this process's, all tests
    first = post(http, srv, p1, tasks(3), **{"idempotency-key": "order-17"})
    assert first.status_code == 202 and "duplicate" not in first.json()
    again = post(http, srv, p1, tasks(3), **{"idempotency-key": "order-17"})
    assert again.status_code == 202
    assert again.json() == {"accepted": 3, "id": first.json()["id"], "duplicate": True}
    # Keys are per project, and another key is another request.
    assert post(http, srv, p2, tasks(3), **{"idempotency-key": "order-17"}).json()["id"]
    other = post(http, srv, p1, tasks(1), **{"idempotency-key": "order-18"})
    assert other.json()["id"] != first.json()["id"]
    wait_for(lambda: count_agent_events(ch, 1) == 4 and count_agent_events(ch, 2) == 3)
    rows = ch.query(f"SELECT count() AS n FROM {ch.database}.agent_events WHERE project_id = 1")
    assert rows[0]["n"] == 4  # not even a duplicate row waiting for a merge
    assert metric(http, srv, deduplicated, kind="agent") - before == 1

    bad = post(http, srv, p1, tasks(1), **{"idempotency-key": "has space"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_idempotency_key"

    time.sleep(2.2)  # past the window: the key is forgotten, the request is new again
    late = post(http, srv, p1, tasks(3), **{"idempotency-key": "order-17"})
    assert late.status_code == 202 and late.json()["id"] != first.json()["id"]


def test_agent_events_with_event_ids_collapse_without_a_key(settings, valkey, vk, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    ts = int(time.time() * 1000) - 60_000  # the client's own time, the same in the resend
    events = [{**e, "event_id": f"ev-{i}", "ts": ts} for i, e in enumerate(tasks(5))]
    ids = {post(http, srv, p1, events).json()["id"] for _ in range(2)}
    assert len(ids) == 2  # two entries, as no Idempotency-Key was sent
    wait_for(lambda: vk.xlen(in_stream("agent")) == 0)
    assert count_agent_events(ch, 1) == 5
    uids = ch.query(f"SELECT DISTINCT event_uid FROM {ch.database}.agent_events ORDER BY 1")
    assert [r["event_uid"] for r in uids] == [f"id:ev-{i}" for i in range(5)]


def test_sentry_and_otlp_resends_are_stored_once(settings, valkey, vk, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    event_id = uuid.uuid4().hex
    event = (
        b'{"event_id":"' + event_id.encode() + b'"}\n{"type":"event"}\n'
        b'{"message":"resent","level":"error","platform":"python","timestamp":'
        + str(time.time()).encode()
        + b"}\n"
    )
    auth = {"x-sentry-auth": f"Sentry sentry_key={p1.public_key}, sentry_version=7"}
    for _ in range(3):  # the SDK's transport resends the same envelope
        r = http.post(f"{srv.url}/api/{p1.id}/envelope/", content=event, headers=auth)
        assert r.status_code == 200 and r.json() == {"id": event_id}
    spans = span_request([b"\x0a" * 16, b"\x0b" * 16])
    for _ in range(3):  # the OTLP exporter's retry sends the same request
        r = httpx.post(
            f"{srv.url}/v1/traces",
            content=spans,
            headers={**PB, "x-weftline-key": p1.public_key},
        )
        assert r.status_code == 200
    wait_for(lambda: vk.xlen(in_stream("sentry")) == 0 and vk.xlen(in_stream("otlp")) == 0)
    rows = ch.query(
        f"SELECT count() AS n FROM {ch.database}.sentry_errors FINAL WHERE event_id = {{e:String}}",
        {"e": event_id},
    )
    wait_for(lambda: tq.count_spans(ch, p1.id) == 2)
    assert rows[0]["n"] == 1
    assert tq.count_spans(ch, p1.id) == 2
