"""Sentry ingest: `POST /api/{project_id}/envelope/` and the legacy `/store/`.

What happens before answering, in Relay's order and with Relay's answers (so the
unmodified SDKs behave as with sentry.io):
- auth from `X-Sentry-Auth` / `Authorization: Sentry …`, the `sentry_key` query
  parameter (browser), or the envelope header `dsn` (browser `tunnel`): none → 401,
  several → 401, a malformed key → 401, an unknown key or another project's → 403;
- nothing is decompressed or parsed before the key is checked: a key sent only in the
  envelope header (`dsn`) is read from the first line, inflating at most
  `HEADER_LINE_BYTES` of the body;
- body size, then decompression (br/gzip/deflate) with a bound → 413 / 400, in a thread
  when large; parsing too (a body of newlines must not hold the event loop);
- at most `MAX_ITEMS` items per envelope → 413;
- framing and per-item limits (Relay's defaults) → 400 / 413;
- the project's rate limit and the buffer budget → 429 with `Retry-After` and
  `X-Sentry-Rate-Limits` (whole seconds, every category but `internal`, so the SDK
  still sends the client report that says what it dropped);
- the decompressed envelope is enqueued to `wl:in:{sentry}`; 200 `{"id": …}` only
  once Valkey holds it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.ground.config import PUBLIC_KEY_RE, ProjectConfig
from weftline.ground.metrics import SENTRY_ENCODINGS
from weftline.ground.rejections import Reason
from weftline.ground.sentry_envelope import (
    CONTAINER_TYPES,
    MAX_HEADER_BYTES,
    Envelope,
    EnvelopeError,
    container_items,
    item_json,
    loads_json,
    normalize_event_id,
    parse_envelope,
    serialize_envelope,
    skip_blank,
)
from weftline.ingest.cors import add_cors, origin_allowed, preflight
from weftline.ingest.edge import Edge, Rejected, rejection_response
from weftline.ingest.limits import (
    decompress_off_loop,
    first_line,
    off_loop,
    read_body,
    read_decoded_body,
)

KIND = "sentry"
PROTOCOL_VERSION = 7
MiB = 1024 * 1024

# Relay's per-item defaults (relay-config `Limits`), capped by the envelope bound.
ITEM_LIMITS = {
    "event": 1 * MiB,
    "transaction": 1 * MiB,
    "feedback": 1 * MiB,
    "user_report": 1 * MiB,
    "span": 10 * MiB,
    "log": 2 * MiB,
    "trace_metric": 1 * MiB,
    "check_in": 100 * 1024,
    "client_report": 100 * 1024,
    "sessions": 10 * MiB,
    "session": 10 * MiB,
    "replay_recording": 10 * MiB,
    "replay_event": 1 * MiB,
}
MAX_ATTACHMENTS = 30
# No SDK sends more than a few dozen items in one envelope; each costs a row and a parse
# (the parser itself stops at sentry_envelope.MAX_ITEMS).
MAX_ITEMS = 1000
# The envelope header line (dsn, sdk, trace context) is far smaller; see MAX_HEADER_BYTES.
HEADER_LINE_BYTES = MAX_HEADER_BYTES
# Bodies above this are parsed in a thread (the loop keeps answering between GIL switches).
INLINE_PARSE_BYTES = 64 * 1024
MAX_SESSIONS = 100
EVENT_TYPES = frozenset({"event", "transaction", "feedback"})

# Categories named in X-Sentry-Rate-Limits when a whole project is limited. Not
# `internal` (client reports), which Relay never limits: the report of what the SDK
# dropped must still get through.
LIMITED_CATEGORIES = (
    "default;error;transaction;span;security;attachment;attachment_item;session;"
    "profile;profile_chunk;replay;feedback;monitor;log_item;log_byte;trace_metric"
)


@dataclass(frozen=True)
class SentryAuth:
    key: str | None
    version: str | None = None
    client: str | None = None
    source: str = ""


def parse_auth_header(value: str) -> dict[str, str] | None:
    """`Sentry sentry_key=…, sentry_version=7, …` → its pairs; None if not Sentry auth."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "sentry":
        return None
    out: dict[str, str] = {}
    for part in rest.split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            out[k.strip().lower()] = v.strip()
    return out


def request_auth(request: Request) -> SentryAuth:
    found: list[SentryAuth] = []
    for header in ("x-sentry-auth", "authorization"):
        raw = request.headers.get(header)
        if raw is None:
            continue
        pairs = parse_auth_header(raw)
        if pairs is None:
            if header == "x-sentry-auth":
                raise Rejected(Reason.BAD_AUTH, "X-Sentry-Auth must start with 'Sentry '")
            continue
        found.append(
            SentryAuth(
                pairs.get("sentry_key"),
                pairs.get("sentry_version"),
                pairs.get("sentry_client"),
                header,
            )
        )
    q = request.query_params
    if "sentry_key" in q:
        found.append(
            SentryAuth(q.get("sentry_key"), q.get("sentry_version"), q.get("sentry_client"), "q")
        )
    if len(found) > 1:
        raise Rejected(Reason.MULTIPLE_AUTH, "multiple authorization payloads detected")
    return found[0] if found else SentryAuth(None)


def dsn_parts(dsn: str) -> tuple[str, str]:
    """(public key, project id) of a DSN; 401 when it is not a DSN."""
    try:
        parts = urlsplit(dsn)
        key = parts.username or ""
        project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    except ValueError:
        key, project = "", ""
    if not key or not project.isdigit():
        raise Rejected(Reason.BAD_AUTH, "the envelope header dsn is not a DSN")
    return key, project


def check_version(version: str | None) -> None:
    if version is None or version == "":
        return
    try:
        v = int(version)
    except ValueError:
        raise Rejected(Reason.BAD_VERSION, f"bad sentry_version {version!r}") from None
    if v > PROTOCOL_VERSION:
        raise Rejected(Reason.UNSUPPORTED_VERSION, f"unsupported protocol version {v}")


def resolve_project(edge: Edge, key: str | None, path_project: int) -> ProjectConfig:
    if not key:
        raise Rejected(
            Reason.MISSING_AUTH,
            "missing authorization information: send X-Sentry-Auth or ?sentry_key=",
        )
    if not PUBLIC_KEY_RE.match(key):
        raise Rejected(Reason.BAD_KEY, "bad sentry DSN public key: expected 32 lowercase hex")
    project = edge.projects.by_key(key)
    if project is None:
        raise Rejected(Reason.UNKNOWN_KEY, "no project has this public key")
    if project.id != path_project:
        raise Rejected(
            Reason.PROJECT_MISMATCH, f"this key belongs to another project than {path_project}"
        )
    return project


def check_items(env: Envelope, limit: int) -> None:
    """Relay's framing and per-item limits; raises 400/413."""
    events = attachments = 0
    if len(env.items) > MAX_ITEMS:
        raise Rejected(
            Reason.TOO_MANY_ITEMS,
            f"{len(env.items)} items in one envelope; the limit is {MAX_ITEMS}",
        )
    for i, item in enumerate(env.items):
        t = item.type
        cap = min(ITEM_LIMITS.get(t, limit), limit)
        if len(item.payload) > cap:
            raise Rejected(
                Reason.ITEM_TOO_LARGE,
                f"envelope exceeded size limits for type '{t}': item {i} is "
                f"{len(item.payload)} bytes, the limit is {cap}",
            )
        if t in EVENT_TYPES:
            events += 1
            item_json(item, i)
        elif t in CONTAINER_TYPES:
            container_items(item, i)
        elif t == "attachment":
            attachments += 1
        elif t == "sessions":
            agg = item_json(item, i).get("aggregates")
            if isinstance(agg, list) and len(agg) > MAX_SESSIONS:
                raise Rejected(Reason.TOO_MANY_SESSIONS, f"more than {MAX_SESSIONS} aggregates")
        elif t == "integration":
            raise Rejected(Reason.INTERNAL_ITEM_TYPE, "item type 'integration' is Relay-internal")
    if events > 1:
        raise Rejected(Reason.DUPLICATE_EVENT, "an envelope carries at most one event item")
    if attachments > MAX_ATTACHMENTS:
        raise Rejected(Reason.TOO_MANY_ATTACHMENTS, f"more than {MAX_ATTACHMENTS} attachments")


def rate_limited(err: Rejected) -> Rejected:
    """A 429/backlog rejection in Sentry's terms: whole seconds, per category."""
    secs = err.headers.get("retry-after", "60")
    return Rejected(
        err.reason,
        err.message,
        status=429,
        headers={
            "retry-after": secs,
            "x-sentry-rate-limits": f"{secs}:{LIMITED_CATEGORIES}:project:{err.reason}",
        },
    )


class SentryIngest:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        s = edge.settings
        self.max_body = s.max_body_bytes
        # Envelopes compress ~5-10x; bound the decompressed size, not just the wire size.
        self.max_envelope = max(s.max_body_bytes * 4, 20 * MiB)

    def routes(self) -> list[Route]:
        m = ["POST", "OPTIONS"]
        return [
            Route("/api/{project_id}/envelope/", self.envelope, methods=m),
            Route("/api/{project_id}/envelope", self.envelope, methods=m),
            Route("/api/{project_id}/store/", self.store, methods=m),
            Route("/api/{project_id}/store", self.store, methods=m),
        ]

    @staticmethod
    def _encoding(request: Request) -> str:
        enc = request.headers.get("content-encoding", "")
        if enc.strip().lower() in ("utf-8", "utf8"):  # sentry-java sends this; it means none
            enc = ""
        return enc

    async def _body(self, request: Request) -> bytes:
        body = await read_decoded_body(
            request, self.max_body, self.max_envelope, self._encoding(request)
        )
        if not body.strip():
            raise Rejected(Reason.EMPTY_BODY, "empty request body")
        return body

    @staticmethod
    def _header_line(raw: bytes, encoding: str) -> dict:
        """The envelope header of a body still compressed, from its first line alone; {}
        when it is not a JSON object (then the request has no key and gets 401)."""
        line = first_line(raw, encoding, HEADER_LINE_BYTES).strip()
        try:
            obj = orjson.loads(line) if line else {}
        except orjson.JSONDecodeError:
            return {}
        return obj if isinstance(obj, dict) else {}

    async def _parse(self, body: bytes) -> Envelope:
        def parse() -> Envelope:
            if skip_blank(body, 0) >= len(body):
                raise Rejected(Reason.EMPTY_BODY, "empty request body")
            try:
                env = parse_envelope(body)
                check_items(env, self.max_envelope)
            except EnvelopeError as e:
                raise Rejected(Reason.INVALID_ENVELOPE, f"invalid event envelope: {e}") from None
            return env

        if len(body) <= INLINE_PARSE_BYTES:
            return parse()
        return await off_loop(parse)

    @staticmethod
    def _path_project(request: Request) -> str:
        raw = request.path_params["project_id"]
        if not re.fullmatch(r"\d{1,10}", raw):
            raise Rejected(Reason.BAD_PROJECT_ID, f"project id {raw!r} is not a number")
        return raw

    def _project(
        self, request: Request, env: Envelope | None, headers: dict | None = None
    ) -> ProjectConfig:
        raw = self._path_project(request)
        auth = request_auth(request)
        check_version(auth.version)
        key = auth.key
        if env is not None:
            headers = env.headers
        dsn = headers.get("dsn") if headers is not None else None
        if isinstance(dsn, str) and dsn:
            dkey, dproject = dsn_parts(dsn)
            if key is None:
                key = dkey
            elif dkey != key or int(dproject) != int(raw):
                raise Rejected(Reason.AUTH_MISMATCH, "header mismatch between envelope and request")
        project = resolve_project(self.edge, key, int(raw))
        if not origin_allowed(project, request.headers.get("origin")):
            raise Rejected(Reason.ORIGIN_NOT_ALLOWED, "origin not in the project's allowed_origins")
        return project

    async def _accept(
        self, request: Request, project: ProjectConfig, env: Envelope, body: bytes
    ) -> Response:
        if not env.items:
            # Nothing to store (Relay answers such an envelope 200 too): no entry of
            # blank lines in the buffer.
            return JSONResponse({"id": env.event_id} if env.event_id else {})
        if any(item.category != "internal" for item in env.items):
            try:
                self.edge.check_rate(project)
            except Rejected as e:
                raise rate_limited(e) from None
        auth = request_auth(request)
        extra: dict[str, str | bytes | int] = {"client": (auth.client or "")[:200]}
        try:
            await self.edge.enqueue(KIND, project, request, body, len(env.items), extra)
        except Rejected as e:
            if e.reason in (Reason.BACKLOG_FULL, Reason.DISK_RESERVE):
                raise rate_limited(e) from None
            raise
        enc = request.headers.get("content-encoding", "").strip().lower() or "identity"
        known = enc in ("gzip", "x-gzip", "br", "deflate")
        SENTRY_ENCODINGS.labels(enc if known else "identity").inc()
        event_id = env.event_id
        return JSONResponse({"id": event_id} if event_id else {})

    async def envelope(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request)
        try:
            # Request auth first, so a bad key never costs a body read. A key only in the
            # envelope's `dsn` header is read from the first line (a bounded inflate)
            # before anything else is decompressed or parsed.
            if request_auth(request).key is not None:
                self._project(request, None)
            else:
                self._path_project(request)
            enc = self._encoding(request)
            raw = await read_body(request, self.max_body)
            if request_auth(request).key is None:
                self._project(request, None, self._header_line(raw, enc))
            body = await decompress_off_loop(raw, enc, self.max_envelope)
            env = await self._parse(body)
            project = self._project(request, env)
            response = await self._accept(request, project, env, body)
        except Rejected as err:
            return add_cors(rejection_response(KIND, err), request)
        return add_cors(response, request)

    async def store(self, request: Request) -> Response:
        """Legacy: one JSON event per request (or an envelope, by content type)."""
        if request.method == "OPTIONS":
            return preflight(request)
        try:
            self._project(request, None)
            body = await self._body(request)
            ctype = request.headers.get("content-type", "")
            try:
                if "x-sentry-envelope" in ctype:
                    env = await self._parse(body)
                else:
                    if len(body) > ITEM_LIMITS["event"]:
                        raise Rejected(Reason.ITEM_TOO_LARGE, "event exceeds 1 MiB")
                    event = loads_json(body, "event")
                    if not isinstance(event, dict):
                        raise Rejected(Reason.INVALID_EVENT, "the event is not a JSON object")
                    event_id = normalize_event_id(event.get("event_id")) or uuid.uuid4().hex
                    itype = "transaction" if event.get("type") == "transaction" else "event"
                    body = serialize_envelope(
                        {"event_id": event_id}, [({"type": itype}, orjson.dumps(event))]
                    )
                    env = parse_envelope(body)
                check_items(env, self.max_envelope)
            except EnvelopeError as e:
                raise Rejected(Reason.INVALID_ENVELOPE, f"invalid event: {e}") from None
            project = self._project(request, env)
            response = await self._accept(request, project, env, body)
        except Rejected as err:
            return add_cors(rejection_response(KIND, err), request)
        return add_cors(response, request)
