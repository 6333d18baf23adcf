"""Exactly-once as queries see it, issue status and regression, scrubbing, poison → DLQ.
Real valkey-server and chDB throughout."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from tests.conftest import make_project, wait_for
from weftline.enrich.sentry import SentryHandler
from weftline.enrich.stream_consumer import Entry
from weftline.ground.config import Settings
from weftline.ground.sentry_envelope import serialize_envelope
from weftline.storage import sentry_queries as q
from weftline.storage.keys import GROUP, dlq_stream, in_stream

TRACE = "f2db0a3c9e8d4b7aa1b2c3d4e5f60718"


def full_envelope(event_id: str, transaction: bool = False) -> bytes:
    """An error with a session, a client report and an attachment; or (transaction=True)
    a transaction with one child span (Relay never takes both kinds in one envelope)."""
    now = time.time()
    root, child = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
    event = {
        "platform": "python",
        "level": "error",
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": "bad input",
                    "stacktrace": {
                        "frames": [{"module": "app", "function": "handler", "in_app": True}]
                    },
                }
            ]
        },
        "user": {"id": "u1"},
        "contexts": {"trace": {"trace_id": TRACE, "span_id": "8d98906a0a25ab91"}},
    }
    txn = {
        "type": "transaction",
        "transaction": "GET /orders",
        "start_timestamp": now - 0.2,
        "timestamp": now,
        "contexts": {"trace": {"trace_id": TRACE, "span_id": root, "op": "http"}},
        "spans": [
            {
                "span_id": child,
                "parent_span_id": root,
                "op": "db",
                "description": "SELECT 1",
                "start_timestamp": now - 0.1,
                "timestamp": now - 0.05,
            }
        ],
    }
    session = {"sid": "s1", "status": "ok", "started": now - 5, "timestamp": now, "errors": 1}
    report = {"discarded_events": [{"reason": "sample_rate", "category": "error", "quantity": 2}]}
    if transaction:
        return serialize_envelope(
            {"event_id": event_id, "sent_at": now}, [({"type": "transaction"}, orjson.dumps(txn))]
        )
    return serialize_envelope(
        {"event_id": event_id, "sent_at": now},
        [
            ({"type": "event"}, orjson.dumps(event)),
            ({"type": "session"}, orjson.dumps(session)),
            ({"type": "client_report"}, orjson.dumps(report)),
            ({"type": "attachment", "filename": "dump.bin"}, b"\x00\x01binary\xff"),
        ],
    )


def counts(ch, pid: int) -> dict[str, int]:
    return {
        "errors": q.count_errors(ch, pid),
        "spans": q.count_rows(ch, "spans", pid),
        "sessions": q.count_rows(ch, "sentry_sessions", pid),
        "outcomes": q.count_rows(ch, "sentry_client_outcomes", pid),
        "items": q.count_rows(ch, "sentry_items", pid),
    }


def test_redelivered_entry_counts_once(ch):
    handler = SentryHandler(ch, lambda _pid: None)
    fields = {
        b"p": full_envelope(uuid.uuid4().hex),
        b"project": b"1",
        b"received_at": str(int(time.time() * 1000)).encode(),
    }
    entry = Entry("1700000000000-0", fields)
    other = Entry("1700000000001-0", {**fields, b"p": full_envelope(uuid.uuid4().hex)})
    txn = Entry("1700000000002-0", {**fields, b"p": full_envelope(uuid.uuid4().hex, True)})

    async def go() -> None:
        await handler.store(handler.decode(entry) + handler.decode(txn), "sentry:a")
        # redelivered after a crash, in other batches with other tokens
        await handler.store(
            handler.decode(entry) + handler.decode(other) + handler.decode(txn), "sentry:b"
        )
        await handler.store(handler.decode(txn) + handler.decode(entry), "sentry:c")

    asyncio.run(go())
    assert counts(ch, 1) == {"errors": 2, "spans": 2, "sessions": 2, "outcomes": 2, "items": 2}
    issues = q.list_issues(ch, 1, None, None, None, 10)
    assert len(issues) == 1 and issues[0]["count"] == 2 and issues[0]["users"] == 1


def test_crash_after_insert_then_claimed_by_another_worker(tmp_path, valkey, vk, ch, serve, http):
    p = make_project(1)
    settings = Settings(
        data_dir=tmp_path / "d", projects=[p], claim_idle_ms=500, batch_max_age_ms=50
    )
    edge_only = serve(settings, valkey.url, ch=ch, run_workers=False)
    for txn in (False, True):
        r = http.post(
            f"{edge_only.url}/api/1/envelope/?sentry_key={p.public_key}",
            content=full_envelope(uuid.uuid4().hex, txn),
        )
        assert r.status_code == 200, r.text
    # A worker reads the entries, stores them, and dies before acknowledging.
    resp = vk.xreadgroup(GROUP, "dead-worker", {in_stream("sentry"): ">"}, count=10)
    handler = SentryHandler(ch, settings.project_by_id)
    rows = []
    for eid, fields in resp[0][1]:
        rows += handler.decode(Entry(eid.decode(), dict(fields)))
    asyncio.run(handler.store(rows, "sentry:crashed"))
    assert counts(ch, 1)["errors"] == 1
    # A live worker claims the stale entry, stores it again, acknowledges it.
    serve(settings, valkey.url, ch=ch)
    wait_for(lambda: vk.xlen(in_stream("sentry")) == 0, timeout=20)
    assert counts(ch, 1) == {"errors": 1, "spans": 2, "sessions": 1, "outcomes": 1, "items": 1}


def post_error(http, app, p, func: str) -> str:
    eid = uuid.uuid4().hex
    event = {
        "platform": "python",
        "exception": [
            {
                "type": "RuntimeError",
                "value": "boom",
                "stacktrace": {"frames": [{"module": "m", "function": func, "in_app": True}]},
            }
        ],
    }
    body = serialize_envelope({"event_id": eid}, [({"type": "event"}, orjson.dumps(event))])
    r = http.post(f"{app.url}/api/{p.id}/envelope/?sentry_key={p.public_key}", content=body)
    assert r.status_code == 200
    return eid


def test_status_resolve_regress_ignore(settings, valkey, ch, serve, http):
    app = serve(settings, valkey.url, ch=ch)
    p, p2 = settings.projects
    h = {"authorization": f"Bearer {p.query_token}"}
    post_error(http, app, p, "a")
    post_error(http, app, p, "b")
    wait_for(lambda: q.count_errors(ch, p.id) == 2)
    issues = http.get(f"{app.url}/api/v1/issues", headers=h).json()["issues"]
    gid_a = next(i["group_id"] for i in issues if i["culprit"] == "m in a")
    gid_b = next(i["group_id"] for i in issues if i["culprit"] == "m in b")
    url_a = f"{app.url}/api/v1/issues/{gid_a}"

    r = http.patch(url_a, json={"status": "resolved"}, headers=h)
    assert r.status_code == 200 and r.json()["issue"]["status"] == "resolved"
    http.patch(f"{app.url}/api/v1/issues/{gid_b}", json={"status": "ignored"}, headers=h)
    listed = http.get(f"{app.url}/api/v1/issues?status=unresolved", headers=h).json()["issues"]
    assert listed == []

    time.sleep(0.01)
    post_error(http, app, p, "a")  # the resolved bug comes back
    post_error(http, app, p, "b")  # an ignored one stays ignored
    wait_for(lambda: q.count_errors(ch, p.id) == 4)
    a = http.get(url_a, headers=h).json()["issue"]
    assert a["status"] == "unresolved" and a["regressed"] and a["count"] == 2
    b = http.get(f"{app.url}/api/v1/issues/{gid_b}", headers=h).json()["issue"]
    assert b["status"] == "ignored" and not b["regressed"]
    # resolving again clears the regression
    http.patch(url_a, json={"status": "resolved"}, headers=h)
    assert not http.get(url_a, headers=h).json()["issue"]["regressed"]

    # API errors
    assert http.patch(url_a, json={"status": "done"}, headers=h).status_code == 400
    assert (
        http.patch(
            f"{app.url}/api/v1/issues/{'0' * 32}", json={"status": "resolved"}, headers=h
        ).status_code
        == 404
    )
    assert http.get(f"{app.url}/api/v1/issues").status_code == 401
    assert http.get(f"{app.url}/api/v1/issues?project_id={p2.id}", headers=h).status_code == 403
    h2 = {"authorization": f"Bearer {p2.query_token}"}
    assert http.get(url_a, headers=h2).status_code == 404  # not visible to another project
    assert http.get(f"{app.url}/api/v1/issues?status=weird", headers=h).status_code == 400


def test_pii_is_scrubbed_and_correlation_kept(tmp_path, valkey, ch, serve, http):
    p = make_project(1, store_ip=False)
    settings = Settings(data_dir=tmp_path / "d", projects=[p], batch_max_age_ms=50)
    app = serve(settings, valkey.url, ch=ch)
    eid = uuid.uuid4().hex
    event = {
        "platform": "javascript",
        "message": "paid with 4111 1111 1111 1111 today",
        "request": {
            "url": "http://shop/checkout",
            "headers": [["Authorization", "Bearer abc"], ["Cookie", "sid=1"], ["Accept", "*/*"]],
        },
        "extra": {"password": "hunter2", "total_tokens": 1234, "note": "ok"},
        "user": {"id": "u9", "ip_address": "{{auto}}"},
        "tags": {"openReplaySessionToken": "tok-123", "openReplaySession.id": "99"},
    }
    body = serialize_envelope({"event_id": eid}, [({"type": "event"}, orjson.dumps(event))])
    http.post(f"{app.url}/api/1/envelope/?sentry_key={p.public_key}", content=body)
    wait_for(lambda: q.count_errors(ch, 1) == 1)
    ev = http.get(
        f"{app.url}/api/v1/errors/{eid}", headers={"authorization": f"Bearer {p.query_token}"}
    ).json()["event"]
    assert ev["message"] == "paid with [Filtered] today"
    assert dict(ev["request"]["headers"]) == {
        "Authorization": "[Filtered]",
        "Cookie": "[Filtered]",
        "Accept": "*/*",
    }
    stored = ch.query(f"SELECT payload, user_ip FROM {ch.database}.sentry_errors FINAL", {})[0]
    payload = orjson.loads(stored["payload"])
    assert payload["extra"] == {"password": "[Filtered]", "total_tokens": 1234, "note": "ok"}
    assert stored["user_ip"] == "" and "ip_address" not in payload["user"]
    assert ev["openreplay_session_token"] == "tok-123" and ev["openreplay_session_id"] == "99"


def test_poison_goes_to_dlq_and_the_stream_moves_on(settings, valkey, vk, ch, serve, http):
    app = serve(settings, valkey.url, ch=ch)
    p = settings.projects[0]
    vk.xadd(in_stream("sentry"), {"p": b"\x00garbage", "project": 1, "received_at": 1})
    eid = post_error(http, app, p, "after_poison")
    wait_for(lambda: q.count_errors(ch, p.id) == 1)
    dead = wait_for(lambda: vk.xrange(dlq_stream("sentry")))
    assert b"not JSON" in dead[0][1][b"reason"]
    assert q.error_by_id(ch, p.id, eid) is not None
