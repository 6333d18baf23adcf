"""CORS for browser clients posting to ingest endpoints.

A preflight carries no credentials, so it is answered for any origin; the real
request is then checked against the project's `allowed_origins`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from weftline.ground.config import ProjectConfig

ALLOW_HEADERS = (
    "authorization, content-type, content-encoding, x-weftline-key, x-sentry-auth, "
    "datatype, traceparent, tracestate, baggage, sentry-trace"
)
EXPOSE_HEADERS = "retry-after, x-sentry-rate-limits"


def preflight(request: Request, methods: str = "POST, OPTIONS") -> Response:
    origin = request.headers.get("origin", "*")
    return Response(
        status_code=204,
        headers={
            "access-control-allow-origin": origin,
            "access-control-allow-methods": methods,
            "access-control-allow-headers": request.headers.get(
                "access-control-request-headers", ALLOW_HEADERS
            ),
            "access-control-max-age": "86400",
            "vary": "Origin",
        },
    )


def origin_allowed(project: ProjectConfig | None, origin: str | None) -> bool:
    if origin is None or project is None:
        return True
    allowed = project.allowed_origins
    return "*" in allowed or origin in allowed


def add_cors(response: Response, request: Request) -> Response:
    origin = request.headers.get("origin")
    if origin:
        response.headers["access-control-allow-origin"] = origin
        response.headers["access-control-expose-headers"] = EXPOSE_HEADERS
        response.headers["vary"] = "Origin"
    return response
