"""The real `@openreplay/tracker` (npm, unmodified, bundled with esbuild) in headless
Chromium against the live app: sessions, clicks, network, errors end to end, a React
Flow canvas (`@xyflow/react`) whose interactions reach agent_events through
`tracker.event`, plus continuation on reload and a clean restart after a 401."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson
import pytest

from tests.conftest import wait_for

PAGE_DIR = Path(__file__).parent / "browser" / "openreplay"
# Set to a file path to record the tracker's batch requests of the React Flow session
# (what bench/replay_ingest.py replays): WEFTLINE_CAPTURE_REPLAY=tests/data/openreplay/…
CAPTURE = os.environ.get("WEFTLINE_CAPTURE_REPLAY")
CHROMIUM = "/usr/bin/chromium"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (CI installs it)",
)


@pytest.fixture(scope="module")
def tracker_bundle(tmp_path_factory) -> tuple[bytes, bytes]:
    """(script, stylesheet): the tracker and the React Flow canvas in one script; esbuild
    writes the CSS React Flow imports next to it."""
    modules = PAGE_DIR / "node_modules"
    if not all((modules / m).exists() for m in ("@openreplay/tracker", "@xyflow/react")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PAGE_DIR, check=True)
    out = tmp_path_factory.mktemp("bundle") / "tracker.js"
    subprocess.run(
        [
            str(PAGE_DIR / "node_modules" / ".bin" / "esbuild"),
            str(PAGE_DIR / "entry.js"),
            "--bundle",
            "--format=iife",
            f"--outfile={out}",
            "--jsx=automatic",
            '--define:process.env.NODE_ENV="production"',
            "--log-level=warning",
        ],
        cwd=PAGE_DIR,
        check=True,
    )
    return out.read_bytes(), out.with_suffix(".css").read_bytes()


@pytest.fixture
def site(tracker_bundle) -> Iterator[str]:
    """The app's own origin (another port than Weftline, so every ingest call is
    cross-origin, as in production)."""
    page = (PAGE_DIR / "page.html").read_bytes()
    script, css = tracker_bundle

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, ctype: str, body: bytes, extra=()) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/":
                self._send(200, "text/html; charset=utf-8", page)
            elif path == "/tracker.js":
                self._send(200, "text/javascript", script)
            elif path == "/tracker.css":
                self._send(200, "text/css", css)
            elif path == "/api/data":
                got = self.headers.get("traceparent", "")
                query = parse_qs(urlsplit(self.path).query)
                body = json.dumps(
                    {"ok": True, "traceparent": got, "node": query.get("node", [""])[0]}
                ).encode()
                self._send(200, "application/json", body, [("traceresponse", "00-abc-def-01")])
            else:
                self._send(404, "text/plain", b"not found")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Watch:
    """What the browser reports: console lines, failed requests, ingest responses."""

    def __init__(self, page, ingest: str) -> None:
        self.console: list[str] = []
        self.failed: list[str] = []
        self.ingest: list[tuple[int, str]] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: self.ingest.append((r.status, r.url)) if r.url.startswith(ingest) else None,
        )

    def problems(self, allow_401: bool = False) -> list[str]:
        bad = [c for c in self.console if "CORS" in c or "Failed to load resource" in c]
        if allow_401:
            bad = [c for c in bad if "status of 401" not in c]
        # The tracker cancels the body of every answered batch (it never reads it), which
        # Chromium reports as ERR_ABORTED after the 200: only unanswered requests count.
        answered = {u for s, u in self.ingest if s < 400 or (allow_401 and s == 401)}
        bad += [f for f in self.failed if f.split(" ")[0] not in answered]
        bad += [f"{s} {u}" for s, u in self.ingest if s >= 400 and not (allow_401 and s == 401)]
        return bad


def api(http, app, project, path):
    r = http.get(
        f"{app.url}/api/v1/{path}", headers={"authorization": f"Bearer {project.query_token}"}
    )
    return r.json() if r.status_code == 200 else None


def open_page(browser, site, app, project, on_request=None):
    page = browser.new_page()
    if on_request is not None:
        page.on("request", on_request)
    watch = Watch(page, f"{app.url}/ingest")
    query = urlencode({"key": project.public_key, "ingest": f"{app.url}/ingest"})
    page.goto(f"{site}/?{query}")
    started = page.evaluate("() => window.startResult")
    assert started["success"], started
    return page, watch, started


def timeline_with(http, app, project, sid, need):
    def ready():
        d = api(http, app, project, f"sessions/{sid}")
        if not d:
            return None
        kinds = {i["kind"] for i in d["timeline"]}
        return d if need(d, kinds) else None

    return wait_for(ready, timeout=30, interval=0.3)


def test_real_tracker_session_reaches_the_api(browser, site, serve, settings, valkey, ch, http):
    settings.openreplay.token_secret = "t" * 40
    app = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    page, watch, started = open_page(browser, site, app, project)
    sid = started["sessionID"]
    assert page.evaluate("() => window.tracker.getSessionID()") == sid

    page.click("#buy")
    wait_for(lambda: page.evaluate("() => window.lastFetch"))
    page.fill("#name", "Ada")
    page.press("#name", "Tab")  # change event → InputChange
    page.evaluate(
        """() => {
        console.log("hello from the e2e page");
        window.tracker.event("checkout", { amount: 42 });
        setTimeout(() => { throw new Error("e2e uncaught boom"); }, 0);
    }"""
    )
    time.sleep(0.3)
    page.evaluate("() => window.tracker.forceFlushBatch()")

    def complete(d, kinds):
        return {"page", "click", "network", "exception", "custom", "input"} <= kinds

    d = timeline_with(http, app, project, sid, complete)
    items = d["timeline"]
    click = next(i for i in items if i["kind"] == "click")
    assert click["name"] == "Buy now" and click["selector"]
    assert 0 < click["x"] <= 10000 and 0 < click["y"] <= 10000
    net = next(i for i in items if i["kind"] == "network" and "/api/data" in i["url"])
    assert (net["method"], net["status"]) == ("GET", 200)
    assert net["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert net["request_headers"]["traceparent"] == TRACEPARENT
    assert '"ok":true' in net["response_body"]
    exc = next(i for i in items if i["kind"] == "exception")
    assert exc["value"] == "e2e uncaught boom" and exc["name"] == "Error"
    assert any(i["kind"] == "console" and "hello from the e2e page" in i["value"] for i in items)
    assert any(i["kind"] == "input" and i.get("value") == "Ada" for i in items)
    custom = next(i for i in items if i["kind"] == "custom")
    assert (custom["name"], custom["value"]) == ("checkout", '{"amount":42}')
    page_ev = next(i for i in items if i["kind"] == "page")
    assert page_ev["url"].startswith(site) and page_ev["name"] == "Weftline OpenReplay e2e"
    sess = d["session"]
    assert sess["browser"] in ("HeadlessChrome", "Chrome", "Chromium")
    assert sess["tracker_version"].startswith("19.")
    assert sess["user_id"] == "e2e-user" and sess["metadata"] == {"plan": "pro"}
    listed = api(http, app, project, "sessions")["sessions"]
    assert sid in [s["session_id"] for s in listed]

    # A reload in the same tab sends the old token: the same session continues (page 1).
    page.reload()
    again = page.evaluate("() => window.startResult")
    assert again["success"] and again["sessionID"] == sid
    page.click("#buy")
    wait_for(lambda: page.evaluate("() => window.lastFetch"))
    page.evaluate("() => window.tracker.forceFlushBatch()")
    d = timeline_with(
        http,
        app,
        project,
        sid,
        lambda d, k: any(i["page_no"] == 1 and i["kind"] == "click" for i in d["timeline"]),
    )
    assert {i["page_no"] for i in d["timeline"]} >= {0, 1}

    page.close()
    assert watch.problems() == []
    ingest_paths = {u.split("/ingest")[1].split("?")[0] for _, u in watch.ingest}
    assert {"/v1/web/start", "/v1/web/i", "/v1/web/tags"} <= ingest_paths


def test_stale_token_401_restarts_the_tracker_cleanly(
    browser, site, serve, settings, valkey, ch, http
):
    settings.openreplay.token_secret = "u" * 40
    settings.openreplay.session_max_seconds = 3
    app = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    page, watch, started = open_page(browser, site, app, project)
    old = started["sessionID"]
    time.sleep(3.5)  # the token is now stale
    page.click("#buy")
    wait_for(lambda: page.evaluate("() => window.lastFetch"))
    page.evaluate("() => window.tracker.forceFlushBatch()")
    new = wait_for(
        lambda: (s := page.evaluate("() => window.tracker.getSessionID()")) != old and s,
        timeout=20,
    )
    assert any(s == 401 and "/v1/web/i" in u for s, u in watch.ingest)
    starts = [u for s, u in watch.ingest if u.endswith("/v1/web/start") and s == 200]
    assert len(starts) >= 2
    # The restarted tracker re-snapshots the page into the new session.
    timeline_with(http, app, project, new, lambda d, k: "page" in k)
    page.close()
    assert watch.problems(allow_401=True) == []


def _tracker_request(request) -> dict:
    """One tracker request as sent: endpoint, query, DataType, encoding and body bytes."""
    headers = request.headers
    url = urlsplit(request.url)
    return {
        "endpoint": url.path.rsplit("/", 1)[-1],
        "query": url.query,
        "datatype": headers.get("datatype", ""),
        "content_encoding": headers.get("content-encoding", ""),
        "body_hex": (request.post_data_buffer or b"").hex(),
    }


def _drag(page, start: dict, end: dict) -> None:
    """A real pointer drag (down, several moves, up), as React Flow's d3-drag expects."""
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=12)
    page.mouse.up()


def test_react_flow_canvas_reaches_timeline_and_agent_events(
    browser, site, serve, settings, valkey, ch, http
):
    settings.openreplay.token_secret = "f" * 40
    app = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    captured: list[dict] = []

    def capture(request) -> None:
        if request.method == "POST" and "/ingest/v1/web/" in request.url:
            captured.append(_tracker_request(request))

    page, watch, started = open_page(browser, site, app, project, capture)
    sid = started["sessionID"]
    wait_for(lambda: page.evaluate("() => window.flowReady === true"), timeout=10)
    node = '.react-flow__node[data-id="{}"]'.format
    assert page.locator(".react-flow__node").count() == 3

    # Click a node: onNodeClick sends the visualization_interaction, logs and fetches.
    page.click(node("coder"))
    loaded = wait_for(lambda: page.evaluate("() => window.lastNodeFetch"), timeout=10)
    assert loaded["node"] == "coder"
    # Drag another node by a real pointer drag (onNodeDragStop).
    box = page.locator(node("reviewer")).bounding_box()
    _drag(page, box, {**box, "x": box["x"] + 120, "y": box["y"] + 30})
    moved = page.locator(node("reviewer")).bounding_box()
    assert moved["x"] > box["x"] + 60
    # Connect coder → reviewer from handle to handle (onConnect).
    _drag(
        page,
        page.locator(f"{node('coder')} .react-flow__handle.source").bounding_box(),
        page.locator(f"{node('reviewer')} .react-flow__handle.target").bounding_box(),
    )
    wait_for(lambda: page.locator(".react-flow__edge").count() == 2, timeout=5)
    page.fill("#name", "Grace")
    page.press("#name", "Tab")
    page.evaluate(
        """() => {
        console.warn("canvas review pending");
        setTimeout(() => { throw new TypeError("canvas render failed"); }, 0);
    }"""
    )
    time.sleep(0.3)
    page.evaluate("() => window.tracker.forceFlushBatch()")

    def complete(d, kinds):
        actions = {
            orjson.loads(i["value"]).get("action")
            for i in d["timeline"]
            if i["kind"] == "custom" and i.get("name") == "visualization_interaction"
        }
        agent = {i["detail"].get("action") for i in d["items"] if i["source"] == "agent"}
        want = {"node_click", "node_drag_stop", "edge_connect"}
        return (
            {"click", "input", "network", "console", "exception"} <= kinds
            and want <= actions
            and want <= agent
        )

    d = timeline_with(http, app, project, sid, complete)
    items = d["timeline"]

    clicks = [i for i in items if i["kind"] == "click"]
    node_click = next(i for i in clicks if i.get("name") == "Coder")
    assert "react-flow__node" in node_click["selector"] or "coder" in node_click["selector"]
    assert 0 < node_click["x"] <= 10000 and 0 < node_click["y"] <= 10000
    typed = next(i for i in items if i["kind"] == "input" and i.get("value") == "Grace")
    assert typed["details"]["masked"] is False
    net = next(i for i in items if i["kind"] == "network" and "node=coder" in i["url"])
    assert (net["method"], net["status"]) == ("GET", 200)
    assert '"node":"coder"' in net["response_body"]
    logs = {(i["name"], i["value"]) for i in items if i["kind"] == "console"}
    assert ("log", "selected node coder") in logs and ("warn", "canvas review pending") in logs
    excs = [(i["name"], i["value"]) for i in items if i["kind"] == "exception"]
    assert ("TypeError", "canvas render failed") in excs

    customs = {
        (p := orjson.loads(i["value"]))["action"]: p
        for i in items
        if i["kind"] == "custom" and i.get("name") == "visualization_interaction"
    }
    assert customs["node_click"]["node_id"] == "coder"
    assert customs["node_click"]["agent_id"] == "agent-coder"
    assert customs["node_click"]["viewport"]["zoom"] > 0
    assert customs["node_drag_stop"]["node_id"] == "reviewer"
    assert (customs["edge_connect"]["edge_source"], customs["edge_connect"]["edge_target"]) == (
        "coder",
        "reviewer",
    )
    # The same interactions as agent events, linked to the session by its id.
    agent = {i["detail"]["action"]: i for i in d["items"] if i["source"] == "agent"}
    click_ev = agent["node_click"]
    assert click_ev["reason"] == "session_id field" and click_ev["detail"]["session_id"] == sid
    assert (click_ev["detail"]["node_id"], click_ev["ref"]["agent_id"]) == ("coder", "agent-coder")
    assert click_ev["title"] == "canvas node click: coder"
    assert agent["node_drag_stop"]["detail"]["node_id"] == "reviewer"
    assert agent["edge_connect"]["title"] == "canvas edge connect: coder→reviewer"
    history = api(http, app, project, "agents/agent-coder/events")
    assert any(e.get("session_id") == sid for e in history["events"])

    page.close()
    assert watch.problems() == []
    if CAPTURE:
        Path(CAPTURE).write_text("".join(json.dumps(c) + "\n" for c in captured))
