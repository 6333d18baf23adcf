"""The OpenAPI document served at /api/v1/openapi.json."""

from __future__ import annotations

from functools import cache
from typing import Any

from weftline import __version__
from weftline.dashboards.debug.traces_api import openapi_paths as traces_paths
from weftline.ground.agent_schema import EVENTS, Problem


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


# Routes documented by summary: (path, method, summary, auth, path parameters, answers).
_MORE: list[tuple[str, str, str, str, tuple[str, ...], tuple[int, ...]]] = [
    (
        "/api/v1/issues",
        "get",
        "Error issues (Sentry groups), newest first; from, to, status",
        "token",
        (),
        (200, 401, 403),
    ),
    (
        "/api/v1/issues/{group_id}",
        "get",
        "One issue: latest event and stack trace, hourly histogram, linked sessions, traces",
        "token",
        ("group_id",),
        (200, 401, 404),
    ),
    (
        "/api/v1/issues/{group_id}",
        "patch",
        'Set the status: {"status": "resolved" | "ignored" | "unresolved"}',
        "token",
        ("group_id",),
        (200, 400, 401, 404),
    ),
    (
        "/api/v1/errors/{event_id}",
        "get",
        "One stored error event",
        "token",
        ("event_id",),
        (200, 401, 404),
    ),
    (
        "/api/v1/sourcemaps",
        "post",
        "Upload source maps and minified files (raw with ?url=&release=, or multipart)",
        "token",
        (),
        (201, 400, 401, 413),
    ),
    ("/api/v1/sourcemaps", "get", "List the uploaded artifacts", "token", (), (200, 401)),
    (
        "/api/{project_id}/envelope/",
        "post",
        "Sentry envelope endpoint (DSN http://KEY@HOST:PORT/PROJECT_ID)",
        "sentry",
        ("project_id",),
        (200, 400, 401, 403, 413, 429),
    ),
    (
        "/api/{project_id}/store/",
        "post",
        "Sentry legacy store endpoint",
        "sentry",
        ("project_id",),
        (200, 400, 401, 403, 413, 429),
    ),
    (
        "/ingest/v1/web/start",
        "post",
        "OpenReplay tracker: start or continue a session",
        "tracker",
        (),
        (200, 400, 403, 429),
    ),
    (
        "/ingest/v1/web/i",
        "post",
        "OpenReplay tracker: one batch (Bearer session token)",
        "tracker",
        (),
        (200, 400, 401, 413, 429, 503),
    ),
]
_SECURITY = {
    "token": [{"queryToken": []}],
    "sentry": [{"sentryAuth": []}, {"sentryKey": []}],
    "tracker": [],
}


def _more_paths() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, method, summary, auth, params, answers in _MORE:
        out.setdefault(path, {})[method] = {
            "summary": summary,
            "security": _SECURITY[auth],
            "parameters": [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in params
            ],
            "responses": {
                str(code): (
                    {"description": "ok"} if code < 300 else _error(f"HTTP {code}, with the reason")
                )
                for code in answers
            },
        }
    return out


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document: the hand-written entries below, completed with every other route,
    the read API's query parameters and its response schemas (`_complete`)."""
    return _complete(_base_document())


def _base_document() -> dict[str, Any]:
    events_schema = EVENTS.json_schema(ref_template="#/components/schemas/{model}")
    defs = events_schema.pop("$defs", {})
    token = [{"queryToken": []}]
    time_params = [
        {
            "name": "from",
            "in": "query",
            "schema": {"type": "string"},
            "description": "ISO 8601 or epoch ms",
        },
        {
            "name": "to",
            "in": "query",
            "schema": {"type": "string"},
            "description": "ISO 8601 or epoch ms",
        },
    ]
    project_param = {"name": "project_id", "in": "query", "schema": {"type": "integer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Weftline", "version": __version__},
        "components": {
            "securitySchemes": {
                "queryToken": {"type": "http", "scheme": "bearer"},
                "ingestKey": {"type": "apiKey", "in": "header", "name": "X-Weftline-Key"},
                "ingestKeyQuery": {"type": "apiKey", "in": "query", "name": "key"},
                "sentryAuth": {"type": "apiKey", "in": "header", "name": "X-Sentry-Auth"},
                "sentryKey": {"type": "apiKey", "in": "query", "name": "sentry_key"},
                "bearerIngestKey": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                **defs,
                "AgentEvents": events_schema,
                "Problem": Problem.model_json_schema(),
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                        "problems": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Problem"},
                        },
                    },
                    "required": ["error", "detail"],
                },
            },
        },
        "paths": {
            **traces_paths(),
            **_more_paths(),
            "/api/v1/events": {
                "post": {
                    "summary": "Send agent, task, HITL and React Flow canvas events",
                    "security": [{"ingestKey": []}, {"ingestKeyQuery": []}],
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": "a resend with the same key (per project, within "
                            "idempotency_window_seconds) is answered with the original id "
                            "and not appended again",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AgentEvents"}
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "accepted: held by the buffer",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "accepted": {"type": "integer"},
                                            "id": {"type": "string"},
                                            "duplicate": {"type": "boolean"},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _error("invalid events: problems by index and field"),
                        "401": _error("no ingest key"),
                        "403": _error("unknown key or origin not allowed"),
                        "413": _error("body or event count over the limit"),
                        "429": _error("project over its rate limit (see Retry-After)"),
                        "503": _error("buffer full or unavailable (see Retry-After)"),
                    },
                }
            },
            "/api/v1/agents": {
                "get": {
                    "summary": "Every agent seen (events, GenAI spans) with its current state",
                    "security": token,
                    "parameters": [project_param],
                    "responses": {
                        "200": {"description": "agents"},
                        "401": _error("no token"),
                        "403": _error("another project"),
                    },
                }
            },
            "/api/v1/agents/{agent_id}/events": {
                "get": {
                    "summary": "An agent's event history (from ClickHouse)",
                    "security": token,
                    "parameters": [
                        {
                            "name": "agent_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        project_param,
                        *time_params,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        },
                    ],
                    "responses": {
                        "200": {"description": "events, newest first"},
                        "401": _error("no token"),
                        "403": _error("another project"),
                    },
                }
            },
            "/api/v1/agents/{name}/runs": {
                "get": {
                    "summary": "An agent's runs from OpenTelemetry GenAI spans, newest first",
                    "security": token,
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        project_param,
                        *time_params,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": {"description": "runs: usage, tool calls, models, session"},
                        "400": _error("bad parameter"),
                        "401": _error("no token"),
                        "403": _error("another project"),
                    },
                }
            },
            "/api/v1/agent-runs/{run_id}": {
                "get": {
                    "summary": "One agent run's tree: model calls, tool calls, nested agents",
                    "security": token,
                    "parameters": [
                        {
                            "name": "run_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        project_param,
                    ],
                    "responses": {
                        "200": {"description": "the run with its tree"},
                        "401": _error("no token"),
                        "403": _error("another project"),
                        "404": _error("no such run"),
                    },
                }
            },
            "/api/v1/live": {
                "get": {
                    "summary": "Server-Sent Events: each stored agent event as it lands",
                    "security": token,
                    "parameters": [project_param],
                    "responses": {"200": {"description": "text/event-stream"}},
                }
            },
            "/api/v1/sessions": {
                "get": {
                    "summary": "OpenReplay sessions that started in [from, to], newest first",
                    "security": token,
                    "parameters": [
                        project_param,
                        *time_params,
                        {"name": "user_id", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": {"description": "sessions with their totals"},
                        "401": _error("no token"),
                        "403": _error("another project"),
                    },
                }
            },
            "/api/v1/sessions/{session_id}": {
                "get": {
                    "summary": "One session and its timeline (items in time order)",
                    "security": token,
                    "parameters": [
                        {
                            "name": "session_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        project_param,
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 50000},
                        },
                    ],
                    "responses": {
                        "200": {"description": "session and timeline"},
                        "401": _error("no token"),
                        "404": _error("no such session in this project"),
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "process up", "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Valkey and ClickHouse reachable, backlog under budget",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text",
                    "responses": {"200": {"description": "metrics"}},
                }
            },
        },
    }


# ---- completion: schemas, parameters, the routes not written out above --------------------
#
# Response schemas name the fields a client can rely on; answers may carry more fields
# (additionalProperties is left open). The test suite validates the document with
# openapi-spec-validator and real answers of a running server against these schemas.
# Routes added by other work (agents runs, replay, UI pages, …) go into EXTRA_OPERATIONS or
# _PATH_SCHEMAS; tests/test_openapi.py fails for any route of the app not documented here.


def _obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
NUM = {"type": "number"}
NNUM = {"type": ["number", "null"]}
BOOL = {"type": "boolean"}
ANY_OBJ = {"type": "object"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Issue": _obj(
        ("group_id", "title", "status", "count"),
        group_id=STR,
        title=STR,
        culprit=STR,
        level=STR,
        platform=STR,
        count=INT,
        count_in_range=INT,
        users=INT,
        first_seen=STR,
        last_seen=STR,
        latest_event_id=STR,
        status={"type": "string", "enum": ["unresolved", "resolved", "ignored"]},
        regressed=BOOL,
    ),
    "IssueList": _obj(("project_id", "issues"), project_id=INT, issues=_arr(_ref("Issue"))),
    "IssueDetail": _obj(
        ("project_id", "issue"),
        project_id=INT,
        issue=_ref("Issue"),
        latest_event={"anyOf": [ANY_OBJ, {"type": "null"}]},
        histogram=_obj(interval=STR, buckets=_arr(ANY_OBJ)),
        session_ids=_arr(STR),
        trace_ids=_arr(STR),
        sessions=_arr(_obj(session_id=STR, reason=STR)),
    ),
    "ErrorEvent": _obj(("project_id", "event"), project_id=INT, event=ANY_OBJ),
    "Agent": _obj(
        ("agent_id",),
        agent_id=STR,
        status=NSTR,
        current_task=NSTR,
        metrics=ANY_OBJ,
        last_heartbeat=NSTR,
        heartbeat_age_seconds=NNUM,
    ),
    "AgentList": _obj(("project_id", "agents"), project_id=INT, agents=_arr(_ref("Agent"))),
    "AgentEvent": _obj(
        ("event_uid", "type", "ts"),
        event_uid=STR,
        type=STR,
        ts=STR,
        agent_id=STR,
        session_id=STR,
        trace_id=STR,
        payload=ANY_OBJ,
    ),
    "AgentEventList": _obj(
        ("project_id", "events"), project_id=INT, agent_id=STR, events=_arr(_ref("AgentEvent"))
    ),
    "SessionList": _obj(("project_id", "sessions"), project_id=INT, sessions=_arr(ANY_OBJ)),
    "TimelineItem": _obj(
        ("ts", "kind", "source", "title"),
        ts=STR,
        kind=STR,
        source=STR,
        title=STR,
        reason=STR,
        severity=STR,
        detail=ANY_OBJ,
        ref=ANY_OBJ,
    ),
    "SessionTimeline": _obj(
        ("project_id", "session_id", "items"),
        project_id=INT,
        session_id=STR,
        session={"anyOf": [ANY_OBJ, {"type": "null"}]},
        items=_arr(_ref("TimelineItem")),
        traces=_arr(_obj(trace_id=STR, reason=STR)),
    ),
    "Replay": ANY_OBJ,
    "TraceSummary": _obj(
        ("trace_id",),
        trace_id=STR,
        start=STR,
        duration_ms=NUM,
        span_count=INT,
        error_count=INT,
        services=_arr(STR),
        root_name=STR,
        session_ids=_arr(STR),
    ),
    "TraceList": _obj(("project_id", "traces"), project_id=INT, traces=_arr(_ref("TraceSummary"))),
    "Span": _obj(
        ("span_id", "name"),
        span_id=STR,
        parent_span_id=NSTR,
        depth=INT,
        name=STR,
        service=STR,
        status=STR,
        offset_ms=NUM,
        duration_ms=NUM,
        attributes=ANY_OBJ,
    ),
    "Trace": _obj(
        ("trace_id", "spans"),
        project_id=INT,
        trace_id=STR,
        start=STR,
        duration_ms=NUM,
        span_count=INT,
        services=_arr(STR),
        sessions=_arr(_obj(session_id=STR, reason=STR)),
        error_event_ids=_arr(STR),
        spans=_arr(_ref("Span")),
    ),
    "LogList": _obj(("project_id", "logs"), project_id=INT, logs=_arr(ANY_OBJ)),
    "Artifact": _obj(
        ("url", "kind"),
        release=STR,
        url=STR,
        kind=STR,
        debug_id=STR,
        size=INT,
        uploaded_at=STR,
    ),
    "ArtifactList": _obj(
        ("project_id", "artifacts"), project_id=INT, artifacts=_arr(_ref("Artifact"))
    ),
    "UploadResult": _obj(("files",), files=_arr(_ref("Artifact"))),
    "AgentRunList": _obj(("project_id", "runs"), project_id=INT, runs=_arr(ANY_OBJ)),
    "AgentRun": ANY_OBJ,
    "SentryAnswer": _obj(id=NSTR),
    "TrackerStart": ANY_OBJ,
    "Health": _obj(("status",), status=STR),
    "Ready": _obj(("status", "checks"), status=STR, checks={"type": "object"}),
    "AdminQuery": _obj(
        ("sql",),
        sql=STR,
        params=ANY_OBJ,
        max_rows={"type": "integer", "minimum": 1, "maximum": 100000},
        timeout_seconds={"type": "number", "maximum": 300},
    ),
    "AdminRows": _obj(("rows", "truncated"), rows=_arr(ANY_OBJ), truncated=BOOL, elapsed_ms=NUM),
    "AdminInfo": _obj(("database",), database=STR, valkey_url=NSTR, pid=INT),
}

# (path, method) → schema of the 2xx answer.
_PATH_SCHEMAS: dict[tuple[str, str], str] = {
    ("/api/v1/issues", "get"): "IssueList",
    ("/api/v1/issues/{group_id}", "get"): "IssueDetail",
    ("/api/v1/issues/{group_id}", "patch"): "IssueDetail",
    ("/api/v1/errors/{event_id}", "get"): "ErrorEvent",
    ("/api/v1/agents", "get"): "AgentList",
    ("/api/v1/agents/{agent_id}/events", "get"): "AgentEventList",
    ("/api/v1/sessions", "get"): "SessionList",
    ("/api/v1/sessions/{session_id}", "get"): "SessionTimeline",
    ("/api/v1/sessions/{session_id}/replay", "get"): "Replay",
    ("/api/v1/traces", "get"): "TraceList",
    ("/api/v1/traces/{trace_id}", "get"): "Trace",
    ("/api/v1/logs", "get"): "LogList",
    ("/api/v1/sourcemaps", "get"): "ArtifactList",
    ("/api/v1/sourcemaps", "post"): "UploadResult",
    ("/api/v1/agents/{name}/runs", "get"): "AgentRunList",
    ("/api/v1/agent-runs/{run_id}", "get"): "AgentRun",
    ("/api/{project_id}/envelope/", "post"): "SentryAnswer",
    ("/api/{project_id}/store/", "post"): "SentryAnswer",
    ("/ingest/v1/web/start", "post"): "TrackerStart",
    ("/healthz", "get"): "Health",
    ("/readyz", "get"): "Ready",
    ("/api/v1/admin/query", "post"): "AdminRows",
    ("/api/v1/admin/info", "get"): "AdminInfo",
}


def _q(name: str, kind: str = "string", description: str = "", **extra: Any) -> dict[str, Any]:
    schema = {"type": kind, **extra}
    return {"name": name, "in": "query", "schema": schema, "description": description}


_WINDOW = [
    _q("from", description="ISO 8601 or epoch ms"),
    _q("to", description="ISO 8601 or epoch ms"),
]
# Query parameters the hand-written entries above do not declare.
_QUERY_PARAMS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/api/v1/issues", "get"): [
        _q("project_id", "integer"),
        *_WINDOW,
        _q("status", enum=["unresolved", "resolved", "ignored"]),
        _q("limit", "integer", minimum=1, maximum=1000),
    ],
    ("/api/v1/issues/{group_id}", "get"): [_q("project_id", "integer"), *_WINDOW],
    ("/api/v1/sessions", "get"): [
        _q("errors_only", "boolean", "only sessions with an error"),
        _q("q", description="substring of the user id, URL or user agent"),
    ],
    ("/api/v1/sourcemaps", "get"): [_q("release")],
    ("/api/v1/sourcemaps", "post"): [
        _q("url", description="raw upload: the file's URL (~/ for any scheme and host)"),
        _q("release"),
    ],
    ("/api/v1/agents/{name}/runs", "get"): [
        *_WINDOW,
        _q("limit", "integer", minimum=1, maximum=1000),
    ],
}

_JSON = "application/json"


def _ok(schema: str | None, description: str = "ok", media: str = _JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema:
        out["content"] = {media: {"schema": _ref(schema)}}
    return out


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _op(
    summary: str,
    security: list[dict[str, list[str]]],
    answers: dict[str, Any],
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": security,
        "parameters": [_path_param(p) for p in params],
        "responses": answers,
    }
    if body is not None:
        op["requestBody"] = body
    return op


_TOKEN = [{"queryToken": []}]
_ADMIN = [{"adminToken": []}]
_HTML = {"200": {"description": "HTML page", "content": {"text/html": {"schema": STR}}}}
_UI_LOGIN = [{"queryToken": []}, {"uiCookie": []}]

# Every other route of the app: (path, method) → operation.
EXTRA_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/v1/openapi.json", "get"): _op(
        "This document", [], {"200": {"description": "OpenAPI 3.1", "content": {_JSON: {}}}}
    ),
    ("/api/v1/admin/query", "post"): _op(
        "One read-only SQL statement (SELECT, WITH, SHOW, DESCRIBE, EXISTS) with readonly = 1, "
        "bounded in rows and time; unqualified tables are Weftline's database",
        _ADMIN,
        {
            "200": _ok("AdminRows", "rows (truncated: more than max_rows)"),
            "400": _error("not read-only, or ClickHouse refused it (the message)"),
            "401": _error("no admin token"),
            "403": _error("not the admin token"),
        },
        body={"required": True, "content": {_JSON: {"schema": _ref("AdminQuery")}}},
    ),
    ("/api/v1/admin/info", "get"): _op(
        "The database and the Valkey the ops commands read from",
        _ADMIN,
        {"200": _ok("AdminInfo"), "401": _error("no admin token")},
    ),
    ("/api/v1/sessions/{session_id}/replay", "get"): _op(
        "The recording as the player reads it (DOM, CSS, input, pointer, page messages)",
        _TOKEN,
        {"200": _ok("Replay"), "401": _error("no token"), "404": _error("no recording")},
        ("session_id",),
    ),
    ("/api/v1/agents/{name}/runs", "get"): _op(
        "An agent's runs (GenAI agent spans), newest first",
        _TOKEN,
        {"200": _ok("AgentRunList"), "401": _error("no token")},
        ("name",),
    ),
    ("/api/v1/agent-runs/{run_id}", "get"): _op(
        "One agent run: its spans as a tree",
        _TOKEN,
        {"200": _ok("AgentRun"), "401": _error("no token"), "404": _error("unknown run")},
        ("run_id",),
    ),
    ("/ingest/v1/web/tags", "get"): _op(
        "OpenReplay tracker: the project's tag watch list (always empty here)",
        [],
        {"200": {"description": "tags", "content": {_JSON: {"schema": ANY_OBJ}}}},
    ),
    ("/ingest/v1/web/images", "post"): _op(
        "OpenReplay tracker: canvas images (accepted and discarded)",
        [],
        {"200": {"description": "ok"}, "401": _error("bad session token")},
    ),
    ("/ingest/v1/web/conditions/{project_id}", "get"): _op(
        "OpenReplay tracker: conditional recording (none configured)",
        [],
        {"200": {"description": "conditions", "content": {_JSON: {"schema": ANY_OBJ}}}},
        ("project_id",),
    ),
    ("/ingest/v1/web/not-started", "post"): _op(
        "OpenReplay tracker: a session that did not start (counted)", [], {"200": _ok(None)}
    ),
    ("/ingest/v1/web/feature-flags", "post"): _op(
        "OpenReplay tracker: feature flags (none)",
        [],
        {"200": {"description": "flags", "content": {_JSON: {"schema": ANY_OBJ}}}},
    ),
    ("/ingest/{rest}", "get"): _op(
        "Any other tracker URL: 404 with the reason",
        [],
        {"404": _error("unknown endpoint")},
        ("rest",),
    ),
    ("/ingest/{rest}", "post"): _op(
        "Any other tracker URL: 404 with the reason",
        [],
        {"404": _error("unknown endpoint")},
        ("rest",),
    ),
    ("/ui", "get"): _op("Redirect to /ui/", [], {"307": {"description": "to /ui/"}}),
    ("/ui/login", "get"): _op("Debugging view: the login form", [], _HTML),
    ("/ui/login", "post"): _op(
        "Debugging view: log in with a query token (form field token; sets a cookie)",
        [],
        {"303": {"description": "to the page asked for"}, **_HTML},
    ),
    ("/ui/logout", "get"): _op("Debugging view: log out", [], {"303": {"description": "out"}}),
    ("/ui/issues/{group_id}/status", "post"): _op(
        "Debugging view: resolve, ignore or unresolve an issue (form field status)",
        _UI_LOGIN,
        {"303": {"description": "back to the issue"}, "400": {"description": "bad status"}},
        ("group_id",),
    ),
    ("/ui/static/{name}", "get"): _op(
        "Debugging view: its ES modules and CSS",
        [],
        {"200": {"description": "file"}, "404": {"description": "unknown file"}},
        ("name",),
    ),
}
_UI_PAGES = {
    "/ui/": "sessions",
    "/ui/sessions/{session_id}": "one session's timeline",
    "/ui/sessions/{session_id}/replay": "one session's replay",
    "/ui/issues": "issues",
    "/ui/issues/{group_id}": "one issue",
    "/ui/traces": "traces",
    "/ui/traces/{trace_id}": "one trace",
    "/ui/agents": "agents",
    "/ui/agents/{name}": "one agent",
    "/ui/agent-runs/{run_id}": "one agent run",
}
for _path, _what in _UI_PAGES.items():
    EXTRA_OPERATIONS[(_path, "get")] = _op(
        f"Debugging view: {_what} (HTML)",
        _UI_LOGIN,
        {**_HTML, "303": {"description": "to /ui/login without a token"}},
        tuple(p.strip("{}") for p in _path.split("/") if p.startswith("{")),
    )
# The Sentry SDKs post to the DSN's paths with and without the trailing slash.
_SLASHLESS = {"/api/{project_id}/envelope": "/api/{project_id}/envelope/"}
_SLASHLESS["/api/{project_id}/store"] = "/api/{project_id}/store/"
# Browsers' CORS preflights, answered where browser clients post.
CORS_PATHS = (
    "/api/v1/events",
    "/ingest/v1/web/start",
    "/ingest/v1/web/i",
    "/ingest/v1/web/tags",
    "/ingest/v1/web/images",
    "/ingest/v1/web/conditions/{project_id}",
    "/ingest/v1/web/not-started",
    "/ingest/v1/web/feature-flags",
    "/ingest/{rest}",
    "/v1/traces",
    "/v1/logs",
    "/v1/metrics",
    "/api/{project_id}/envelope/",
    "/api/{project_id}/envelope",
    "/api/{project_id}/store/",
    "/api/{project_id}/store",
)


def _complete(doc: dict[str, Any]) -> dict[str, Any]:
    import copy

    paths = doc["paths"]
    doc["components"]["schemas"].update(SCHEMAS)
    doc["components"]["securitySchemes"]["adminToken"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "admin_token, or <data_dir>/admin-token",
    }
    doc["components"]["securitySchemes"]["uiCookie"] = {
        "type": "apiKey",
        "in": "cookie",
        "name": "weftline_token",
    }
    for (path, method), op in EXTRA_OPERATIONS.items():
        paths.setdefault(path, {}).setdefault(method, op)
    for short, full in _SLASHLESS.items():
        paths.setdefault(short, {})["post"] = copy.deepcopy(paths[full]["post"])
        _PATH_SCHEMAS[(short, "post")] = _PATH_SCHEMAS[(full, "post")]
    for (path, method), extra in _QUERY_PARAMS.items():
        op = paths[path][method]
        have = {(p["name"], p["in"]) for p in op.setdefault("parameters", [])}
        op["parameters"] += [p for p in extra if (p["name"], p["in"]) not in have]
    for (path, method), schema in _PATH_SCHEMAS.items():
        op = paths.get(path, {}).get(method)
        if op is None:
            continue
        for code, answer in op["responses"].items():
            if code.startswith("2") and "content" not in answer:
                answer["content"] = {_JSON: {"schema": _ref(schema)}}
    for path in CORS_PATHS:
        paths.setdefault(path, {})["options"] = {
            "summary": "CORS preflight (browser clients)",
            "security": [],
            "parameters": [
                _path_param(p.strip("{}")) for p in path.split("/") if p.startswith("{")
            ],
            "responses": {"204": {"description": "allowed methods and headers"}},
        }
    # Path parameters the hand-written entries left out (e.g. Sentry's project_id).
    for path, ops in paths.items():
        names = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        for op in ops.values():
            have = {p["name"] for p in op.setdefault("parameters", []) if p["in"] == "path"}
            op["parameters"] += [_path_param(n) for n in names if n not in have]
    return doc
