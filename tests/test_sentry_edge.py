"""The Sentry edge's answers, as Relay gives them: 200/400/401/403/413/429, CORS, and
the buffer budget, against the live app (real valkey-server, real chDB)."""

from __future__ import annotations

import gzip
import uuid

import orjson
import pytest

from tests.conftest import make_project, wait_for
from weftline.ground.config import Settings, StreamBudget
from weftline.ground.sentry_envelope import serialize_envelope
from weftline.storage import sentry_queries as q


def env_bytes(event: dict | None = None, event_id: str | None = None, extra=()) -> bytes:
    event_id = event_id or uuid.uuid4().hex
    items = []
    if event is not None:
        items.append(({"type": "event"}, orjson.dumps({"event_id": event_id, **event})))
    items.extend(extra)
    return serialize_envelope({"event_id": event_id} if event is not None else {}, items)


def auth(key: str) -> dict[str, str]:
    return {
        "x-sentry-auth": f"Sentry sentry_key={key}, sentry_version=7, sentry_client=test/1",
        "content-type": "application/x-sentry-envelope",
    }


@pytest.fixture
def app(settings, valkey, ch, serve):
    return serve(settings, valkey.url, ch=ch)


def test_accepts_and_answers_id(app, settings, http, ch):
    p = settings.projects[0]
    eid = uuid.uuid4().hex
    body = env_bytes({"message": "hi", "level": "info"}, eid)
    r = http.post(f"{app.url}/api/{p.id}/envelope/", content=body, headers=auth(p.public_key))
    assert r.status_code == 200 and r.json() == {"id": eid}
    # browser style: key in the query, text/plain, gzip, no trailing slash
    eid2 = uuid.uuid4().hex
    r = http.post(
        f"{app.url}/api/{p.id}/envelope?sentry_version=7&sentry_key={p.public_key}"
        "&sentry_client=sentry.javascript.browser%2F11.12.0",
        content=gzip.compress(env_bytes({"message": "b"}, eid2)),
        headers={"content-type": "text/plain;charset=UTF-8", "content-encoding": "gzip"},
    )
    assert r.status_code == 200 and r.json() == {"id": eid2}
    # no event id (e.g. a span container) → {}
    spans = ({"type": "span", "item_count": 0}, b'{"version":2,"items":[]}')
    r = http.post(
        f"{app.url}/api/{p.id}/envelope/",
        content=env_bytes(extra=[spans]),
        headers=auth(p.public_key),
    )
    assert r.status_code == 200 and r.json() == {}
    wait_for(lambda: q.count_errors(ch, p.id) == 2)


def test_auth_answers(app, settings, http):
    p1, p2 = settings.projects
    url = f"{app.url}/api/{p1.id}/envelope/"
    body = env_bytes({"message": "x"})

    def post(headers=None, u=url, content=body):
        return http.post(u, content=content, headers=headers or {})

    r = post()
    assert r.status_code == 401 and r.json()["error"] == "missing_auth"
    assert post(auth("abc")).json()["error"] == "bad_key"
    assert post(auth("abc")).status_code == 401
    r = post(auth("0" * 32))
    assert r.status_code == 403 and r.json()["error"] == "unknown_key"
    r = post(auth(p2.public_key))  # project 2's key on project 1's URL
    assert r.status_code == 403 and r.json()["error"] == "project_mismatch"
    r = post(auth(p1.public_key), u=f"{url}?sentry_key={p1.public_key}")
    assert r.status_code == 401 and r.json()["error"] == "multiple_auth"
    r = post(auth(p1.public_key), u=f"{app.url}/api/abc/envelope/")
    assert r.status_code == 400 and r.json()["error"] == "bad_project_id"
    h = auth(p1.public_key)
    h["x-sentry-auth"] = h["x-sentry-auth"].replace("sentry_version=7", "sentry_version=99")
    assert post(h).status_code == 400
    # browser `tunnel` mode: the envelope header `dsn` authenticates by itself...
    dsn = f"http://{p1.public_key}@h/{p1.id}"
    tunneled = serialize_envelope({"dsn": dsn}, [({"type": "event"}, b'{"message":"t"}')])
    assert post(content=tunneled).status_code == 200
    # ...and must agree with request auth when both are present
    other = serialize_envelope(
        {"dsn": f"http://{p2.public_key}@h/{p2.id}"}, [({"type": "event"}, b"{}")]
    )
    r = post(auth(p1.public_key), content=other)
    assert r.status_code == 400 and r.json()["error"] == "auth_mismatch"


@pytest.mark.parametrize(
    "body, headers, error",
    [
        (b"", {}, "empty_body"),
        (b"not an envelope", {}, "invalid_envelope"),
        (b'{}\n{"type":"event"}\n{not json', {}, "invalid_envelope"),
        (b'{}\n{"type":"event"}\n{}\n{"type":"event"}\n{}', {}, "duplicate_event"),
        (b'{}\n{"type":"span","item_count":2}\n{"version":2,"items":[{}]}', {}, "invalid_envelope"),
        (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, "bad_encoding"),
        (b'{}\n{"type":"integration"}\n{}', {}, "internal_item_type"),
    ],
)
def test_bad_envelopes_are_400(app, settings, http, body, headers, error):
    p = settings.projects[0]
    r = http.post(
        f"{app.url}/api/{p.id}/envelope/",
        content=body,
        headers={**auth(p.public_key), **headers},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"] == error and r.json()["detail"]


def test_size_limits_are_413(tmp_path, valkey, ch, serve, http):
    p = make_project(1)
    settings = Settings(data_dir=tmp_path / "d", projects=[p], max_body_bytes=256 * 1024)
    app = serve(settings, valkey.url, ch=ch)
    url = f"{app.url}/api/{p.id}/envelope/"
    big = b"x" * (300 * 1024)
    r = http.post(url, content=big, headers=auth(p.public_key))
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    bomb = gzip.compress(b"{}\n" + b" " * (21 * 1024 * 1024))  # ~20 KB on the wire
    r = http.post(url, content=bomb, headers={**auth(p.public_key), "content-encoding": "gzip"})
    assert r.status_code == 413 and r.json()["error"] == "decompressed_too_large"
    huge_event = env_bytes({"message": "m" * (1024 * 1024 + 10)})
    r = http.post(
        url,
        content=gzip.compress(huge_event),
        headers={**auth(p.public_key), "content-encoding": "gzip"},
    )
    assert r.status_code == 413 and r.json()["error"] == "item_too_large"
    assert "'event'" in r.json()["detail"]


def test_rate_limit_429_with_sentry_headers_but_client_reports_pass(
    tmp_path, valkey, ch, serve, http
):
    p = make_project(1, rate_limit=0.05)
    settings = Settings(data_dir=tmp_path / "d", projects=[p], batch_max_age_ms=50)
    app = serve(settings, valkey.url, ch=ch)
    url = f"{app.url}/api/{p.id}/envelope/"
    assert (
        http.post(url, content=env_bytes({"message": "1"}), headers=auth(p.public_key)).status_code
        == 200
    )
    r = http.post(
        url,
        content=env_bytes({"message": "2"}),
        headers={**auth(p.public_key), "origin": "http://a"},
    )
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    secs = r.headers["retry-after"]
    assert secs.isdigit() and 1 <= int(secs) <= 20
    limits = r.headers["x-sentry-rate-limits"]
    retry, cats, scope, _reason = limits.split(":")
    assert retry == secs and scope == "project"
    assert {"error", "transaction", "span", "session"} <= set(cats.split(";"))
    assert "internal" not in cats.split(";")
    # the browser can read them
    assert r.headers["access-control-allow-origin"] == "http://a"
    assert "x-sentry-rate-limits" in r.headers["access-control-expose-headers"]
    report = (
        {"type": "client_report"},
        b'{"discarded_events":[{"reason":"ratelimit_backoff","category":"error","quantity":3}]}',
    )
    r = http.post(url, content=env_bytes(extra=[report]), headers=auth(p.public_key))
    assert r.status_code == 200
    wait_for(lambda: q.count_rows(ch, "sentry_client_outcomes", p.id) == 1)


def test_full_buffer_is_429_not_a_silent_drop(tmp_path, valkey, ch, serve, http):
    p = make_project(1)
    settings = Settings(
        data_dir=tmp_path / "d",
        projects=[p],
        backlog_budget=StreamBudget(sentry=2),
        retry_after_seconds=7,
    )
    app = serve(settings, valkey.url, ch=ch, run_workers=False)
    url = f"{app.url}/api/{p.id}/envelope/"
    codes = [
        http.post(url, content=env_bytes({"message": str(n)}), headers=auth(p.public_key))
        for n in range(3)
    ]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].headers["retry-after"] == "7"
    assert codes[2].headers["x-sentry-rate-limits"].startswith("7:default;error;")
    assert codes[2].json()["error"] == "backlog_full"


def test_cors(app, settings, http):
    p = settings.projects[0]
    url = f"{app.url}/api/{p.id}/envelope/?sentry_key={p.public_key}"
    r = http.options(
        url,
        headers={
            "origin": "http://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == "http://shop.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = http.post(
        url, content=env_bytes({"message": "c"}), headers={"origin": "http://shop.example"}
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://shop.example"
    assert "retry-after" in r.headers["access-control-expose-headers"]
    r = http.post(
        url.replace(p.public_key, "f" * 32), content=b"{}", headers={"origin": "http://x"}
    )
    assert r.status_code == 403 and r.headers["access-control-allow-origin"] == "http://x"


def test_store_endpoint_and_unknown_items(app, settings, http, ch):
    p = settings.projects[0]
    eid = uuid.uuid4().hex
    # legacy /store/: one JSON event, NaN literal as old Python clients send it
    body = b'{"event_id":"%s","message":"legacy","extra":{"ratio":NaN}}' % eid.encode()
    headers = {**auth(p.public_key), "content-type": "application/json"}
    r = http.post(f"{app.url}/api/{p.id}/store/", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"id": eid}
    # an item type this version does not know: 200, kept raw, counted
    weird = ({"type": "brand_new_thing"}, b"payload")
    r = http.post(
        f"{app.url}/api/{p.id}/envelope/",
        content=env_bytes({"message": "with extra"}, extra=[weird]),
        headers=auth(p.public_key),
    )
    assert r.status_code == 200
    wait_for(lambda: q.count_errors(ch, p.id) == 2)
    wait_for(lambda: q.count_rows(ch, "sentry_items", p.id, "item_type = 'brand_new_thing'") == 1)
    metrics = http.get(app.url + "/metrics").text
    # the client chose the type: its label is `other` (a bounded set of series)
    assert 'weftline_sentry_items_total{outcome="unknown",type="other"}' in metrics
    assert "brand_new_thing" not in metrics


def test_rejections_are_counted(app, settings, http):
    p = settings.projects[0]
    http.post(f"{app.url}/api/{p.id}/envelope/", content=b"x", headers=auth("0" * 32))
    metrics = http.get(app.url + "/metrics").text
    assert 'weftline_ingest_rejected_requests_total{kind="sentry",reason="unknown_key"}' in metrics
