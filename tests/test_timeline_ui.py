"""The session timeline (API and /ui/ pages in headless Chromium) for agent events and spans."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.test_agent_ingest import post
from weftline.storage.queries import count_agent_events

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "00f067aa0ba902b7a3ce929d0e0e4736"


def seed_spans(ch, project_id: int, start: datetime) -> None:
    """Spans as a receiver would store them: a frontend fetch and its backend server span."""

    def span(trace, sid, parent, name, service, offset_ms, dur_ms, status="unset", sess=""):
        t = start + timedelta(milliseconds=offset_ms)
        return {
            "project_id": project_id,
            "source": "otlp",
            "trace_id": trace,
            "span_id": sid,
            "parent_span_id": parent,
            "name": name,
            "kind": "server",
            "op": "",
            "status_code": status,
            "status_message": "",
            "service_name": service,
            "start_time": t.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "duration_ns": dur_ms * 1_000_000,
            "resource_attributes": {},
            "attributes": {"http.route": "/api/run"},
            "event_times": [],
            "event_names": [],
            "event_attributes": [],
            "link_trace_ids": [],
            "link_span_ids": [],
            "link_attributes": [],
            "session_id": sess,
            "received_at": start.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            "retention_days": 30,
        }

    ch.insert(
        "spans",
        [
            span(TRACE, "a" * 16, "", "GET /api/run", "web", 10, 120, sess="sess-1"),
            span(TRACE, "b" * 16, "a" * 16, "POST /api/run", "api", 20, 90, status="error"),
            span(OTHER_TRACE, "c" * 16, "", "GET /other", "web", 15, 5, sess="sess-2"),
        ],
    )


@pytest.fixture
def timeline_server(settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    seed_spans(ch, p1.id, now)
    events = [
        {
            "type": "visualization_interaction",
            "action": "node_click",
            "node_id": "planner",
            "session_id": "sess-1",
            "ts": (now + timedelta(milliseconds=5)).isoformat(),
        },
        {
            "type": "task_update",
            "task_id": "t1",
            "agent_id": "planner",
            "state": "failed",
            "trace_id": TRACE,
            "error": "boom",
            "ts": (now + timedelta(milliseconds=200)).isoformat(),
        },
        {
            "type": "agent_state",
            "agent_id": "other",
            "status": "idle",
            "session_id": "sess-2",
            "ts": now.isoformat(),
        },
    ]
    assert post(http, srv, p1, events).status_code == 202
    wait_for(lambda: count_agent_events(ch, p1.id) == 3)
    return srv, p1


def test_timeline_api_orders_items_and_gives_reasons(timeline_server, http):
    srv, p1 = timeline_server
    r = http.get(
        f"{srv.url}/api/v1/sessions/sess-1",
        headers={"authorization": f"Bearer {p1.query_token}"},
    )
    assert r.status_code == 200
    t = r.json()
    kinds = [(i["kind"], i["title"].split(":")[0]) for i in t["items"]]
    assert kinds == [
        ("agent", "canvas node click"),
        ("span", "web"),
        ("span", "api"),
        ("agent", "task t1 failed (planner)"),
    ]
    reasons = [i["reason"] for i in t["items"]]
    assert reasons[0] == "session_id field"
    assert reasons[1] == f"trace {TRACE}: span carries the session id"
    assert reasons[3] == f"trace {TRACE}"
    assert [i["severity"] for i in t["items"]] == ["info", "info", "error", "error"]
    assert all("other" not in i["title"] for i in t["items"])  # nothing from sess-2
    assert http.get(f"{srv.url}/api/v1/sessions/sess-1").status_code == 401


SENTRY_APP = """
import sys
import sentry_sdk

def send_sentry_error():
    try:
        {}["missing_key"]
    except KeyError as e:
        sentry_sdk.capture_exception(e)

sentry_sdk.init(dsn=sys.argv[1], default_integrations=False)
sentry_sdk.set_tag("openReplaySession.id", "sess-1")
send_sentry_error()
sentry_sdk.flush(timeout=10)
"""


def send_sentry_error(dsn: str) -> None:
    """The real sentry-sdk, in its own process, reports an error tagged with the session."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", SENTRY_APP, dsn], check=True, timeout=60)


@pytest.mark.skipif(not shutil.which("chromium"), reason="Chromium is not installed")
def test_ui_pages_in_chromium(timeline_server, ch, tmp_path):
    from playwright.sync_api import sync_playwright

    srv, p1 = timeline_server
    shots = Path(os.environ.get("WEFTLINE_SCREENSHOTS") or tmp_path)  # to look at them
    shots.mkdir(parents=True, exist_ok=True)
    host = srv.url.split("//")[1]
    send_sentry_error(f"http://{p1.public_key}@{host}/{p1.id}")
    wait_for(lambda: ch.query(f"SELECT count() AS n FROM {ch.database}.sentry_errors")[0]["n"])
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto(f"{srv.url}/ui/sessions/sess-1")
        assert page.url.endswith("/ui/login")  # nothing visible without the token
        page.fill("#token", "wrong")
        page.click("#login")
        assert page.locator("#login-error").is_visible()
        page.fill("#token", p1.query_token)
        page.click("#login")
        page.wait_for_selector("#other-sessions")
        assert page.locator("#other-sessions a", has_text="sess-1").count() == 1
        page.screenshot(path=str(shots / "sessions.png"))

        page.click("#other-sessions a >> text=sess-1")
        page.wait_for_selector("#timeline")
        assert page.locator("#timeline li").count() == 5
        assert page.locator("#timeline li.error").count() == 3
        assert "KeyError" in page.text_content("#timeline li.kind-error")
        page.click(f"#trace-{TRACE} summary")
        assert page.locator(f"#trace-{TRACE} .bar").count() == 2
        assert page.locator(f"#trace-{TRACE} .bar.error").count() == 1
        wait_for(lambda: page.text_content("#live-state") == "on", timeout=10)

        # Live tail: an event for this session appears without a reload.
        import httpx

        httpx.post(
            f"{srv.url}/api/v1/events",
            headers={"x-weftline-key": p1.public_key},
            json=[
                {
                    "type": "agent_state",
                    "agent_id": "live-agent",
                    "status": "busy",
                    "session_id": "sess-1",
                }
            ],
        )
        page.wait_for_selector("#timeline li.live", timeout=10_000)
        assert "live-agent" in page.text_content("#timeline li.live")
        send_sentry_error(f"http://{p1.public_key}@{host}/{p1.id}")  # errors arrive live too
        page.wait_for_selector("#timeline li.live.kind-error", timeout=10_000)
        assert "KeyError" in page.text_content("#timeline li.live.kind-error")
        page.screenshot(path=str(shots / "session.png"), full_page=True)

        page.click("#timeline li.kind-error .title a")  # the Sentry error → its issue page
        page.wait_for_selector("#stacktrace")
        assert "KeyError" in page.text_content("#issue-title")
        assert page.locator("#stacktrace .frame").count() >= 1
        assert "send_sentry_error" in page.text_content("#stacktrace")
        assert page.locator("#issue-sessions a", has_text="sess-1").count() == 1
        page.goto(f"{srv.url}/ui/issues")
        assert page.locator("#issues a", has_text="KeyError").count() == 1

        page.goto(f"{srv.url}/ui/traces/{TRACE}")
        page.wait_for_selector("#waterfall")
        assert page.locator("#waterfall .span-row").count() == 2
        assert page.locator("#waterfall .bar.error").count() == 1
        assert "session sess-1" in page.text_content("main")
        # Span detail: attributes, status, resource; expanded from its bar.
        page.click("#waterfall details.span:has(b.err) summary")
        detail = page.text_content("#waterfall details.span[open] .span-detail")
        assert "http.route" in detail and "/api/run" in detail and "error" in detail
        page.screenshot(path=str(shots / "trace.png"), full_page=True)

        # The traces list, with the API's filters.
        page.goto(f"{srv.url}/ui/traces")
        assert page.locator("#traces tbody tr").count() == 2
        page.goto(f"{srv.url}/ui/traces?status=error")
        assert page.locator("#traces tbody tr").count() == 1
        assert TRACE[:16] in page.text_content("#traces")
        page.goto(f"{srv.url}/ui/traces?session_id=sess-2")
        assert OTHER_TRACE[:16] in page.text_content("#traces")
        page.goto(f"{srv.url}/ui/traces?min_duration_ms=abc")
        assert "min_duration_ms" in page.text_content(".flash")
        page.goto(f"{srv.url}/ui/traces")
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        page.screenshot(path=str(shots / "traces.png"), full_page=True)
        # A trace id nothing is stored for: a page that says so, not a bare text.
        r = page.goto(f"{srv.url}/ui/traces/{'e' * 32}")
        assert r.status == 404 and page.locator("#no-trace").is_visible()
        assert errors and "404" in errors.pop()  # that page's own status, nothing else
        browser.close()
    assert (shots / "session.png").stat().st_size > 10_000
    assert errors == []
    time.sleep(0)


def test_cli_prints_session_trace_and_issues(timeline_server):
    from tests.conftest import run_weftline

    srv, p1 = timeline_server
    common = ("--url", srv.url, f"--token={p1.query_token}")
    out = run_weftline("session", "sess-1", *common, "--color", "never")
    lines = out.splitlines()
    assert lines[0] == "session sess-1: 4 items, 1 traces"
    assert f"trace {TRACE}  (span carries the session id)" in lines[1]
    body = [ln for ln in lines if ln[:2].isdigit()]
    assert [ln.split()[1] for ln in body] == ["AGT", "SPN", "SPN", "AGT"]
    assert "canvas node click: planner" in body[0]
    colored = run_weftline("session", "sess-1", *common, "--color", "always")
    assert "\033[31m" in colored  # the failed span and task are red
    out = run_weftline("trace", TRACE, *common, "--color", "never")
    assert out.splitlines()[0].startswith(f"trace {TRACE}: 2 spans")
    assert "  session sess-1  (span attribute session.id)" in out
    assert "  api: POST /api/run" in out  # the child is indented under its parent
    assert run_weftline("issues", *common).splitlines()[-1] == "0 issues"  # under its header
