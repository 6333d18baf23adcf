"""End to end: one app page in headless Chromium with the real OpenReplay tracker, the
real `@sentry/browser` and the OpenTelemetry web SDK (fetch instrumentation), calling a
small Python backend instrumented with the OTel SDK and `sentry-sdk`, all sending to
Weftline. The session's timeline must hold every signal of that session, each linked
for the right reason, and nothing of a second session run alongside it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import wait_for, weftline_env
from weftline.embedded import free_port
from weftline.enrich import links

PAGE_DIR = Path(__file__).parent / "browser" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed"),
    pytest.mark.timeout(150),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    installed = PAGE_DIR / "node_modules"
    if not all((installed / p).exists() for p in (".bin/esbuild", "@xyflow/react")):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=PAGE_DIR, check=True, timeout=300
        )
    out = tmp_path_factory.mktemp("e2e") / "bundle.js"
    subprocess.run(
        [
            str(PAGE_DIR / "node_modules" / ".bin" / "esbuild"),
            "page.js",
            "--bundle",
            "--format=iife",
            "--loader:.css=text",
            "--define:process.env.NODE_ENV='production'",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        cwd=PAGE_DIR,
        check=True,
        timeout=120,
    )
    return out.read_bytes()


@pytest.fixture
def site(bundle: bytes) -> Iterator[str]:
    """The app's own origin: another port than Weftline and the backend, so every call
    the page makes is cross-origin, as in production."""
    page = (PAGE_DIR / "page.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            body, ctype = {
                "/": (page, "text/html; charset=utf-8"),
                "/bundle.js": (bundle, "text/javascript"),
            }.get(path, (b"not found", "text/plain"))
            self.send_response(200 if body != b"not found" else 404)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def start_backend(weftline: str, key: str, dsn: str) -> tuple[subprocess.Popen[bytes], str]:
    """The app's backend in its own process (sentry-sdk and the OTel SDK are global)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PAGE_DIR / "backend.py"), str(port), weftline, key, dsn],
        env=weftline_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=30, interval=0.1)
    return proc, url


@dataclass
class Run:
    """What one session did, as the page and the backend reported it."""

    label: str
    session_id: str
    trace_id: str
    backend_event_id: str
    browser_event_id: str
    problems: list[str]


def open_session(
    browser: Any, site: str, query: dict[str, str], label: str, clock_offset_s: float = 0
) -> Any:
    context = browser.new_context()  # its own storage: its own tracker session
    if clock_offset_s:  # the device's clock is off: Date, performance and timers
        context.clock.install(time=time.time() + clock_offset_s)
    page = context.new_page()
    # Anything the page complains about, except the error thrown on purpose; HTTP
    # failures are judged from the responses below (the checkout's 500 is expected).
    page.problems = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda m: (
            page.problems.append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning")
            and "price is not a number" not in m.text
            and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    # The tracker cancels the body of each answered batch, which Chromium reports as a
    # failed request after the response: only requests never answered count.
    page.answered = set()  # type: ignore[attr-defined]
    page.failed = []  # type: ignore[attr-defined]
    page.on(
        "response",
        lambda r: (
            page.answered.add(r.url)
            if r.status < 400 or "/api/checkout" in r.url
            else page.problems.append(f"{r.status} {r.url}")
        ),
    )
    page.on("requestfailed", lambda r: page.failed.append((r.url, r.failure)))
    page.goto(f"{site}/?{urlencode({**query, 'label': label})}")
    page.wait_for_function("window.started !== undefined", timeout=20_000)
    started = page.evaluate("window.started")
    assert started["success"], started
    return page


def finish(page: Any, label: str) -> Run:
    assert page.evaluate("window.flushAll()") is True  # Sentry's queue drained
    checkout = page.evaluate("window.checkoutResult")
    assert checkout["status"] == 500, checkout
    sent = page.evaluate("window.sentEvents")
    browser_errors = [e for e in sent if e["value"] == f"price is not a number in cart {label}"]
    assert len(browser_errors) == 1, sent
    sid = page.evaluate("window.tracker.getSessionID()")
    run = Run(
        label=label,
        session_id=sid,
        trace_id=checkout["body"]["trace_id"],
        backend_event_id=checkout["body"]["event_id"],
        browser_event_id=browser_errors[0]["id"],
        problems=page.problems + [f"{u} {f}" for u, f in page.failed if u not in page.answered],
    )
    page.context.close()
    return run


def act(pages: list[Any]) -> None:
    """Click the canvas node, the checkout button and the crash button on every page."""
    for selector, done in (
        (".react-flow__node[data-id^=planner]", "window.canvasPosted === 202"),
        ("#checkout", "window.checkoutResult !== undefined"),
        ("#crash", "window.sentEvents.length > 0"),
    ):
        for page in pages:
            page.click(selector)
        for page in pages:
            page.wait_for_function(done, timeout=15_000)


def api(http: httpx.Client, base: str, token: str, path: str) -> Any:
    r = http.get(f"{base}/api/v1/{path}", headers={"authorization": f"Bearer {token}"})
    return r.json() if r.status_code == 200 else None


def complete(doc: dict[str, Any] | None, run: Run) -> bool:
    """Every signal of the session has landed and been correlated."""
    if not doc:
        return False
    items = doc["items"]
    kinds = [(i["kind"], i["source"]) for i in items]
    spans = [i for i in items if i["kind"] == "span"]
    return (
        kinds.count(("click", "replay")) >= 3
        and ("agent", "agent") in kinds
        and any(i["kind"] == "network" and "/api/checkout" in i["title"] for i in items)
        and len(spans) >= 4
        and ("error", "replay+sentry") in kinds
        and any(i["ref"].get("event_id") == run.backend_event_id for i in items)
    )


def test_session_timeline_correlates_every_signal(settings, valkey, ch, serve, http, site) -> None:
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    settings.openreplay.token_secret = "e" * 40
    app = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    dsn = f"http://{project.public_key}@127.0.0.1:{app.port}/{project.id}"
    backend, backend_url = start_backend(app.url, project.public_key, dsn)
    query = {"weftline": app.url, "key": project.public_key, "dsn": dsn, "backend": backend_url}
    timings: dict[str, float] = {"setup": time.monotonic() - t0}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                a = open_session(browser, site, query, "A")
                b = open_session(browser, site, query, "B")
                act([a, b])  # interleaved: both sessions' signals in flight together
                run_a, run_b = finish(a, "A"), finish(b, "B")
            finally:
                browser.close()
        timings["browser"] = time.monotonic() - t0 - timings["setup"]
    finally:
        backend.terminate()
        backend.wait(10)
    assert run_a.session_id != run_b.session_id
    assert run_a.trace_id != run_b.trace_id
    assert run_a.problems == [] and run_b.problems == []

    token = project.query_token
    docs = {}
    for run in (run_a, run_b):
        docs[run.label] = wait_for(
            lambda run=run: (
                (d := api(http, app.url, token, f"sessions/{run.session_id}"))
                and complete(d, run)
                and d
            ),
            # The tracker sends its last batch on its own schedule (seen arriving up to a
            # minute after the page's actions in CI); what is asserted does not change.
            timeout=120,
            interval=0.3,
        )
    timings["correlated"] = time.monotonic() - t0 - timings["setup"] - timings["browser"]

    for run, other in ((run_a, run_b), (run_b, run_a)):
        check_timeline(docs[run.label], run, backend_url)
        check_isolation(docs[run.label], run, other)

    # The trace names the session that caused it, and only that one.
    trace_reasons = {links.REASON_SPAN, links.REASON_TRACEPARENT}
    for run in (run_a, run_b):
        tr = api(http, app.url, token, f"traces/{run.trace_id}")
        assert [s["session_id"] for s in tr["sessions"]] == [run.session_id]
        assert tr["sessions"][0]["reason"] in trace_reasons
        assert run.backend_event_id in tr["error_event_ids"]
        assert tr["services"] == ["checkout-api", "web-frontend"]

    # Both sessions hit the same two bugs: each issue lists both, for its own reason.
    items_a = docs["A"]["items"]
    browser_err = next(i for i in items_a if i["source"] == "replay+sentry")
    backend_err = next(i for i in items_a if i["ref"].get("event_id") == run_a.backend_event_id)
    for err, reason in (
        # Tagged browser events name the session (and tie in the SDK's trace).
        (browser_err, {links.REASON_SENTRY_TAG, links.REASON_SENTRY_TRACE}),
        # The backend knows no session: each is reached through its request's trace.
        (backend_err, trace_reasons),
    ):
        issue = api(http, app.url, token, f"issues/{err['ref']['group_id']}")
        sessions = {s["session_id"]: s["reason"] for s in issue["sessions"]}
        assert set(sessions) == {run_a.session_id, run_b.session_id}, issue["sessions"]
        assert set(sessions.values()) <= reason, sessions
    assert browser_err["ref"]["group_id"] != backend_err["ref"]["group_id"]

    # The tracker shifts its clock by the `delay` Weftline measured at session start
    # (server time minus the client's start timestamp, so latency included); the other
    # browser SDKs report raw client time. Measured here, not asserted: see the report.
    shift: dict[str, float] = {}
    for run in (run_a, run_b):
        items = docs[run.label]["items"]
        net = next(i for i in items if i["kind"] == "network" and "/api/checkout" in i["title"])
        span = next(i for i in items if i["title"].startswith("web-frontend"))
        shift[run.label] = iso_ms(net["ts"]) - iso_ms(span["ts"])
    print(f"e2e timings (s): { {k: round(v, 2) for k, v in timings.items()} }")
    print(f"e2e tracker clock shift vs the OTel fetch span (ms): {shift}")


def iso_ms(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000


def check_timeline(doc: dict[str, Any], run: Run, backend_url: str) -> None:
    items = doc["items"]
    assert [i["ts"] for i in items] == sorted(i["ts"] for i in items)
    for i in items:
        assert set(i) == {"ts", "kind", "source", "title", "reason", "severity", "detail", "ref"}

    clicks = [i for i in items if i["kind"] == "click"]
    assert {c["detail"].get("name") for c in clicks} >= {"Planner node", "Checkout", "Crash"}
    assert all(c["reason"] == "OpenReplay tracker session" for c in clicks)

    canvas = [i for i in items if i["source"] == "agent"]
    assert len(canvas) == 1
    assert canvas[0]["title"] == f"canvas node click: planner-{run.label}"
    assert canvas[0]["reason"] == "session_id field"
    assert canvas[0]["detail"]["session_id"] == run.session_id

    fetch = [i for i in items if i["kind"] == "network" and "/api/checkout" in i["title"]]
    assert len(fetch) == 1
    net = fetch[0]
    assert net["source"] == "replay" and net["severity"] == "error"
    assert net["title"] == f"GET {backend_url}/api/checkout?cart={run.label} → 500"
    assert net["ref"]["trace_id"] == run.trace_id  # the traceparent the tracker saw

    # The trace is tied to the session by the browser span's session.id and by the
    # traceparent the tracker saw; whichever reason is kept, it is one of those.
    traces = {t["trace_id"]: t["reason"] for t in doc["traces"]}
    assert traces[run.trace_id] in {
        links.REASON_SPAN,
        links.REASON_TRACEPARENT,
        "span carries the session id",
    }
    spans = [i for i in items if i["kind"] == "span" and i["ref"]["trace_id"] == run.trace_id]
    assert len(spans) == 4, [s["title"] for s in spans]
    names = sorted(s["title"].split(" (")[0] for s in spans)
    assert names == [
        "checkout-api: GET /api/checkout",
        "checkout-api: SELECT cart",
        "checkout-api: charge card",
        "web-frontend: GET",
    ], names
    assert all(s["reason"] == f"trace {run.trace_id}: {traces[run.trace_id]}" for s in spans)
    browser_span = next(s for s in spans if s["title"].startswith("web-frontend"))
    server = next(s for s in spans if "GET /api/checkout" in s["title"])
    assert browser_span["detail"]["attributes"]["session.id"] == run.session_id
    assert server["ref"]["parent_span_id"] == browser_span["ref"]["span_id"]
    assert all(s["source"] == "otlp" for s in spans)
    charge = next(s for s in spans if "charge card" in s["title"])
    assert charge["severity"] == "error"

    errors = [i for i in items if i["kind"] == "error"]
    assert len(errors) == 2, [(e["source"], e["title"]) for e in errors]
    browser_err = next(e for e in errors if e["source"] == "replay+sentry")
    assert browser_err["ref"]["event_id"] == run.browser_event_id
    assert browser_err["ref"]["tracker_event_uid"]
    assert browser_err["detail"]["type"] == "TypeError"
    assert browser_err["detail"]["value"] == f"price is not a number in cart {run.label}"
    assert browser_err["detail"]["platform"] == "javascript"
    assert browser_err["reason"].startswith(links.REASON_SENTRY_TAG)
    assert "tracker saw the same TypeError" in browser_err["reason"]
    backend_err = next(e for e in errors if e["source"] == "sentry")
    assert backend_err["ref"]["event_id"] == run.backend_event_id
    assert backend_err["ref"]["trace_id"] == run.trace_id
    assert backend_err["detail"]["type"] == "CardDeclined"
    assert backend_err["detail"]["platform"] == "python"
    assert backend_err["reason"] == f"trace {run.trace_id}"
    assert backend_err["title"].startswith("backend error CardDeclined")
    # The browser SDK's own trace (no spans of its own) is tied in by the tagged event.
    sentry_trace = browser_err["ref"]["trace_id"]
    assert sentry_trace and sentry_trace != run.trace_id
    assert traces[sentry_trace] == links.REASON_SENTRY_TRACE
    assert set(traces) == {run.trace_id, sentry_trace}

    # Within one source the order is the order things happened. The tracker stamps a
    # click after the app's own handler ran, so the fetch it started may come first.
    tracker = [i for i in items if i["source"] == "replay"]
    click = next(i for i in tracker if i["title"] == "click Checkout")
    crash = next(i for i in tracker if i["title"] == "click Crash")
    assert abs(iso_ms(net["ts"]) - iso_ms(click["ts"])) < 1000
    assert tracker.index(click) < tracker.index(crash)
    assert iso_ms(browser_span["ts"]) <= iso_ms(server["ts"])


def check_isolation(doc: dict[str, Any], run: Run, other: Run) -> None:
    """Nothing of the other session: not its ids, its trace, its errors, its canvas."""
    text = json.dumps(doc)
    for foreign in (
        other.session_id,
        other.trace_id,
        other.backend_event_id,
        other.browser_event_id,
        f"planner-{other.label}",
        f"cart={other.label}",
        f"cart {other.label}",
    ):
        assert foreign not in text, foreign
    assert run.trace_id in {t["trace_id"] for t in doc["traces"]}
    assert other.trace_id not in {t["trace_id"] for t in doc["traces"]}
    items = doc["items"]
    assert {i["ref"]["trace_id"] for i in items if i["kind"] == "span"} == {run.trace_id}
    assert {i["ref"]["event_id"] for i in items if i["kind"] == "error"} == {
        run.browser_event_id,
        run.backend_event_id,
    }
    canvas = [i for i in items if i["source"] == "agent"]
    assert all(i["detail"]["session_id"] == run.session_id for i in canvas)


def test_device_clock_off_by_30s_still_one_browser_error(
    settings, valkey, ch, serve, http, site
) -> None:
    """The tracker's clock is aligned to the server's at session start; the Sentry SDK
    reports the device's own (Weftline corrects it only past MAX_DRIFT_S): the same
    error seen by both is still one item, placed where the tracker saw it."""
    from playwright.sync_api import sync_playwright

    from weftline.enrich.sentry import MAX_DRIFT_S

    offset = -30.0
    assert 10 < abs(offset) < MAX_DRIFT_S  # past the merge window, short of correction
    settings.openreplay.token_secret = "s" * 40
    app = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    dsn = f"http://{project.public_key}@127.0.0.1:{app.port}/{project.id}"
    backend, backend_url = start_backend(app.url, project.public_key, dsn)
    query = {"weftline": app.url, "key": project.public_key, "dsn": dsn, "backend": backend_url}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = open_session(browser, site, query, "C", clock_offset_s=offset)
                skew = page.evaluate("Date.now()") / 1000 - time.time()
                assert abs(skew - offset) < 5, skew
                act([page])
                run = finish(page, "C")
            finally:
                browser.close()
    finally:
        backend.terminate()
        backend.wait(10)
    assert run.problems == []

    token = project.query_token
    doc = wait_for(
        lambda: (
            (d := api(http, app.url, token, f"sessions/{run.session_id}"))
            and complete(d, run)
            and d
        ),
        timeout=40,
        interval=0.3,
    )
    check_timeline(doc, run, backend_url)
    items = doc["items"]
    merged = next(i for i in items if i["source"] == "replay+sentry")
    crash = next(i for i in items if i["title"] == "click Crash")
    assert abs(iso_ms(merged["ts"]) - iso_ms(crash["ts"])) < 2000
    # The SDK's own timestamp really is the device's, half a minute behind.
    event = api(http, app.url, token, f"errors/{run.browser_event_id}")["event"]
    behind = iso_ms(merged["detail"]["received_at"]) - iso_ms(event["timestamp"])
    assert 25_000 < behind < 40_000, behind
