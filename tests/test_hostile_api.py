"""The read side against hostile requests (issue #13): out-of-range read parameters,
unbounded bodies on API routes, a heartbeat from the year 9999, session ids with `/`."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import orjson
import pytest

from tests.conftest import wait_for
from tests.test_agent_ingest import post, state
from weftline.storage.keys import in_stream
from weftline.storage.queries import count_agent_events


@pytest.fixture
def app(settings, valkey, ch, serve):
    return serve(settings, valkey.url, ch=ch)


def bearer(p) -> dict[str, str]:
    return {"authorization": f"Bearer {p.query_token}"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/agents/a1/events",
        "/api/v1/issues",
        "/api/v1/sessions",
        "/api/v1/traces",
        "/api/v1/logs",
    ],
)
@pytest.mark.parametrize("value", ["9999-12-31", "0001-01-01", "99999999999999999", "-5"])
def test_out_of_range_times_are_400_with_a_message(app, settings, http, path, value):
    p = settings.projects[0]
    r = http.get(f"{app.url}{path}?from={value}", headers=bearer(p))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_parameter"
    assert "from must be" in body["detail"]
    assert "DB::Exception" not in r.text and "Decimal" not in r.text


def test_storage_text_never_reaches_the_caller(app, settings, http, ch):
    ch.command(f"RENAME TABLE {ch.database}.sentry_errors TO {ch.database}.sentry_errors_away")
    try:
        r = http.get(f"{app.url}/api/v1/issues", headers=bearer(settings.projects[0]))
    finally:
        ch.command(f"RENAME TABLE {ch.database}.sentry_errors_away TO {ch.database}.sentry_errors")
    assert r.status_code == 503
    assert r.json() == {
        "error": "storage_unavailable",
        "detail": "storage is unavailable; retry later",
    }


def test_api_bodies_are_bounded(app, settings, http):
    p = settings.projects[0]
    url = f"{app.url}/api/v1/issues/{'0' * 32}"
    # declared too large: refused before a byte is read (a raw socket: clients will not
    # send a length they do not mean)
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(
            f"PATCH /api/v1/issues/{'0' * 32} HTTP/1.1\r\nhost: x\r\n"
            f"authorization: Bearer {p.query_token}\r\n"
            f"content-length: {300 * 1024 * 1024}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    # chunked, no length: cut at the bound (1 MiB), not read to its end

    def chunks():
        for _ in range(300):
            yield b" " * (1024 * 1024)

    started = time.monotonic()
    r = http.patch(url, headers=bearer(p), content=chunks())
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert time.monotonic() - started < 5
    # a small body still reaches the route
    r = http.patch(url, headers=bearer(p), json={"status": "resolved"})
    assert r.status_code == 404  # no such issue: the route ran
    # the UI's login form too
    r = http.post(
        f"{app.url}/ui/login",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413


def test_heartbeat_from_the_future_does_not_pin_the_state(app, settings, http, vk, ch):
    """A heartbeat in 9999 counts as its arrival + a minute at most: a state sent after
    that minute replaces it. (The year-9999 one is written to the stream as received two
    minutes ago, so the test does not wait for the minute.)"""
    p = settings.projects[0]
    far = orjson.dumps([state("pinned", "busy", heartbeat="9999-01-01T00:00:00Z")])
    received = int(time.time() * 1000) - 120_000
    vk.xadd(in_stream("agent"), {"p": far, "project": str(p.id), "received_at": str(received)})
    wait_for(lambda: count_agent_events(ch, p.id) == 1)
    later = state("pinned", "idle", heartbeat=datetime.now(UTC).isoformat())
    assert post(http, app, p, [later]).status_code == 202
    wait_for(lambda: count_agent_events(ch, p.id) == 2)

    def pinned():
        agents = http.get(f"{app.url}/api/v1/agents", headers=bearer(p)).json()["agents"]
        return [a for a in agents if a["name"] == "pinned"]

    [agent] = wait_for(lambda: [a for a in pinned() if a["status"] == "idle"])
    assert agent["last_heartbeat"] < "2100"


def test_session_ids_with_a_slash_work_end_to_end(app, settings, http, ch):
    p = settings.projects[0]
    ev = state("s1", "busy", session_id="tenant/42")
    assert post(http, app, p, [ev]).status_code == 202
    wait_for(lambda: count_agent_events(ch, p.id) == 1)
    r = wait_for(
        lambda: (
            resp
            if (
                resp := http.get(f"{app.url}/api/v1/sessions/tenant%2F42", headers=bearer(p))
            ).status_code
            == 200
            else None
        )
    )
    assert r.json()["session_id"] == "tenant/42"
    assert any(i.get("agent_id") == "s1" or "s1" in str(i) for i in r.json()["items"])


def test_cookie_authenticates_reads_and_the_uis_own_forms_only(app, settings, http):
    p = settings.projects[0]
    cookie = {"cookie": f"weftline_token={p.query_token}"}
    gid = "0" * 32
    # reads: the UI's scripts use the cookie
    assert http.get(f"{app.url}/api/v1/issues", headers=cookie).status_code == 200
    # API writes: the Bearer token only, whatever page sent them
    other_port = {"origin": "http://127.0.0.1:1", **cookie}
    r = http.patch(
        f"{app.url}/api/v1/issues/{gid}", headers=other_port, json={"status": "resolved"}
    )
    assert r.status_code == 401
    r = http.post(
        f"{app.url}/api/v1/sourcemaps?release=1",
        headers=other_port,
        files={"file": ("app.js.map", b"{}", "application/json")},
    )
    assert r.status_code == 401
    r = http.patch(f"{app.url}/api/v1/issues/{gid}", headers=bearer(p), json={"status": "resolved"})
    assert r.status_code == 404  # authenticated; there is no such issue
    # the UI's own forms: same origin only
    form = {"content-type": "application/x-www-form-urlencoded"}
    url = f"{app.url}/ui/issues/{gid}/status"
    r = http.post(url, headers={**other_port, **form}, content=b"status=resolved")
    assert r.status_code == 403
    own = {"origin": app.url, **cookie, **form}
    r = http.post(url, headers=own, content=b"status=resolved")
    assert r.status_code == 404  # past the check: no such issue
    r = http.post(
        f"{app.url}/ui/login",
        headers={"origin": "http://evil.example", **form},
        content=f"token={p.query_token}".encode(),
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers
