"""Agent runs from real frameworks' GenAI spans, through the real OTLP/HTTP exporter into
a running Weftline (real valkey-server, real chDB), read back from the agents API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import wait_for
from tests.genai_frameworks import openai_agents_run, provider, pydantic_ai_run


@pytest.fixture
def app(settings, valkey, ch, serve):
    return serve(settings, valkey.url, ch=ch)


def get(http, app, settings, path: str, **params: Any) -> Any:
    token = settings.projects[0].query_token
    r = http.get(app.url + path, params=params, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


def runs_when(http, app, settings, agent: str, ready) -> list[dict]:
    def check():
        runs = get(http, app, settings, f"/api/v1/agents/{agent}/runs")["runs"]
        return runs if runs and ready(runs) else None

    return wait_for(check, timeout=20)


def test_pydantic_ai_run_reads_back_with_exact_tokens_and_tools(app, settings, http):
    tp = provider(app.url, settings.projects[0].public_key, "canvas-backend")
    result = pydantic_ai_run(tp, session_id="sess-genai-1")
    tp.shutdown()

    # Every span came in its own request, children first and the app's span (the one
    # naming the session) last: wait until all of them are in.
    runs = runs_when(
        http,
        app,
        settings,
        "planner",
        lambda rs: rs[0]["model_calls"] == 2 and rs[0]["tool_calls"] and rs[0]["session_id"],
    )
    assert len(runs) == 1
    run = runs[0]
    assert run["trace_id"] == result.trace_id
    assert run["usage"] == {
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }
    # pydantic-ai also reports its own total on the run span: the same figure, not added.
    assert run["reported_usage"] == run["usage"]
    assert run["tool_calls"] == [{"name": "lookup_ticket", "count": 1, "errors": 0}]
    assert run["models"] == ["test"]
    assert run["status"] == "ok" and run["errors"] == 0
    assert run["session_id"] == "sess-genai-1"
    assert run["conversation_id"]
    assert run["duration_ms"] > 0

    doc = get(http, app, settings, f"/api/v1/agent-runs/{run['run_id']}")
    tree = doc["tree"]
    assert tree["type"] == "agent_run" and tree["agent_name"] == "planner"
    kinds = [c["type"] for c in tree["children"]]
    assert kinds == ["model_call", "tool_call", "model_call"]
    first, tool, second = tree["children"]
    assert first["input_tokens"] + second["input_tokens"] == result.input_tokens
    assert first["output_tokens"] + second["output_tokens"] == result.output_tokens
    assert first["provider"] == "test" and first["model"] == "test"
    assert tool["tool"] == "lookup_ticket" and tool["call_id"]
    assert tool["result"] and tool["arguments"]
    assert 0 <= first["offset_ms"] <= tool["offset_ms"] <= second["offset_ms"]
    assert [r["depth"] for r in doc["rows"]] == [0, 1, 1, 1]

    agents = get(http, app, settings, "/api/v1/agents")["agents"]
    planner = next(a for a in agents if a["name"] == "planner")
    assert planner["runs"] == 1 and "genai_spans" in planner["seen_in"]


def test_openai_agents_handoff_tool_error_and_exact_tokens(app, settings, http):
    tp = provider(app.url, settings.projects[0].public_key, "support-backend")
    result = openai_agents_run(tp)
    tp.shutdown()

    def complete(rs: list[dict]) -> bool:
        return rs[0]["model_calls"] == 2 and len(rs[0]["tool_calls"]) == 2

    triage = runs_when(http, app, settings, "triage", complete)
    billing = runs_when(http, app, settings, "billing", lambda rs: rs[0]["model_calls"] == 1)
    assert len(triage) == len(billing) == 1
    t, b = triage[0], billing[0]
    assert t["trace_id"] == b["trace_id"]
    # The handoff makes two runs of one workflow; the framework's usage covers both.
    assert t["usage"]["input_tokens"] + b["usage"]["input_tokens"] == result.input_tokens
    assert t["usage"]["output_tokens"] + b["usage"]["output_tokens"] == result.output_tokens
    assert t["usage"] == {"input_tokens": 60, "output_tokens": 8}
    assert t["tool_calls"] == [
        {"name": "check_refund", "count": 1, "errors": 1},
        {"name": "lookup_ticket", "count": 1, "errors": 0},
    ]
    assert t["models"] == ["gpt-fake"] and b["models"] == ["gpt-fake-mini"]
    assert t["errors"] == 1

    doc = get(http, app, settings, f"/api/v1/agent-runs/{t['run_id']}")
    kinds = [c["type"] for c in doc["tree"]["children"]]
    assert kinds.count("model_call") == 2 and kinds.count("tool_call") == 2
    assert "handoff" in kinds
    handoff = next(c for c in doc["tree"]["children"] if c["type"] == "handoff")
    assert handoff["from_agent"] == "triage"
    # The instrumentation names no target ("triage → unknown"): the next run is billing's.
    assert handoff["to_agent"] == "billing" and handoff["to_agent_inferred"] is True
    failed = next(c for c in doc["tree"]["children"] if c.get("tool") == "check_refund")
    assert failed["status"] == "error" and failed["error"]
    finish = [c["finish_reasons"] for c in doc["tree"]["children"] if c["type"] == "model_call"]
    assert finish == [["tool_call"], ["tool_call"]]


def test_runs_api_needs_token_and_unknown_run_is_404(app, settings, http):
    assert http.get(app.url + "/api/v1/agents/planner/runs").status_code == 401
    token = settings.projects[0].query_token
    r = http.get(
        app.url + "/api/v1/agent-runs/0123456789abcdef",
        headers={"authorization": f"Bearer {token}"},
    )
    assert r.status_code == 404
    r = http.get(
        app.url + "/api/v1/agents/planner/runs",
        params={"limit": "0"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert r.status_code == 400
