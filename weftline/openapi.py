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
                    "summary": "Current state of each agent (from Valkey)",
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
