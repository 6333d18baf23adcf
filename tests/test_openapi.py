"""The OpenAPI document: a valid OpenAPI 3.1 document, every route of the app in it, and the
read API's real answers matching its response schemas."""

from __future__ import annotations

import re

import jsonschema
import pytest
import sentry_sdk
from openapi_spec_validator import validate

from tests.conftest import wait_for
from weftline.app import create_app
from weftline.openapi import openapi_document


def app_routes(settings) -> set[tuple[str, str]]:
    app = create_app(settings, "redis://127.0.0.1:1/0", run_workers=False, open_storage=False)
    out = set()

    def walk(routes, prefix=""):
        for r in routes:
            if hasattr(r, "routes") and not getattr(r, "methods", None):
                walk(r.routes, prefix + getattr(r, "path", ""))
                continue
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + r.path)  # {rest:path} → {rest}
            for m in (r.methods or {"GET"}) - {"HEAD"}:
                out.add((path, m.lower()))

    walk(app.routes)
    return out


def test_document_is_valid_openapi_and_lists_every_route(settings):
    doc = openapi_document()
    validate(doc)  # raises with the first problem
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    missing = app_routes(settings) - documented
    assert not missing, f"routes without an OpenAPI entry: {sorted(missing)}"
    issues = doc["paths"]["/api/v1/issues"]["get"]
    assert {p["name"] for p in issues["parameters"]} >= {"from", "to", "status", "limit"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (path, method)
            if path.startswith("/api/v1/") and method == "get" and path != "/api/v1/live":
                ok = op["responses"].get("200", {})
                assert "content" in ok, f"{method} {path}: no response schema"


def matches(doc, schema_name: str, value) -> None:
    root = {"components": doc["components"], "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(root).validate(value)


def test_real_answers_match_the_response_schemas(settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch, run_workers=True)
    p = settings.projects[0]
    auth = {"authorization": f"Bearer {p.query_token}"}
    client = sentry_sdk.Client(
        dsn=f"http://{p.public_key}@127.0.0.1:{srv.port}/{p.id}",
        default_integrations=False,
        traces_sample_rate=1.0,
    )
    with sentry_sdk.new_scope() as scope:
        scope.set_client(client)
        scope.set_tag("openReplaySession.id", "s-openapi")
        with sentry_sdk.start_transaction(name="openapi"):
            try:
                raise ValueError("openapi schema check")
            except ValueError as e:
                sentry_sdk.capture_exception(e)
    client.flush(10)
    r = http.post(
        f"{srv.url}/api/v1/events",
        headers={"x-weftline-key": p.public_key},
        json=[{"type": "agent_state", "agent_id": "oa", "status": "busy"}],
    )
    assert r.status_code == 202
    doc = http.get(f"{srv.url}/api/v1/openapi.json").json()

    def get(path: str, schema: str):
        answer = http.get(srv.url + path, headers=auth)
        assert answer.status_code == 200, (path, answer.text)
        matches(doc, schema, answer.json())
        return answer.json()

    issues = wait_for(lambda: get("/api/v1/issues", "IssueList")["issues"], 30)
    issue = get(f"/api/v1/issues/{issues[0]['group_id']}", "IssueDetail")
    get(f"/api/v1/errors/{issue['issue']['latest_event_id']}", "ErrorEvent")
    traces = wait_for(lambda: get("/api/v1/traces", "TraceList")["traces"], 30)
    get(f"/api/v1/traces/{traces[0]['trace_id']}", "Trace")
    wait_for(lambda: get("/api/v1/agents", "AgentList")["agents"], 30)
    wait_for(lambda: get("/api/v1/agents/oa/events", "AgentEventList")["events"], 30)
    get("/api/v1/sessions/s-openapi", "SessionTimeline")
    get("/api/v1/sessions", "SessionList")
    get("/api/v1/logs", "LogList")
    get("/api/v1/sourcemaps", "ArtifactList")
    matches(doc, "Ready", http.get(f"{srv.url}/readyz").json())
    with pytest.raises(jsonschema.ValidationError):  # the schemas do constrain
        matches(doc, "IssueList", {"project_id": 1, "issues": [{"title": 3}]})
