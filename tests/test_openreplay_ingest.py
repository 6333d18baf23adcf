"""OpenReplay ingest through the real app: real Valkey, real chDB, the tracker's own
bytes (reference §11) posted the way the tracker posts them."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import wait_for
from weftline.ingest.openreplay_token import SessionClaims, TokenSigner
from weftline.storage import replay_queries
from weftline.storage.keys import dlq_stream, in_stream

VECTORS = Path(__file__).parent / "data" / "openreplay"
SECRET = "s" * 40
ORIGIN = "http://127.0.0.1:9999"


def vector(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


@pytest.fixture
def app(settings, valkey, ch, serve):
    settings.openreplay.token_secret = SECRET
    settings.openreplay.session_inactivity_seconds = 2
    settings.openreplay.ender_interval_seconds = 0.3
    return serve(settings, valkey.url, ch=ch)


def start(http, app, project, **extra):
    body = {
        "userUUID": None,
        "projectKey": project.public_key,
        "revID": "",
        "trackerVersion": "19.0.1",
        "isSnippet": False,
        "timestamp": int(time.time() * 1000) - 25,
        "doNotRecord": False,
        "bufferDiff": 0,
        "userID": "user-at-start",
        "deviceMemory": 16384,
        "jsHeapSizeLimit": 4395630592,
        "timezone": "UTC+00:00",
        "assistOnly": False,
        "width": 1280,
        "height": 720,
        "referrer": "",
        **extra,
    }
    return http.post(
        f"{app.url}/ingest/v1/web/start",
        content=orjson.dumps(body),
        headers={
            "content-type": "application/json",
            "origin": ORIGIN,
            "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
            "Gecko) Chrome/139.0.0.0 Safari/537.36",
        },
    )


def post_batch(http, app, token, body, data_type="player", query="0_1_100_kyes", gz=False):
    headers = {"authorization": f"Bearer {token}", "datatype": data_type, "origin": ORIGIN}
    if gz:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    return http.post(f"{app.url}/ingest/v1/web/i?batch={query}", content=body, headers=headers)


def api(http, app, project, path, **params):
    r = http.get(
        f"{app.url}/api/v1/{path}",
        params=params,
        headers={"authorization": f"Bearer {project.query_token}"},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_start_answers_what_the_tracker_requires(http, app, settings):
    project = settings.projects[0]
    r = start(http, app, project)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert isinstance(doc["token"], str) and "_$_" not in doc["token"]
    assert isinstance(doc["sessionID"], str) and doc["sessionID"].isdigit()
    assert isinstance(doc["userUUID"], str) and isinstance(doc["delay"], int)
    assert 0 <= doc["delay"] < 5000  # the client clock above was 25 ms behind
    assert doc["projectID"] == str(project.id) and doc["protocolVersion"] == 2
    assert not doc.get("assistOnly")
    assert r.headers["access-control-allow-origin"] == ORIGIN


def test_preflights_allow_what_chromium_asks_for(http, app):
    for path, req_headers in [
        ("start", "content-type"),
        ("i", "authorization,datatype,content-encoding"),
        ("tags", "authorization"),
    ]:
        r = http.options(
            f"{app.url}/ingest/v1/web/{path}",
            headers={
                "origin": ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": req_headers,
            },
        )
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] in (ORIGIN, "*")
        allowed = r.headers["access-control-allow-headers"].lower()
        assert all(h in allowed for h in req_headers.split(","))
    tags = http.get(f"{app.url}/ingest/v1/web/tags", headers={"origin": ORIGIN})
    assert tags.json() == {"tags": []} and tags.headers["access-control-allow-origin"]
    for old in ("not-started", "feature-flags"):
        assert http.post(f"{app.url}/ingest/v1/web/{old}", content=b"{}").status_code == 200


def test_continue_restart_and_stale_tokens(http, app, settings):
    project = settings.projects[0]
    first = start(http, app, project).json()
    again = start(http, app, project, token=first["token"], userUUID=first["userUUID"]).json()
    assert again["sessionID"] == first["sessionID"]
    assert again["startTimestamp"] == first["startTimestamp"]
    assert again["userUUID"] == first["userUUID"]
    forged = first["token"][:-2] + ("AA" if not first["token"].endswith("AA") else "BB")
    assert start(http, app, project, token=forged).json()["sessionID"] != first["sessionID"]
    other = settings.projects[1]
    assert start(http, app, other, token=first["token"]).json()["sessionID"] != first["sessionID"]

    signer = TokenSigner(SECRET)
    now = int(time.time() * 1000)
    stale = signer.issue(SessionClaims("123456789", project.id, now - 10_000, now - 1, 0))
    r = post_batch(http, app, stale, vector("v2_analytics"), "analytics")
    assert r.status_code == 401 and r.json()["error"] == "token_expired"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    # The tracker answers a 401 with a new start carrying the old token: a new session.
    fresh = start(http, app, project, token=stale).json()
    assert fresh["sessionID"] != "123456789"
    assert post_batch(http, app, fresh["token"], vector("v2_analytics")).status_code == 200
    for bad in (None, "nonsense", forged):
        headers = {"authorization": f"Bearer {bad}"} if bad else {}
        r = http.post(f"{app.url}/ingest/v1/web/i", content=vector("v2_analytics"), headers=headers)
        assert r.status_code == 401


def test_bad_batches_get_clear_4xx_and_are_counted(http, app, settings):
    token = start(http, app, settings.projects[0]).json()["token"]
    assert post_batch(http, app, token, b"\x00\x01\x02").json()["error"] == "bad_batch"
    r = post_batch(http, app, token, b"")
    assert r.status_code == 400
    r = http.post(
        f"{app.url}/ingest/v1/web/i?batch=x&split=5",
        content=vector("v2_visual_split"),
        headers={"authorization": f"Bearer {token}", "datatype": "visual"},
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_split"
    bomb = gzip.compress(b"\x51" + b"\x00" * (settings.openreplay.max_batch_bytes + 10))
    r = http.post(
        f"{app.url}/ingest/v1/web/i",
        content=bomb,
        headers={"authorization": f"Bearer {token}", "content-encoding": "gzip"},
    )
    assert r.status_code == 413 and r.json()["error"] == "decompressed_too_large"
    assert start(http, app, settings.projects[0], projectKey="0" * 32).status_code == 403
    r = http.post(f"{app.url}/ingest/v1/web/start", content=b"{nope")
    assert r.status_code == 400
    r = http.get(f"{app.url}/ingest/v1/web/whatever", headers={"origin": ORIGIN})
    assert r.status_code == 404 and r.headers["access-control-allow-origin"] == ORIGIN
    metrics = http.get(f"{app.url}/metrics").text
    for reason in ("bad_batch", "bad_split", "decompressed_too_large", "unknown_key"):
        assert f'kind="replay",reason="{reason}"' in metrics


def test_tracker_batches_become_a_session_timeline(http, app, settings, ch, vk):
    project = settings.projects[0]
    s = start(http, app, project).json()
    sid, token = s["sessionID"], s["token"]
    visual = vector("v2_visual_split")
    assert (
        post_batch(
            http, app, token, visual, "visual", "0_1_1291_kyes&split=1011", gz=True
        ).status_code
        == 200
    )
    assert post_batch(http, app, token, vector("v2_devtools"), "devtools").status_code == 200
    analytics = vector("v2_analytics")
    assert post_batch(http, app, token, analytics, "analytics").status_code == 200
    # The tracker resends identical bytes when a response got lost: stored once.
    assert post_batch(http, app, token, analytics, "analytics").status_code == 200
    assert post_batch(http, app, token, vector("v1_player_whole_page")).status_code == 200

    def stored():
        return replay_queries.count_replay(ch, "replay_batches", project.id, sid) == 4

    wait_for(stored, timeout=20)
    wait_for(lambda: vk.xlen(in_stream("replay")) == 0)
    detail = api(http, app, project, f"sessions/{sid}")
    sess, items = detail["session"], detail["timeline"]
    assert sess["browser"] == "Chrome" and sess["os"] == "Linux"
    assert sess["device_type"] == "desktop" and sess["tracker_version"] == "19.0.1"
    assert sess["user_id"] == "user-42"  # setUserID after start wins over start's userID
    assert sess["metadata"] == {"plan": "enterprise"}
    kinds = {i["kind"] for i in items}
    assert {
        "page",
        "click",
        "network",
        "console",
        "exception",
        "custom",
        "issue",
        "incident",
        "performance",
        "web_vital",
        "resource",
        "viewport",
        "tab",
        "user_id",
        "metadata",
        "anonymous_id",
    } <= kinds
    assert [i["ts"] for i in items] == sorted(i["ts"] for i in items)
    click = next(i for i in items if i["kind"] == "click")
    assert (click["name"], click["selector"], click["x"], click["y"]) == (
        "Click me",
        "#btn",
        258,
        1250,
    )
    net = [i for i in items if i["kind"] == "network"]
    assert net and all(n["url"].endswith("/api/data") for n in net)
    n = net[0]
    assert (n["method"], n["status"], n["trace_id"], n["span_id"]) == (
        "GET",
        200,
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
    )
    assert n["request_headers"]["traceparent"].startswith("00-0af76519")
    assert n["request_headers"]["X-OpenReplay-SessionToken"] == "[Filtered]"
    assert n["response_headers"]["traceresponse"] == "00-abc-def-01"
    assert n["response_body"] == '{"ok":true}'
    excs = [(i["name"], i["value"]) for i in items if i["kind"] == "exception"]
    assert ("TypeError", "handled boom") in excs and ("Error", "uncaught boom") in excs
    stack = next(i for i in items if i["kind"] == "exception")["stack"]
    assert stack[0]["functionName"] == "eval"
    customs = {i["name"]: i.get("value") for i in items if i["kind"] == "custom"}
    assert customs["checkout"] == '{"amount":42,"currency":"EUR"}'
    vitals = {i["name"] for i in items if i["kind"] == "web_vital"}
    assert {"TTFB", "LCP"} <= vitals
    page = next(i for i in items if i["kind"] == "page")
    assert page["name"] == "OR e2e" and page["url"].startswith("http://127.0.0.1:8765/")
    # analytics was posted twice and counted once
    assert sum(1 for i in items if i["kind"] == "custom" and i["name"] == "checkout") == 2
    assert sess["errors_count"] == 4  # 2 exceptions x (the v2 analytics + the v1 page)

    listed = api(http, app, project, "sessions", project_id=project.id)["sessions"]
    assert [x["session_id"] for x in listed] == [sid]
    assert api(http, app, project, "sessions", user_id="nobody")["sessions"] == []
    assert len(api(http, app, project, "sessions", user_id="user-42")["sessions"]) == 1
    other = settings.projects[1]
    r = http.get(
        f"{app.url}/api/v1/sessions/{sid}", headers={"authorization": f"Bearer {other.query_token}"}
    )
    assert r.status_code == 404

    # Idle for session_inactivity_seconds: the ender closes it with its totals.
    def ended():
        d = api(http, app, project, f"sessions/{sid}")["session"]
        return d if d["ended"] else None

    closed = wait_for(ended, timeout=20)
    assert closed["events_count"] == len(items) and closed["pages_count"] >= 2

    # The vectors were captured before this session started, so its duration is what
    # its own clock says: last event (or the start itself) minus start.
    def ms(iso):
        from datetime import datetime

        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)

    assert closed["duration_ms"] == ms(closed["last_event_at"]) - ms(closed["started_at"])


def test_tracker_event_with_an_agent_type_lands_in_agent_events(http, app, settings, ch):
    from weftline.enrich.openreplay_decode import encode_message

    project = settings.projects[0]
    s = start(http, app, project).json()
    now = int(time.time() * 1000)
    payload = orjson.dumps({"action": "node_click", "node_id": "n1", "agent_id": "a1"}).decode()
    body = (
        encode_message(81, (5, 0, 3, now, "http://app/"))
        + encode_message(0, (now,))
        + encode_message(118, ("tab1",))
        + encode_message(27, ("visualization_interaction", payload))
        + encode_message(27, ("visualization_interaction", "not json"))
    )
    assert post_batch(http, app, s["token"], body, "analytics").status_code == 200
    rows = wait_for(
        lambda: ch.query(
            f"SELECT session_id, action, node_id FROM {ch.database}.agent_events FINAL"
        )
    )
    assert rows == [{"session_id": s["sessionID"], "action": "node_click", "node_id": "n1"}]


def test_poison_batch_goes_to_the_dlq_and_the_stream_moves_on(http, app, settings, vk, ch):
    project = settings.projects[0]
    s = start(http, app, project).json()
    # Passes the edge's cheap check (starts with 0x51), fails the full decode.
    poison = vector("v2_analytics")[:200]
    assert post_batch(http, app, s["token"], poison, "analytics").status_code == 200
    assert post_batch(http, app, s["token"], vector("v2_devtools"), "devtools").status_code == 200
    dead = wait_for(lambda: vk.xrange(dlq_stream("replay")))
    assert b"undecodable tracker batch" in dead[0][1][b"reason"]
    wait_for(
        lambda: replay_queries.count_replay(ch, "replay_batches", project.id, s["sessionID"]) == 1
    )
    # Rows become visible a moment before the entries are acknowledged and trimmed.
    wait_for(lambda: vk.xlen(in_stream("replay")) == 0)


def test_redelivered_entries_are_stored_once(settings, ch, valkey):
    import asyncio

    import redis.asyncio as aioredis

    from weftline.enrich.openreplay import OpenReplayHandler
    from weftline.enrich.stream_consumer import Entry

    fields = {
        b"t": b"batch",
        b"p": vector("v1_player_whole_page"),
        b"project": b"1",
        b"received_at": str(int(time.time() * 1000)).encode(),
        b"sid": b"4242",
        b"started_at": b"1795627273000",
        b"delay": b"0",
        b"dt": b"player",
    }
    start_fields = {**fields, b"t": b"start", b"p": b'{"userID":"u1","trackerVersion":"19.0.1"}'}

    async def run():
        client = aioredis.Redis.from_url(valkey.url)
        h = OpenReplayHandler(ch, client, lambda _: 30, settings.openreplay)
        # The same entries delivered three times, in batches with different tokens.
        for n in range(3):
            rows = h.decode(Entry("1-0", start_fields)) + h.decode(Entry("2-0", fields))
            await h.store(rows, f"replay:{n}")
        await client.aclose()
        return rows

    rows = asyncio.run(run())
    events = sum(1 for t, _ in rows if t == "replay_events")
    assert events > 20
    assert replay_queries.count_replay(ch, "replay_events", 1, "4242") == events
    assert replay_queries.count_replay(ch, "replay_batches", 1, "4242") == 1
    assert replay_queries.count_replay(ch, "replay_sessions", 1, "4242") == 1
    got = replay_queries.get_session(ch, 1, "4242")
    assert got["events_count"] == events and got["errors_count"] == 2
