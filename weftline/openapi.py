"""The OpenAPI document served at /api/v1/openapi.json."""

from __future__ import annotations

from functools import cache
from typing import Any

from dashboards.traces_api import openapi_paths as traces_paths
from ingest.agent_schema import EVENTS, Problem
from weftline import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


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
