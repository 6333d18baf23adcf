"""The unmodified `@sentry/browser` in headless Chromium, on a page served from another
origin than Weftline (so CORS is real): a handled error twice, an uncaught error, and
a span tree land grouped, with no failed request."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import wait_for
from weftline.embedded import free_port
from weftline.storage import sentry_queries as q

PAGE_DIR = Path(__file__).parent / "browser" / "sentry"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def build_bundle() -> None:
    if not (PAGE_DIR / "node_modules" / "@sentry" / "browser").exists():
        subprocess.run(["npm", "ci"], cwd=PAGE_DIR, check=True, timeout=300)
    subprocess.run(
        [
            str(PAGE_DIR / "node_modules" / ".bin" / "esbuild"),
            "entry.js",
            "--bundle",
            "--format=iife",
            "--outfile=dist/bundle.js",
            "--log-level=warning",
        ],
        cwd=PAGE_DIR,
        check=True,
        timeout=120,
    )


@pytest.fixture
def page_server():
    build_bundle()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGE_DIR))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Chromium is not installed")
def test_browser_sdk_errors_grouped_and_spans(settings, valkey, ch, serve, http, page_server):
    from playwright.sync_api import sync_playwright

    app = serve(settings, valkey.url, ch=ch)
    p = settings.projects[0]
    dsn = f"http://{p.public_key}@127.0.0.1:{app.port}/{p.id}"
    failed: list[str] = []
    statuses: list[int] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
            page.on(
                "response",
                lambda r: statuses.append(r.status) if "/envelope/" in r.url else None,
            )
            page.goto(f"{page_server}/page.html?dsn={dsn}")
            # The SDK's Dedupe integration drops an event identical to the one just
            # before it, so the same bug is sent twice with another event in between.
            page.evaluate("handledBug()")
            page.evaluate("throwUncaught()")
            page.wait_for_timeout(200)
            page.evaluate("handledBug()")
            page.evaluate("doSpans()")
            page.wait_for_timeout(300)
            assert page.evaluate("Sentry.flush(5000)")
        finally:
            browser.close()
    assert failed == []  # CORS clean: no request the browser refused
    assert statuses and all(s == 200 for s in statuses)
    wait_for(lambda: q.count_errors(ch, p.id) == 3, timeout=20)
    issues = q.list_issues(ch, p.id, None, None, None, 10)
    by_type = {i["title"].split(":")[0]: i for i in issues}
    assert by_type["TypeError"]["count"] == 2  # the same bug twice → one group
    assert by_type["SyntaxError"]["count"] == 1  # another bug → another group
    assert by_type["TypeError"]["group_id"] != by_type["SyntaxError"]["group_id"]
    assert by_type["TypeError"]["culprit"] == "readPrice(/page.html)"
    latest = q.latest_event(ch, p.id, by_type["SyntaxError"]["group_id"])
    assert latest["handled"] == 0 and latest["platform"] == "javascript"
    assert latest["openreplay_session_id"] == "5550001"
    assert latest["request_url"].startswith(page_server)
    assert latest["sdk_name"] == "sentry.javascript.browser"
    spans = wait_for(
        lambda: ch.query(
            f"SELECT name, op, parent_span_id, service_name FROM {ch.database}.spans FINAL"
            " WHERE project_id = {p:UInt32} AND source = 'sentry' AND name IN"
            " ('checkout', 'compute-total') ORDER BY start_time",
            {"p": p.id},
        ),
        timeout=20,
    )
    assert [(s["name"], s["op"]) for s in spans] == [
        ("checkout", "ui.action"),
        ("compute-total", "function"),
    ]
    assert spans[0]["service_name"] == "web"
