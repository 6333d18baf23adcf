"""The issue's end to end: from a fresh `weftline up`, a page whose React Flow canvas nodes
are the app's agents (real OpenReplay tracker, OpenTelemetry web SDK) — a click on a node
starts that agent's pydantic-ai run on the app's backend (TestModel, its own OTel
instrumentation, continuing the browser's trace). The run shows up with its tool calls
and exact token totals in the API, in the same session's timeline, on the agents pages,
and in a Grafana panel's SQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import run_weftline, wait_for, weftline_env
from tests.test_cli_up import start_up, stop
from tests.test_e2e_timeline import CHROMIUM, CHROMIUM_ARGS, PAGE_DIR
from weftline.dashboards.grafana.check import load_dashboards
from weftline.dashboards.grafana.macros import TimeRange, Variable, expand_dashboard_query
from weftline.embedded import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    esbuild = PAGE_DIR / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip("the e2e page's npm packages are not installed (npm ci in tests/browser/e2e)")
    out = tmp_path_factory.mktemp("agents") / "agents-bundle.js"
    subprocess.run(
        [
            str(esbuild),
            "agents.js",
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
    files = {
        "/": ((PAGE_DIR / "agents.html").read_bytes(), "text/html; charset=utf-8"),
        "/agents-bundle.js": (out.read_bytes(), "text/javascript"),
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body, ctype = files.get(self.path.split("?")[0], (b"not found", "text/plain"))
            self.send_response(200 if ctype != "text/plain" else 404)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def start_backend(weftline: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PAGE_DIR / "agents_backend.py"), str(port), weftline, key],
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

    wait_for(up, timeout=60, interval=0.2)
    return proc, url


def test_canvas_click_runs_agent_into_the_session(tmp_path, site) -> None:
    from playwright.sync_api import sync_playwright

    data, port = tmp_path / "data", free_port()
    proc = start_up(data, port, tmp_path / "up.log")
    text = (tmp_path / "up.log").read_text()
    key = re.search(r"ingest key\s+([0-9a-f]{32})\b", text).group(1)
    token = re.search(r"query token\s+(\S+)", text).group(1)
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {token}"}
    backend, backend_url = start_backend(url, key)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{site}/?{urlencode({'weftline': url, 'key': key, 'backend': backend_url})}")
            page.wait_for_function("window.started !== undefined", timeout=20_000)
            assert page.evaluate("window.started")["success"]
            session_id = page.evaluate("window.tracker.getSessionID()")
            page.click(".react-flow__node[data-id=planner]")
            page.wait_for_function("window.run !== undefined", timeout=30_000)
            assert problems == []
            run_reply = page.evaluate("window.run")
            assert run_reply["status"] == 200, run_reply
            assert page.evaluate("window.flushAll()") is True
            usage = run_reply["body"]["usage"]
            trace_id = run_reply["body"]["trace_id"]

            def linked_run() -> dict | None:
                r = httpx.get(f"{url}/api/v1/agents/planner/runs", headers=auth, timeout=10)
                runs = r.json()["runs"] if r.status_code == 200 else []
                ok = runs and runs[0]["session_id"] == session_id and runs[0]["model_calls"] == 2
                return runs[0] if ok else None

            run = wait_for(linked_run, timeout=40, interval=0.3)
            assert run["trace_id"] == trace_id
            assert run["usage"] == usage  # the framework's own figures, exactly
            assert run["tool_calls"] == [{"name": "lookup_ticket", "count": 1, "errors": 0}]

            timeline = httpx.get(f"{url}/api/v1/sessions/{session_id}", headers=auth).json()
            items = timeline["items"]
            runs = [i for i in items if i["kind"] == "agent_run"]
            assert [i["ref"]["run_id"] for i in runs] == [run["run_id"]]
            assert runs[0]["detail"]["usage"] == usage
            clicks = [i for i in items if i["kind"] == "agent" and "node click" in i["title"]]
            assert [c["title"] for c in clicks] == ["canvas node click: planner"]

            # The agents page, from the session's timeline.
            page.goto(f"{url}/ui/login")
            page.fill("#token", token)
            page.click("#login")
            page.wait_for_selector("#session-filters")
            page.goto(f"{url}/ui/sessions/{session_id}")
            page.locator("#timeline li.kind-agent_run a.run-link").click()
            page.wait_for_selector("#run-waterfall")
            body = page.text_content("main") or ""
            assert f"{usage['input_tokens']} → {usage['output_tokens']} tokens" in body
            assert page.locator("#run-waterfall .type-tool_call").count() == 1
            page.screenshot(path=str(tmp_path / "canvas-run.png"), full_page=True)
            browser.close()
        assert problems == []
    finally:
        backend.terminate()
        backend.wait(10)
        stop(proc)

    # A Grafana panel's SQL, on the data `weftline up` stored (chDB allows one process
    # per data folder: read once it has stopped).
    dash = next(d for d in load_dashboards() if d["uid"] == "weftline-agents")
    panel = next(p for p in dash["panels"] if p["title"] == "Tokens by agent and model")
    rng = TimeRange.last(3600, now=datetime.now(UTC) + timedelta(seconds=5))
    sql = expand_dashboard_query(
        panel["targets"][0]["rawSql"],
        {"db": Variable(["weftline"]), "project": Variable(is_all=True)},
        rng,
    )
    out = run_weftline("query", "--data-dir", str(data), sql)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert sum(int(r["tokens"]) for r in rows if r["agent_model"] == "planner · test") == (
        usage["input_tokens"] + usage["output_tokens"]
    ), out
