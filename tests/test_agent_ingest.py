"""Agent events end to end: HTTP → real Valkey stream → worker → chDB → read API."""

from __future__ import annotations

import gzip

import orjson

from tests.conftest import wait_for
from weftline.storage.keys import in_stream
from weftline.storage.queries import count_agent_events


def state(agent: str = "a1", status: str = "busy", **kw) -> dict:
    return {"type": "agent_state", "agent_id": agent, "status": status, **kw}


def post(http, srv, project, body, **headers):
    h = {"x-weftline-key": project.public_key, "content-type": "application/json", **headers}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return http.post(f"{srv.url}/api/v1/events", content=data, headers=h)


def metric(http, srv, name: str, **labels) -> float:
    text = http.get(f"{srv.url}/metrics").text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def test_accepted_events_are_stored_and_readable(settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    events = [
        state("a1", "busy", current_task="t1", metrics={"total_tasks": 4, "cpu_usage": 30}),
        {"type": "task_update", "task_id": "t1", "agent_id": "a1", "state": "running"},
        {
            "type": "visualization_interaction",
            "action": "node_click",
            "node_id": "n1",
            "node_type": "agent",
            "agent_id": "a1",
            "session_id": "s-1",
        },
        {"type": "hitl", "hitl_id": "h1", "kind": "question", "state": "opened", "agent_id": "a1"},
    ]
    r = post(http, srv, p1, events)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 4
    wait_for(lambda: count_agent_events(ch, p1.id) == 4)

    auth = {"authorization": f"Bearer {p1.query_token}"}
    hist = http.get(f"{srv.url}/api/v1/agents/a1/events", headers=auth).json()["events"]
    assert {e["type"] for e in hist} == {
        "agent_state",
        "task_update",
        "visualization_interaction",
        "hitl",
    }
    click = next(e for e in hist if e["type"] == "visualization_interaction")
    assert (click["action"], click["node_id"], click["session_id"]) == ("node_click", "n1", "s-1")

    agents = wait_for(lambda: http.get(f"{srv.url}/api/v1/agents", headers=auth).json()["agents"])
    assert agents[0]["agent_id"] == "a1"
    assert agents[0]["status"] == "busy"
    assert agents[0]["current_task"] == "t1"
    assert agents[0]["metrics"]["total_tasks"] == 4
    assert metric(http, srv, "weftline_ingest_accepted_items_total", kind="agent") >= 4


def test_ndjson_gzip_and_query_key(settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    p1 = settings.projects[0]
    body = b"\n".join(orjson.dumps(state(f"n{i}")) for i in range(3))
    r = http.post(
        f"{srv.url}/api/v1/events?key={p1.public_key}",
        content=gzip.compress(body),
        headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"},
    )
    assert r.status_code == 202, r.text
    wait_for(lambda: count_agent_events(ch, p1.id) == 3)


def test_invalid_batch_is_all_or_nothing(settings, valkey, vk, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    r = post(http, srv, p1, [state("ok"), state("bad", "sleeping"), {"type": "hitl"}])
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "invalid_events"
    assert {(p["index"], p["field"]) for p in body["problems"]} >= {(1, "status"), (2, "hitl_id")}
    assert vk.xlen(in_stream("agent")) == 0
    assert (
        metric(
            http,
            srv,
            "weftline_ingest_rejected_requests_total",
            kind="agent",
            reason="invalid_events",
        )
        == 1
    )

    r = post(http, srv, p1, b"[{not json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    assert vk.xlen(in_stream("agent")) == 0


def test_auth_and_limits(settings, valkey, vk, ch, serve, http):
    settings.max_body_bytes = 2000
    settings.max_events_per_request = 5
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    url = f"{srv.url}/api/v1/events"
    assert http.post(url, json=[state()]).status_code == 401
    r = http.post(url, json=[state()], headers={"x-weftline-key": "0" * 32})
    assert r.status_code == 403 and r.json()["error"] == "unknown_key"
    p1 = settings.projects[0]
    r = post(http, srv, p1, [state(f"a{i}") for i in range(6)])
    assert r.status_code == 413 and r.json()["error"] == "too_many_events"
    r = post(http, srv, p1, [state("x" * 250, current_task="y" * 1000)] * 3)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    r = post(
        http, srv, p1, gzip.compress(b"[" + b" " * 5000 + b"]"), **{"content-encoding": "gzip"}
    )
    assert r.status_code == 413 and r.json()["error"] == "decompressed_too_large"
    assert vk.xlen(in_stream("agent")) == 0


def test_rate_limit_gives_429_with_retry_after(settings, valkey, ch, serve, http):
    settings.projects[0].rate_limit = 2
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    codes = [post(http, srv, p1, [state()]).status_code for _ in range(5)]
    assert codes[:2] == [202, 202]
    assert 429 in codes
    r = post(http, srv, p1, [state()])
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_cors_preflight_and_origin_check(settings, valkey, ch, serve, http):
    settings.projects[0].allowed_origins = ["https://app.example"]
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    r = http.options(
        f"{srv.url}/api/v1/events",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-weftline-key",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-weftline-key" in r.headers["access-control-allow-headers"]
    r = post(http, srv, p1, [state()], origin="https://app.example")
    assert r.status_code == 202
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = post(http, srv, p1, [state()], origin="https://evil.example")
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"


def test_read_api_auth(settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1, p2 = settings.projects
    assert http.get(f"{srv.url}/api/v1/agents").status_code == 401
    auth = {"authorization": f"Bearer {p1.query_token}"}
    assert http.get(f"{srv.url}/api/v1/agents?project_id={p2.id}", headers=auth).status_code == 403
    assert http.get(f"{srv.url}/api/v1/agents?project_id={p1.id}", headers=auth).status_code == 200
    r = http.get(f"{srv.url}/api/v1/agents/a1/events?from=yesterday", headers=auth)
    assert r.status_code == 400
    doc = http.get(f"{srv.url}/api/v1/openapi.json").json()
    assert "/api/v1/events" in doc["paths"]
    assert "AgentState" in doc["components"]["schemas"]


def test_events_older_than_retention_are_rejected(settings, valkey, vk, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    r = post(http, srv, settings.projects[0], [state(), state(ts="2020-01-01T00:00:00Z")])
    assert r.status_code == 400
    assert r.json()["problems"][0]["index"] == 1
    assert "retention" in r.json()["problems"][0]["message"]
    assert vk.xlen(in_stream("agent")) == 0


def test_history_time_range_and_project_isolation(settings, valkey, ch, serve, http):
    for p in settings.projects:
        p.retention_days = 3650
    srv = serve(settings, valkey.url, ch=ch)
    p1, p2 = settings.projects
    post(
        http,
        srv,
        p1,
        [state("a", ts="2026-01-01T10:00:00Z"), state("a", "idle", ts="2026-01-02T10:00:00Z")],
    )
    post(http, srv, p2, [state("a", ts="2026-01-01T11:00:00Z")])
    wait_for(lambda: count_agent_events(ch) == 3)
    auth = {"authorization": f"Bearer {p1.query_token}"}
    r = http.get(f"{srv.url}/api/v1/agents/a/events?from=2026-01-02T00:00:00Z", headers=auth)
    assert [e["status"] for e in r.json()["events"]] == ["idle"]
    r = http.get(f"{srv.url}/api/v1/agents/a/events?to=1767315600000&limit=10", headers=auth)
    assert [e["ts"] for e in r.json()["events"]] == ["2026-01-01T10:00:00.000Z"]
