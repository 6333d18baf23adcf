"""An agent run joined to the rest: a pydantic-ai run whose trace is linked to a browser
session, with a human-in-the-loop question asked from inside its tool, shows as one item
of the session's timeline, with its time waiting for the human, and on the agents pages
(headless Chromium)."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import wait_for
from tests.genai_frameworks import provider, pydantic_ai_run

SESSION = "sess-genai-ui"
WAIT_S = 0.4


@pytest.fixture
def run_in_session(settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]

    asked: list[datetime] = []

    def ask_human(trace_id: str) -> None:
        def hitl(state: str) -> dict:
            asked.append(datetime.now(UTC))
            return {
                "type": "hitl",
                "hitl_id": "q-approve",
                "kind": "question",
                "state": state,
                "agent_id": "planner",
                "trace_id": trace_id,
                "message": "May I look at this ticket?",
                "ts": asked[-1].isoformat(),
            }

        # The agent's own state event, with no trace: joined to the run by agent and time.
        busy = {"type": "agent_state", "agent_id": "planner", "status": "busy"}
        post = {"headers": {"x-weftline-key": p1.public_key}, "timeout": 10}
        assert (
            httpx.post(f"{srv.url}/api/v1/events", json=[hitl("opened"), busy], **post).status_code
            == 202
        )
        time.sleep(WAIT_S)
        assert (
            httpx.post(f"{srv.url}/api/v1/events", json=[hitl("answered")], **post).status_code
            == 202
        )

    tp = provider(srv.url, p1.public_key, "canvas-backend")
    result = pydantic_ai_run(tp, session_id=SESSION, in_tool=ask_human)
    tp.shutdown()
    auth = {"authorization": f"Bearer {p1.query_token}"}

    def ready():
        runs = http.get(f"{srv.url}/api/v1/agents/planner/runs", headers=auth).json()["runs"]
        ok = (
            runs and runs[0]["session_id"] and runs[0]["model_calls"] == 2 and runs[0]["waiting_ms"]
        )
        return runs[0] if ok else None

    run = wait_for(ready, timeout=20)
    result.asked = asked  # type: ignore[attr-defined]
    return srv, p1, auth, run, result


def test_run_is_one_timeline_item_with_time_waiting(run_in_session, http):
    srv, p1, auth, run, result = run_in_session
    # opened → answered, as the app stamped them (ms precision in agent_events).
    opened, answered = result.asked
    assert run["waiting_ms"] == pytest.approx((answered - opened).total_seconds() * 1000, abs=2)
    assert run["waiting_ms"] >= WAIT_S * 1000
    doc = http.get(f"{srv.url}/api/v1/agent-runs/{run['run_id']}", headers=auth).json()
    assert doc["waits"][0]["hitl_id"] == "q-approve" and doc["waits"][0]["state"] == "answered"
    joined = sorted((e["type"], e["status"], e["joined_by"]) for e in doc["events"])
    assert joined == [
        ("agent_state", "busy", "agent"),
        ("hitl", "answered", "trace_id"),
        ("hitl", "opened", "trace_id"),
    ]

    t = http.get(f"{srv.url}/api/v1/sessions/{SESSION}", headers=auth).json()
    runs = [i for i in t["items"] if i["kind"] == "agent_run"]
    assert len(runs) == 1
    item = runs[0]
    assert item["ref"]["run_id"] == run["run_id"] and item["ref"]["trace_id"] == result.trace_id
    assert item["detail"]["usage"] == {
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }
    assert [r["type"] for r in item["detail"]["rows"]] == [
        "agent_run",
        "model_call",
        "tool_call",
        "model_call",
    ]
    assert "waited" in item["title"]
    # The run's GenAI spans are inside the item; the app's own span stays a span item.
    spans = [i for i in t["items"] if i["kind"] == "span"]
    assert [s["title"].split(": ", 1)[1].split(" (")[0] for s in spans] == [
        "POST /api/agents/planner/run"
    ]
    # The hitl events join the run by trace id: they are in the session's timeline too.
    assert sum(1 for i in t["items"] if i["kind"] == "agent" and "human" in i["title"]) == 2


@pytest.mark.skipif(not shutil.which("chromium"), reason="Chromium is not installed")
def test_agents_pages_in_chromium(run_in_session, tmp_path):
    from playwright.sync_api import sync_playwright

    srv, p1, auth, run, result = run_in_session
    out = tmp_path if not (d := __import__("os").environ.get("WEFTLINE_SCREENSHOTS")) else d
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{srv.url}/ui/login")
        page.fill("#token", p1.query_token)
        page.click("#login")
        page.wait_for_selector("#session-filters")

        page.goto(f"{srv.url}/ui/sessions/{SESSION}")
        item = page.locator("#timeline li.kind-agent_run")
        item.first.wait_for()
        assert item.count() == 1
        item.locator("summary").click()
        assert item.locator(".run-rows .bar-row").count() == 4
        page.screenshot(path=f"{out}/genai-session.png", full_page=True)

        item.locator("a.run-link").click()
        page.wait_for_selector("#run-waterfall")
        rows = page.locator("#run-waterfall .run-row")
        assert rows.count() == 4
        assert page.locator("#run-waterfall .type-tool_call").count() == 1
        text = page.text_content("main") or ""
        assert f"{result.input_tokens} → {result.output_tokens} tokens" in text
        assert "waited" in text and SESSION in text
        page.screenshot(path=f"{out}/genai-run.png", full_page=True)

        page.goto(f"{srv.url}/ui/agents")
        assert page.locator("#agents a", has_text="planner").count() == 1
        page.click("#agents a >> text=planner")
        page.wait_for_selector("#runs")
        assert page.locator("#runs a", has_text=run["run_id"]).count() == 1
        page.screenshot(path=f"{out}/genai-agent.png", full_page=True)
        browser.close()
    assert errors == []
