"""The replay player, end to end: the real `@openreplay/tracker` records a React Flow page
of ours in headless Chromium; /ui/sessions/{id}?t=… replays it. At two moments the
replay must look like the live page did (screenshot similarity), hold the node labels
and the typed value, and replaying must run no recorded script, open no dialog and send
no request to the recorded app."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.test_api_times import RFC3339_MS
from tests.test_openreplay_browser import (  # noqa: F401  (fixtures)
    PAGE_DIR,
    Watch,
    _drag,
    browser,
    open_page,
    tracker_bundle,
)

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

THRESHOLD = 0.0018
# The live page's viewport; the UI's is wide enough that the replay is drawn unscaled.
LIVE = {"width": 1280, "height": 720}
UI = {"width": 1900, "height": 1150}
NODE = '.react-flow__node[data-id="{}"]'.format
# A 1×1 PNG: what the recorded page loads live, and the replay must never ask for.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2216c370000000049454e44ae426082"
)


SENTRY_APP = """
import sys
import sentry_sdk

def send_error(order_id):
    basket = {"order": order_id, "items": 3}
    try:
        basket["missing_key"]
    except KeyError as e:
        sentry_sdk.capture_exception(e)

sentry_sdk.init(dsn=sys.argv[1], default_integrations=False, release="shop@1.4.2",
                environment="production")
sentry_sdk.set_user({"id": "sentry-user-7", "email": "grace@example.com"})
sentry_sdk.set_tag("openReplaySession.id", sys.argv[2])
sentry_sdk.set_context("checkout", {"step": "payment", "basket_size": 3})
for n in range(2):
    sentry_sdk.set_tag("attempt", str(n))
    sentry_sdk.add_breadcrumb(category="ui.click", message=f"Buy now #{n}")
    send_error(1000 + n)
sentry_sdk.flush(timeout=10)
"""


class Site:
    """The recorded app's own origin, counting every request it is sent."""

    def __init__(self, page: bytes, script: bytes, css: bytes) -> None:
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                path = self.path.split("?")[0]
                body, ctype, status = {
                    "/": (page, "text/html; charset=utf-8", 200),
                    "/tracker.js": (script, "text/javascript", 200),
                    "/tracker.css": (css, "text/css", 200),
                    "/api/data": (b'{"ok":true}', "application/json", 200),
                    "/canary.png": (PIXEL, "image/png", 200),
                }.get(path, (b"not found", "text/plain", 404))
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(tracker_bundle) -> Iterator[Site]:  # noqa: F811
    s = Site((PAGE_DIR / "page.html").read_bytes(), *tracker_bundle)
    yield s
    s.close()


def gray(png: bytes, size: tuple[int, int] = (320, 180)):
    """A screenshot as a small grayscale array: downsampling averages away sub-pixel
    text anti-aliasing, which differs between two renders of the same DOM."""
    img = Image.open(io.BytesIO(png)).convert("L").resize(size, Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64)


def difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two screenshots, 0 (same) … 1 (black vs white)."""
    return float(np.abs(gray(a) - gray(b)).mean() / 255)


def live_moment(page) -> int:
    """Epoch ms of what the live page shows now, on the tracker's clock (server-aligned:
    same machine, so `Date.now()` plus the start response's delay of a few ms)."""
    page.mouse.move(1270, 710)  # no hover styling in the picture (the replay draws none)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    time.sleep(0.7)  # the tracker commits every ~30 ms; let it settle
    return int(page.evaluate("() => Date.now()"))


def test_replay_matches_the_live_page_and_runs_nothing(
    browser,  # noqa: F811
    site,
    serve,
    settings,
    valkey,
    ch,
    http,
    tmp_path,
):
    settings.openreplay.token_secret = "r" * 40
    app = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    page, watch, started = open_page(browser, site.url, app, project)
    sid = started["sessionID"]
    wait_for(lambda: page.evaluate("() => window.flowReady === true"), timeout=10)
    # Hostile content the recorder sees: a script, an inline handler, a URL to fetch.
    page.evaluate(
        """() => {
        const s = document.createElement("script");
        s.textContent = "window.__ran = (window.__ran || 0) + 1";
        document.body.appendChild(s);
        const img = document.createElement("img");
        img.src = "/canary.png";
        img.setAttribute("onload", "window.__onload = 1");
        img.width = 1; img.height = 1;
        document.body.appendChild(img);
    }"""
    )

    # Moment 1: a node selected, a value typed.
    page.click(NODE("coder"))
    wait_for(lambda: page.evaluate("() => window.lastNodeFetch"), timeout=10)
    page.fill("#name", "Grace Hopper")
    t1 = live_moment(page)
    live1 = page.screenshot()
    time.sleep(0.5)

    # Moment 2: a node dragged elsewhere and a new edge.
    box = page.locator(NODE("reviewer")).bounding_box()
    _drag(page, box, {**box, "x": box["x"] + 160, "y": box["y"] + 40})
    _drag(
        page,
        page.locator(f"{NODE('coder')} .react-flow__handle.source").bounding_box(),
        page.locator(f"{NODE('reviewer')} .react-flow__handle.target").bounding_box(),
    )
    wait_for(lambda: page.locator(".react-flow__edge").count() == 2, timeout=5)
    page.fill("#name", "Grace Brewster Hopper")
    t2 = live_moment(page)
    live2 = page.screenshot()
    assert page.evaluate("() => [window.__ran, window.__onload]") == [1, 1]
    page.evaluate("() => window.tracker.forceFlushBatch()")
    assert watch.problems() == []

    def recorded():
        r = http.get(
            f"{app.url}/api/v1/sessions/{sid}/replay",
            headers={"authorization": f"Bearer {project.query_token}"},
        )
        if r.status_code != 200:
            return None
        d = r.json()
        last = d["start_ms"] + (d["messages"][-1][0] if d["messages"] else 0)
        return d if last >= t2 - 800 else None

    doc = wait_for(recorded, timeout=30, interval=0.5)
    page.close()
    start = doc["start_ms"]
    assert doc["tabs"] and doc["duration_ms"] >= t2 - start - 800
    types = {m[2] for m in doc["messages"]}
    assert {7, 8, 9, 12, 14, 18, 20, 68} <= types  # DOM, attributes (dictionary resolved), input
    assert 35 not in types and 34 not in types

    # Replay, in another browser context (nothing shared with the recorded page).
    ctx = browser.new_context(viewport=UI)
    ui = ctx.new_page()
    dialogs: list[str] = []
    requests: list[str] = []
    ui.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ui.on("request", lambda r: requests.append(r.url))
    ui.goto(f"{app.url}/ui/login")
    ui.fill("#token", project.query_token)
    ui.click("#login")
    ui.wait_for_url(f"{app.url}/ui/")
    hits_before = len(site.hits)

    # WEFTLINE_SCREENSHOTS=DIR keeps the pictures to look at.
    shots = Path(os.environ.get("WEFTLINE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    diffs = {}
    for name, t_ms, live in (("moment1", t1, live1), ("moment2", t2, live2)):
        sec = (t_ms - start) / 1000
        ui.goto(f"{app.url}/ui/sessions/{sid}?t={sec:.3f}")
        ui.wait_for_selector("#replay.rp-ready", timeout=15_000)
        ui.add_style_tag(content=".rp-overlay { display: none !important; }")
        frame = ui.locator("iframe.rp-screen:visible")
        shot = frame.screenshot()
        (shots / f"replay-{name}-live.png").write_bytes(live)
        (shots / f"replay-{name}-replay.png").write_bytes(shot)
        w, h = Image.open(io.BytesIO(shot)).size  # unscaled (± a sub-pixel row)
        assert abs(w - LIVE["width"]) <= 1 and abs(h - LIVE["height"]) <= 1, (w, h)
        diffs[name] = shot
        # The replayed DOM: React Flow's node labels and the value typed by then.
        state = ui.evaluate(
            """() => {
            const d = window.weftlinePlayer.document();
            const w = d.defaultView;
            return {
              labels: [...d.querySelectorAll(".react-flow__node")].map(n => n.textContent.trim()),
              typed: d.querySelector("#name").value,
              edges: d.querySelectorAll(".react-flow__edge").length,
              scripts: d.querySelectorAll("script").length,
              ran: w.__ran, onload: w.__onload,
              img: (d.querySelector("img[data-wl-src]") || {getAttribute: () => "none"})
                .getAttribute("src"),
              sandbox: window.weftlinePlayer.screens[0].frame.getAttribute("sandbox"),
            };
        }"""
        )
        assert sorted(state["labels"]) == ["Coder", "Planner", "Reviewer"], state
        assert state["typed"] == ("Grace Hopper" if name == "moment1" else "Grace Brewster Hopper")
        assert state["edges"] == (1 if name == "moment1" else 2), state
        assert state["scripts"] == 0
        assert state["ran"] is None and state["onload"] is None
        assert state["img"] is None  # the recorded src is kept aside, never loaded
        assert state["sandbox"] == "allow-same-origin"
        ui.screenshot(path=str(shots / f"session-{name}.png"))
        # The page URL (long, with its query) wraps or clips: the page is no wider.
        assert ui.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        assert ui.locator(".rp-url").text_content().startswith(site.url)
        # The playhead's item is highlighted and scrolled into the list's view.
        shown = ui.evaluate(
            """() => {
            const list = document.getElementById("timeline");
            const cur = list.querySelector("li.current");
            if (!cur) return null;
            const a = list.getBoundingClientRect(), b = cur.getBoundingClientRect();
            return [Number(cur.dataset.t), b.top >= a.top - 1 && b.bottom <= a.bottom + 1];
        }"""
        )
        assert shown is not None and shown[1] and shown[0] <= sec + 0.001, shown
        if name == "moment1":
            # Negative control for the threshold: the same DOM without its style sheets
            # (what a player that loses React Flow's CSS would show).
            ui.evaluate("() => { window.weftlinePlayer.document().adoptedStyleSheets = []; }")
            unstyled = difference(frame.screenshot(), live)
            ui.evaluate("() => window.weftlinePlayer.seek(window.weftlinePlayer.time - 1)")

    # Each replay moment looks like its live moment, and more so than like the other
    # moment (the two differ where the node moved, the edge and the typed text are).
    d11 = difference(diffs["moment1"], live1)
    d22 = difference(diffs["moment2"], live2)
    d12 = difference(diffs["moment1"], live2)
    d21 = difference(diffs["moment2"], live1)
    print(f"replay vs live: d11={d11:.4f} d22={d22:.4f} d12={d12:.4f} d21={d21:.4f}")
    print(f"unstyled replay vs live: {unstyled:.4f}")
    # Measured: 0.0008–0.0013 for the right moment (text anti-aliasing, a 1 px offset),
    # 0.0022 for the wrong moment, 0.005+ without the CSS. 0.0018 sits between the
    # right moment and anything visibly wrong.
    assert unstyled > THRESHOLD, unstyled
    assert d11 < THRESHOLD and d22 < THRESHOLD, (d11, d22)
    assert d11 < d12 and d22 < d21, (d11, d12, d22, d21)

    # Seeking by clicking a timeline item moves the playhead there.
    item = ui.locator("#timeline li[data-marker=click]").first
    item.locator(".icon").click()
    want = float(item.get_attribute("data-t"))
    got = ui.evaluate("() => window.weftlinePlayer.time") / 1000
    assert abs(got - want) < 0.01
    assert "current" in (item.get_attribute("class") or "")

    assert dialogs == []
    assert [u for u in requests if u.startswith(site.url)] == []
    assert site.hits[hits_before:] == []

    # The sessions list finds the session by its tracker user and by the user of a
    # Sentry event tagged with it (the real sentry-sdk, in its own process).
    def sessions(**params):
        r = http.get(
            f"{app.url}/api/v1/sessions",
            params=params,
            headers={"authorization": f"Bearer {project.query_token}"},
        )
        assert r.status_code == 200, r.text
        return [x["session_id"] for x in r.json()["sessions"]]

    assert sid in sessions(user_id="e2e-user")
    assert sid not in sessions(user_id="sentry-user-7")
    host = app.url.split("//")[1]
    app_file = tmp_path / "shop_app.py"  # a file, so frames carry their source lines
    app_file.write_text(SENTRY_APP)
    dsn = f"http://{project.public_key}@{host}/{project.id}"
    subprocess.run([sys.executable, str(app_file), dsn, sid], check=True, timeout=60)
    wait_for(lambda: sid in sessions(user_id="sentry-user-7"), timeout=30)
    assert sid not in sessions(errors_only="true")  # no tracker exception in this one
    one = http.get(
        f"{app.url}/api/v1/sessions",
        params={"user_id": "e2e-user"},
        headers={"authorization": f"Bearer {project.query_token}"},
    ).json()["sessions"][0]
    assert RFC3339_MS.match(one["started_at"]) and RFC3339_MS.match(one["last_event_at"])
    assert one["rev_id"] is None and one["user_id"] == "e2e-user"  # missing is null, not ""
    detail = http.get(
        f"{app.url}/api/v1/sessions/{sid}",
        headers={"authorization": f"Bearer {project.query_token}"},
    ).json()
    stamps = [i["ts"] for i in detail["items"]] + [i["ts"] for i in detail["timeline"]]
    assert stamps and all(RFC3339_MS.match(t) for t in stamps), stamps[:3]
    ui.goto(f"{app.url}/ui/?user=sentry-user-7")
    row = ui.locator("#sessions tbody tr")
    assert row.count() == 1
    assert sid in row.text_content() and "e2e-user" in row.text_content()
    assert "HeadlessChrome" in row.text_content()
    ui.screenshot(path=str(shots / "sessions.png"))
    # At a laptop's width too, no long URL widens the session page.
    ui.set_viewport_size(LIVE)
    ui.goto(f"{app.url}/ui/sessions/{sid}")
    ui.wait_for_selector("#replay.rp-ready", timeout=15_000)
    assert ui.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    ui.screenshot(path=str(shots / "session-1280.png"))
    ui.set_viewport_size(UI)
    # The tabs beside the player: network with headers and bodies, console, agent events.
    ui.goto(f"{app.url}/ui/sessions/{sid}")
    ui.click(".tabs button[data-tab=network]")
    net = ui.locator(".tab-pane[data-pane=network] li.kind-network").first
    net.locator("summary").click()
    body = net.locator(".detail-body").text_content()
    assert "node=coder" in body and "content-type" in body.lower() and '"ok": true' in body
    ui.screenshot(path=str(shots / "session-network.png"))
    ui.click(".tabs button[data-tab=console]")
    assert "selected node coder" in ui.text_content(".tab-pane[data-pane=console]")
    ui.click(".tabs button[data-tab=agent]")
    agent = ui.text_content(".tab-pane[data-pane=agent]")
    assert "canvas node click: coder" in agent and "canvas edge connect" in agent
    # The Errors tab shows the Sentry error with its stack.
    ui.click(".tabs button[data-tab=errors]")
    err = ui.locator(".tab-pane[data-pane=errors] li.kind-error").first
    assert "KeyError" in err.text_content()
    err.locator("summary").click()
    assert "send_error" in err.locator(".detail-body").text_content()
    ui.screenshot(path=str(shots / "session-errors.png"))
    # The Sentry event's trace has no span: its page shows the event, not "No such trace".
    ui.goto(app.url + ui.locator("details.trace summary a").first.get_attribute("href"))
    assert "KeyError" in ui.text_content("#trace-events")
    assert "send_error" in ui.text_content("#trace-events .frames")
    ui.screenshot(path=str(shots / "trace-of-sentry-event.png"))

    # The issue page at Sentry's depth.
    ui.goto(f"{app.url}/ui/sessions/{sid}")
    ui.click(".tab-pane[data-pane=all] li.kind-error .title a")
    ui.wait_for_selector("#stacktrace")
    stack = ui.text_content("#stacktrace")
    assert "KeyError" in stack and "send_error" in stack
    assert 'basket["missing_key"]' in ui.text_content("#stacktrace .hl")  # context line
    assert "sentry_sdk.capture_exception(e)" in ui.text_content("#stacktrace pre.src")
    ui.click("#stacktrace .vars summary")
    assert "order_id" in ui.text_content("#stacktrace .vars")  # local variables
    assert "Buy now" in ui.text_content("#breadcrumbs")
    assert ui.text_content("#release") == "shop@1.4.2"
    assert ui.text_content("#environment") == "production"
    assert "sentry-user-7" in ui.text_content("#user")
    contexts = ui.text_content("#contexts")
    assert "checkout" in contexts and "payment" in contexts and "trace_id" in contexts
    dist = ui.text_content("#tag-distribution")
    assert "attempt" in dist and "50%" in dist and "shop@1.4.2" in dist and "100%" in dist
    assert ui.locator("#histogram .hbar").count() == 24
    link = ui.locator("#issue-sessions a.replay-link")
    assert f"/ui/sessions/{sid}?t=" in link.get_attribute("href")
    first_event = ui.text_content("#event-id")
    ui.click("#prev-event")
    assert ui.text_content("#event-id") != first_event
    ui.click("#next-event")
    assert ui.text_content("#event-id") == first_event
    ui.screenshot(path=str(shots / "issue.png"), full_page=True)
    ui.click("#issue-status button[value=resolved]")
    assert ui.text_content("#status").startswith("resolved")
    ui.click("#issue-status button[value=unresolved]")
    assert ui.text_content("#status").startswith("unresolved")
    # The replay link opens the player at the error's moment.
    href = link.get_attribute("href")
    ui.goto(app.url + href)
    ui.wait_for_selector("#replay.rp-ready", timeout=15_000)
    t = float(href.split("t=")[1])
    now, length = ui.evaluate("() => [window.weftlinePlayer.time, window.weftlinePlayer.duration]")
    # The Sentry event came after the recording's last frame: the player stops at its end.
    assert abs(now / 1000 - min(t, length / 1000)) < 0.05
    ctx.close()
