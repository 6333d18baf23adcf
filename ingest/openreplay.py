"""The OpenReplay tracker's ingest: `ingestPoint` = `http://HOST:PORT/ingest`.

What `@openreplay/tracker` 19.x calls (reference §3): `POST /v1/web/start` (JSON),
`POST /v1/web/i` (binary batches), `GET /v1/web/tags`; and, for canvas, conditional
recording and older trackers, `/v1/web/images`, `/v1/web/conditions/{id}`,
`/v1/web/not-started`, `/v1/web/feature-flags`. Every answer carries CORS headers,
preflights included, so the browser console shows no CORS error.

The edge only authenticates, bounds and enqueues: a start becomes one `start` entry
and a batch one `batch` entry on `wl:in:replay`, each with the session's claims.
Decoding is the worker's job. The tracker keeps one batch in flight, ignores
Retry-After and stops recording a page after ~10 failed retries, so the replay
stream has its own, larger backlog budget (`backlog_budget.replay`).

When even that budget is exceeded the edge answers 503 (reason `backlog_full`):
- on `/v1/web/i` the tracker retries the identical batch 10 more times, 250 ms ×
  attempt apart (~13.75 s in all); if the backlog drains meanwhile nothing is lost,
  otherwise it stops recording that page for the rest of its life (the next page
  load starts again, continuing the session);
- on `/v1/web/start` the tracker does not retry: that page load is not recorded.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.ground.config import ProjectConfig
from weftline.ground.metrics import REPLAY_SESSIONS_STARTED
from weftline.ground.projects import bearer_token
from weftline.ground.rejections import Reason
from weftline.ingest.cors import add_cors, origin_allowed, preflight
from weftline.ingest.edge import Edge, Rejected, rejection_response
from weftline.ingest.limits import read_body, read_decoded_body
from weftline.ingest.openreplay_token import SessionClaims, TokenSigner, new_session_id

KIND = "replay"
PREFIX = "/ingest"
START_BODY_LIMIT = 64 * 1024
DATA_TYPES = frozenset({"player", "assets", "devtools", "analytics", "visual"})
USER_UUID_RE = re.compile(r"^[A-Za-z0-9-]{8,64}$")
BATCH_HEADER = 0x51  # BatchMetadata(81): every 19.x body starts with it
METHODS = "POST, GET, OPTIONS"
# Start-request keys worth keeping (reference §4.1); anything else is dropped.
START_KEYS = (
    "userUUID",
    "userID",
    "revID",
    "trackerVersion",
    "isSnippet",
    "timestamp",
    "bufferDiff",
    "deviceMemory",
    "jsHeapSizeLimit",
    "timezone",
    "width",
    "height",
    "referrer",
    "condition",
    "assistOnly",
)


def _cors(response: Response, request: Request) -> Response:
    """Like the spine's add_cors, and also for requests without Origin (file:// pages
    send `null`), since credentials are never involved."""
    add_cors(response, request)
    response.headers.setdefault("access-control-allow-origin", "*")
    return response


MIN_CLOCK_SKEW_MS = 2000


class OpenReplayIngest:
    def __init__(self, edge: Edge, secret: str) -> None:
        self.edge = edge
        self.cfg = edge.settings.openreplay
        self.signer = TokenSigner(secret)

    def routes(self) -> list[Route]:
        web = f"{PREFIX}/v1/web"
        return [
            Route(f"{web}/start", self.start, methods=["POST", "OPTIONS"]),
            Route(f"{web}/i", self.batch, methods=["POST", "OPTIONS"]),
            Route(f"{web}/tags", self.tags, methods=["GET", "OPTIONS"]),
            Route(f"{web}/images", self.images, methods=["POST", "OPTIONS"]),
            Route(f"{web}/conditions/{{project_id}}", self.conditions, methods=["GET", "OPTIONS"]),
            Route(f"{web}/not-started", self.not_started, methods=["POST", "OPTIONS"]),
            Route(f"{web}/feature-flags", self.feature_flags, methods=["POST", "OPTIONS"]),
            Route(PREFIX + "/{rest:path}", self.unknown, methods=["GET", "POST", "OPTIONS"]),
        ]

    # --- helpers -----------------------------------------------------------------

    def _project_for_token(self, request: Request) -> tuple[ProjectConfig, SessionClaims]:
        """A batch's session from its Bearer token; 401 makes the tracker drop the batch
        and start again (a new /start carrying the old token), so it is kept for tokens
        that can never work: missing, forged, expired, or of a removed project."""
        claims, verdict = self.signer.verify(bearer_token(request))
        if claims is None or verdict != "ok":
            raise Rejected(
                Reason(f"token_{verdict}"), f"session token is {verdict.replace('_', ' ')}"
            )
        project = self.edge.projects.by_id(claims.project_id)
        if project is None:
            raise Rejected(Reason.TOKEN_UNKNOWN_PROJECT, "the token's project no longer exists")
        if not origin_allowed(project, request.headers.get("origin")):
            raise Rejected(Reason.ORIGIN_NOT_ALLOWED, "origin not in allowed_origins")
        return project, claims

    async def _read(self, request: Request, limit: int) -> bytes:
        return await read_decoded_body(request, self.edge.settings.max_body_bytes, limit)

    # --- routes ------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        try:
            body = await self._read(request, START_BODY_LIMIT)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise Rejected(Reason.INVALID_JSON, f"start body is not JSON: {e}") from None
            if not isinstance(doc, dict):
                raise Rejected(Reason.INVALID_JSON, "start body must be a JSON object")
            key = doc.get("projectKey")
            if not isinstance(key, str) or not key:
                raise Rejected(Reason.MISSING_KEY, "projectKey: send the project's public key")
            project = self.edge.projects.by_key(key)
            if project is None:
                raise Rejected(Reason.UNKNOWN_KEY, "no project has this projectKey")
            if not origin_allowed(project, request.headers.get("origin")):
                raise Rejected(Reason.ORIGIN_NOT_ALLOWED, "origin not in allowed_origins")
            self.edge.check_rate(project)
            return await self._start_session(request, project, doc)
        except Rejected as err:
            return _cors(rejection_response(KIND, err), request)

    async def _start_session(
        self, request: Request, project: ProjectConfig, doc: dict[str, Any]
    ) -> Response:
        now = int(time.time() * 1000)
        client_ts = doc.get("timestamp")
        delay = now - int(client_ts) if isinstance(client_ts, int | float) and client_ts else 0
        # The difference also holds the start request's latency (tens to hundreds of ms).
        # Correcting by it would put every tracker item that much later than the browser's
        # own Sentry events and OTel spans, which use the device clock: only a real clock
        # skew is corrected, as Sentry does with events.
        if abs(delay) < MIN_CLOCK_SKEW_MS:
            delay = 0
        old = doc.get("token") if isinstance(doc.get("token"), str) else None
        prev, verdict = self.signer.verify(old, now)
        # A valid token of this project continues its session (reload, new tab, restart
        # after a 401 on a token that has since been re-signed); anything else starts fresh.
        continued = prev is not None and verdict == "ok" and prev.project_id == project.id
        if continued:
            assert prev is not None
            sid, started, expires = prev.session_id, prev.started_ms, prev.expires_ms
        else:
            sid, started = new_session_id(now), now
            expires = now + self.cfg.session_max_seconds * 1000
        claims = SessionClaims(sid, project.id, started, expires, delay)
        user_uuid = doc.get("userUUID")
        if not isinstance(user_uuid, str) or not USER_UUID_RE.match(user_uuid):
            user_uuid = str(uuid.uuid4())
        if not doc.get("doNotRecord"):
            meta = {k: doc[k] for k in START_KEYS if k in doc}
            meta["userUUID"] = user_uuid
            await self.edge.enqueue(
                KIND,
                project,
                request,
                orjson.dumps(meta),
                1,
                extra={
                    "t": "start",
                    "sid": sid,
                    "started_at": started,
                    "delay": delay,
                    "continued": int(continued),
                },
                shard_key=str(sid),  # one session, one stream (sharded mode)
            )
            REPLAY_SESSIONS_STARTED.labels("continued" if continued else "new").inc()
        answer = {
            "token": self.signer.issue(claims),
            "userUUID": user_uuid,
            "sessionID": sid,  # a string: the tracker rejects a JSON number
            "projectID": str(project.id),
            "startTimestamp": started,
            "timestamp": 0,
            "delay": delay,
            "beaconSizeLimit": self.cfg.beacon_size_limit,
            "compressionThreshold": self.cfg.compression_threshold,
            "protocolVersion": self.cfg.protocol_version,
            "canvasEnabled": False,
        }
        return _cors(JSONResponse(answer), request)

    async def batch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        try:
            project, claims = self._project_for_token(request)
            self.edge.check_rate(project)
            body = await self._read(request, self.cfg.max_batch_bytes)
            if not body or body[0] != BATCH_HEADER:
                raise Rejected(Reason.BAD_BATCH, "a batch body starts with BatchMetadata (type 81)")
            data_type = request.headers.get("datatype", "").strip().lower()
            split = request.query_params.get("split")
            if split is not None and (
                not split.isdigit()
                or not 0 < int(split) < len(body)
                or body[int(split)] != BATCH_HEADER
            ):
                raise Rejected(Reason.BAD_SPLIT, "split must point at the second batch header")
            await self.edge.enqueue(
                KIND,
                project,
                request,
                body,
                1,
                extra={
                    "t": "batch",
                    "sid": claims.session_id,
                    "started_at": claims.started_ms,
                    "delay": claims.delay_ms,
                    "dt": data_type if data_type in DATA_TYPES else "",
                    "batch": request.query_params.get("batch", "")[:120],
                },
                shard_key=str(claims.session_id),  # one session, one stream (sharded mode)
            )
        except Rejected as err:
            return _cors(rejection_response(KIND, err), request)
        return _cors(Response(status_code=200), request)

    async def tags(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        return _cors(JSONResponse({"tags": []}), request)

    async def images(self, request: Request) -> Response:
        """Canvas frames: never enabled by our start answer; accepted and dropped so an
        old tracker that sends them anyway does not retry forever."""
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        try:
            self._project_for_token(request)
            await read_body(request, self.edge.settings.max_body_bytes)
        except Rejected as err:
            return _cors(rejection_response(KIND, err), request)
        return _cors(Response(status_code=200), request)

    async def conditions(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        return _cors(JSONResponse({"conditions": []}), request)

    async def not_started(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        return _cors(JSONResponse({}), request)

    async def feature_flags(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        return _cors(JSONResponse({"flags": []}), request)

    async def unknown(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request, METHODS)
        err = Rejected(Reason.UNKNOWN_ENDPOINT, f"no tracker endpoint at {request.url.path}")
        return _cors(rejection_response(KIND, err), request)
