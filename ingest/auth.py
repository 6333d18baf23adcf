"""Who is calling: the project behind an ingest key or a query token."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from weftline.config import ProjectConfig

INGEST_KEY_HEADER = "x-weftline-key"


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


def bearer_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get("weftline_token")
