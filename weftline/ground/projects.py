"""Who is calling: the project behind an ingest key or a query token, and the JSON error
the API routes answer with when the caller may not."""

from __future__ import annotations

import hmac
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from weftline.ground.config import ProjectConfig
from weftline.ground.rejections import Reason

INGEST_KEY_HEADER = "x-weftline-key"
log = logging.getLogger("weftline.api")


class Projects:
    def __init__(self, projects: list[ProjectConfig]) -> None:
        self._by_key = {p.public_key: p for p in projects}
        self._by_id = {p.id: p for p in projects}
        self._tokens = [(p.query_token.encode(), p) for p in projects]

    def by_key(self, key: str | None) -> ProjectConfig | None:
        return self._by_key.get(key) if key else None

    def by_id(self, project_id: int) -> ProjectConfig | None:
        return self._by_id.get(project_id)

    def by_token(self, token: str | None) -> ProjectConfig | None:
        if not token:
            return None
        raw = token.encode()
        for expected, project in self._tokens:
            if hmac.compare_digest(expected, raw):
                return project
        return None

    def __iter__(self):
        return iter(self._by_id.values())


def ingest_key(request: Request) -> str | None:
    """The public ingest key, from the `X-Weftline-Key` header or the `key` query parameter
    (browsers sending with `navigator.sendBeacon` cannot set headers)."""
    return request.headers.get(INGEST_KEY_HEADER) or request.query_params.get("key")


UI_COOKIE = "weftline_token"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def bearer_token(request: Request) -> str | None:
    """The `Authorization: Bearer` token; for reads, the UI's login cookie too (the UI's
    scripts read the API with it). A write never takes the cookie: a page of another
    port or subdomain of the same site gets it sent along (SameSite only stops other
    sites), so a cookie-authenticated write would be a cross-site request forgery."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    if request.method in SAFE_METHODS:
        return request.cookies.get(UI_COOKIE)
    return None


def same_origin(request: Request) -> bool:
    """A form POST of the UI's own pages: its Origin (or, failing that, Referer) is this
    server's. No header at all is a non-browser client, which forges nothing."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        parts = referer.split("/", 3)
        origin = "/".join(parts[:3]) if len(parts) >= 3 else referer
    host = request.headers.get("host", "")
    return origin in (f"{request.url.scheme}://{host}", f"http://{host}", f"https://{host}")


def storage_unavailable(e: Exception) -> ApiError:
    """What a read route answers when ClickHouse fails: 503 with a plain message. The
    storage's own text (SQL, settings, values) goes to the log, never to the caller."""
    log.warning("read query failed: %s", e)
    return ApiError(
        Reason.STORAGE_UNAVAILABLE,
        "storage is unavailable; retry later",
        headers={"retry-after": "5"},
    )


class ApiError(Exception):
    def __init__(
        self,
        reason: Reason,
        detail: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status if status is not None else reason.status
        self.error = reason
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": self.error, "detail": self.detail},
            status_code=self.status,
            headers=self.headers,
        )


def authorize(request: Request, projects: Projects) -> ProjectConfig:
    """The project the token belongs to; `project_id`, when given, must be that project."""
    project = projects.by_token(bearer_token(request))
    if project is None:
        raise ApiError(Reason.UNAUTHORIZED, "send the project's query token as a Bearer token")
    raw = request.query_params.get("project_id")
    if raw is not None:
        if not raw.isdigit():
            raise ApiError(Reason.BAD_PARAMETER, "project_id must be a number")
        if int(raw) != project.id:
            raise ApiError(Reason.FORBIDDEN, f"this token cannot read project {raw}")
    return project
