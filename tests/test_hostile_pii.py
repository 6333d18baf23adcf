"""PII is scrubbed before anything is written anywhere (issue #13's PII row): rows, raw
items, tracker events, the DLQ; store_ip = false removes every IP field."""

from __future__ import annotations

import time
import uuid

import orjson

from tests.conftest import make_project, wait_for
from tests.test_sentry_edge import auth, env_bytes
from weftline.enrich.openreplay import event_rows
from weftline.enrich.openreplay_decode import MESSAGE_CLASSES, Batch, Timed
from weftline.ground.config import Settings
from weftline.storage.keys import dlq_stream, in_stream

CARD = "4111 1111 1111 1111"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.payload.signature"
SECRETS = ("4111", "eyJhbGci", "hunter2", "s3cr3t-key", "tok-123", "203.0.113.7")


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def rows(ch, sql: str) -> str:
    return orjson.dumps(ch.query(sql)).decode()


def test_sentry_rows_and_raw_items_are_scrubbed(tmp_path, valkey, ch, serve, http):
    p = make_project(1, store_ip=False)
    settings = Settings(data_dir=tmp_path / "d", projects=[p], batch_max_age_ms=50)
    app = serve(settings, valkey.url, ch=ch)
    event = {
        "message": f"paid with {CARD}",
        "user": {"id": "u1", "ip_address": "203.0.113.7"},
        "request": {
            "url": "https://shop.example/cb?token=tok-123&page=2",
            "query_string": "token=tok-123&page=2",
            "headers": {"X-Api-Key": "s3cr3t-key", "Authorization": BEARER},
            "env": {"REMOTE_ADDR": "203.0.113.7", "SERVER_NAME": "web1"},
        },
        "extra": {"password": "hunter2", "note": f"{BEARER} was used"},
    }
    # a transaction without trace context: kept raw, with its error, scrubbed all the same
    txn = {
        "type": "transaction",
        "transaction": "/pay",
        "extra": {"password": "hunter2"},
        "request": {"headers": {"Authorization": BEARER}},
        "message": CARD,
    }
    url = f"{app.url}/api/{p.id}/envelope/"
    for body in (env_bytes(event), env_bytes(extra=[({"type": "transaction"}, orjson.dumps(txn))])):
        assert http.post(url, content=body, headers=auth(p.public_key)).status_code == 200
    db = ch.database
    wait_for(lambda: ch.query(f"SELECT count() AS n FROM {db}.sentry_errors")[0]["n"] == 1)
    wait_for(lambda: ch.query(f"SELECT count() AS n FROM {db}.sentry_items")[0]["n"] == 1)
    stored = rows(ch, f"SELECT * FROM {db}.sentry_errors") + rows(
        ch, f"SELECT * FROM {db}.sentry_items"
    )
    assert leaked(stored) == []
    assert "[Filtered]" in stored
    assert "web1" in stored  # the rest of the request is kept


def test_dlq_entries_are_scrubbed_and_keep_no_address(valkey, vk, ch, settings, serve):
    serve(settings, valkey.url, ch=ch)
    text = orjson.dumps({"password": "hunter2", "card": CARD, "auth": BEARER})
    vk.xadd(
        in_stream("agent"), {"p": text, "project": "1", "received_at": "1", "ip": "203.0.113.7"}
    )
    vk.xadd(
        in_stream("agent"),
        {"p": b"\xff\x00 4111 1111 1111 1111", "project": "1", "received_at": "1"},
    )
    dead = wait_for(
        lambda: vk.xrange(dlq_stream("agent")) if vk.xlen(dlq_stream("agent")) == 2 else None
    )
    everything = b" ".join(b" ".join(k + b"=" + v for k, v in f.items()) for _, f in dead).decode(
        errors="replace"
    )
    assert leaked(everything) == []
    text_entry, binary_entry = (f for _, f in dead)
    assert b"[Filtered]" in text_entry[b"p"] and b"ip" not in text_entry
    assert binary_entry[b"p"] == b"" and b"not kept" in binary_entry[b"p_dropped"]


def test_tracker_urls_inputs_and_bodies_are_scrubbed():
    net = MESSAGE_CLASSES[83](
        type="fetch",
        method="POST",
        url="https://api.example/pay?access_token=tok-123",
        request=orjson.dumps(
            {"headers": {"Authorization": BEARER}, "body": orjson.dumps({"card": CARD}).decode()}
        ).decode(),
        response=orjson.dumps({"headers": {}, "body": f"ok {CARD}"}).decode(),
        status=200,
        timestamp=0,
        duration=5,
        transferred_body_size=10,
    )
    typed = MESSAGE_CLASSES[112](
        id=3, value=CARD, value_masked=False, label="card", hesitation_time=0, input_duration=1
    )
    now = int(time.time() * 1000)
    batch = Batch(
        version=1,
        page_no=1,
        first_index=0,
        timestamp=now,
        location="",
        offset=0,
        messages=[
            Timed(now, "t1", "https://shop.example/?token=tok-123", 0, net),
            Timed(now, "t1", "https://shop.example/", 1, typed),
        ],
    )
    out = event_rows(batch, 1, str(uuid.uuid4()), 0, now, 30, 4096)
    text = orjson.dumps(out).decode()
    assert [r["kind"] for r in out] == ["network", "input"]
    assert leaked(text) == []
    assert "access_token=[Filtered]" in text


def test_raw_tracker_batches_are_masked_and_still_decode():
    """The raw batch the player replays: secrets overwritten in place, so the batch keeps
    its framing and decodes to the same messages."""
    import base64
    import json
    from pathlib import Path

    from weftline.enrich.openreplay import decode_replay_entry
    from weftline.enrich.openreplay_decode import decode_batches

    data = Path(__file__).parent / "data" / "openreplay" / "reactflow_session.jsonl"
    captured = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    original = next(bytes.fromhex(c["body_hex"]) for c in captured if c["datatype"] == "devtools")
    secret = b"tok-123" + b"x" * 23
    planted = original.replace(b"?key=8b58edb840eca68f5d81aef1a1eea14a", b"?token=" + secret)
    assert secret in planted and len(planted) == len(original)
    now = int(time.time() * 1000)
    fields = {
        b"t": b"batch",
        b"p": planted,
        b"project": b"1",
        b"sid": b"7733000000000001",
        b"started_at": str(now).encode(),
        b"received_at": str(now).encode(),
        b"delay": b"0",
        b"dt": b"devtools",
    }
    out = decode_replay_entry("1-0", fields, 30, 4096)
    [raw] = [r for t, r in out if t == "replay_batches"]
    stored = base64.b64decode(raw["body_base64"])
    assert secret not in stored and len(stored) == len(planted)
    assert b"?token=" + b"*" * len(secret) in stored
    count = sum(len(b.messages) for b in decode_batches(stored))
    assert count == sum(len(b.messages) for b in decode_batches(planted))
    assert leaked(orjson.dumps([r for _, r in out]).decode()) == []
