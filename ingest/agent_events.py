"""`POST /api/v1/events`: the app's own agent, task, HITL and canvas events.

A JSON array (or one object, or NDJSON) is validated whole: one bad event
rejects the request with every problem listed by index and field, and nothing
is enqueued. A valid request becomes one stream entry holding the normalized
events.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from weftline.ground.agent_schema import EVENTS, AgentEvent, problems_of
from weftline.ground.projects import ingest_key
from weftline.ground.rejections import Reason
from weftline.ingest.cors import add_cors, origin_allowed, preflight
from weftline.ingest.edge import Edge, Rejected, rejection_response
from weftline.ingest.limits import read_decoded_body

KIND = "agent"
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key(request: Request) -> str | None:
    """The optional `Idempotency-Key` header: 1-255 visible ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise Rejected(
            Reason.BAD_IDEMPOTENCY_KEY, "Idempotency-Key must be 1-255 visible ASCII characters"
        )
    return key


def parse_events_body(body: bytes, content_type: str) -> list[Any]:
    """JSON array, single JSON object, or NDJSON (one event per line)."""
    text = body.strip()
    if not text:
        raise Rejected(Reason.EMPTY_BODY, "the body holds no events")
    ndjson = "ndjson" in content_type or "jsonlines" in content_type
    if not ndjson:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            if text[:1] == b"{" and b"\n" in text:
                ndjson = True  # NDJSON sent as application/json: be lenient
            else:
                raise Rejected(Reason.INVALID_JSON, f"body is not valid JSON: {e}") from None
        else:
            return doc if isinstance(doc, list) else [doc]
    events: list[Any] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            raise Rejected(Reason.INVALID_JSON, f"NDJSON line {n} is not valid JSON: {e}") from None
    return events


def retention_problems(events: list[Any], retention_days: int) -> list[dict[str, Any]]:
    """Events older than retention would be dropped by the table's TTL as they land:
    say so now instead of accepting them."""
    oldest = datetime.now(UTC) - timedelta(days=retention_days)
    return [
        {
            "index": i,
            "field": "ts",
            "message": f"ts is older than the project's retention of {retention_days} days",
        }
        for i, ev in enumerate(events)
        if ev.ts is not None and ev.ts < oldest
    ]


def validated_events(
    body: bytes, content_type: str, max_events: int
) -> tuple[list[AgentEvent], bytes]:
    """The events, validated, and the payload to enqueue: the body itself when it is a JSON
    array (the common case: validated straight from the bytes, never re-serialized; the
    worker applies the same schema to the same bytes), else the events as a JSON array."""
    text = body.strip()
    if text[:1] == b"[" and "ndjson" not in content_type and "jsonlines" not in content_type:
        try:
            events = EVENTS.validate_json(text)
        except ValidationError:
            pass  # the slow path below says what is wrong, by index and field
        else:
            if len(events) > max_events:
                raise _too_many(len(events), max_events)
            if events:
                return events, text
    items = parse_events_body(body, content_type)
    if len(items) > max_events:
        raise _too_many(len(items), max_events)
    try:
        events = EVENTS.validate_python(items)
    except ValidationError as e:
        problems = [p.model_dump() for p in problems_of(e)]
        raise Rejected(
            Reason.INVALID_EVENTS,
            f"{len({p['index'] for p in problems})} of {len(items)} events are invalid;"
            " nothing was accepted",
            details=problems,
        ) from None
    if not events:
        raise Rejected(Reason.EMPTY_BODY, "the body holds no events")
    return events, orjson.dumps(items)


def _too_many(n: int, limit: int) -> Rejected:
    return Rejected(Reason.TOO_MANY_EVENTS, f"{n} events in one request; the limit is {limit}")


def make_route(edge: Edge):
    settings = edge.settings

    async def post_events(request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request)
        try:
            project = edge.projects.by_key(ingest_key(request))
            if project is None:
                key = ingest_key(request)
                raise Rejected(
                    Reason.MISSING_KEY if key is None else Reason.UNKNOWN_KEY,
                    "send the project's public key in X-Weftline-Key or ?key="
                    if key is None
                    else "no project has this public key",
                )
            if not origin_allowed(project, request.headers.get("origin")):
                raise Rejected(Reason.ORIGIN_NOT_ALLOWED, "origin not in allowed_origins")
            edge.check_rate(project)
            key = idempotency_key(request)
            body = await read_decoded_body(
                request, settings.max_body_bytes, settings.max_body_bytes
            )
            events, payload = validated_events(
                body, request.headers.get("content-type", ""), settings.max_events_per_request
            )
            too_old = retention_problems(events, project.retention_days)
            if too_old:
                raise Rejected(
                    Reason.INVALID_EVENTS,
                    f"{len(too_old)} events are older than the project's retention; "
                    "nothing was accepted",
                    details=too_old,
                )
            first = events[0]
            entry_id, resent = await edge.enqueue_once(
                KIND,
                project,
                request,
                payload,
                len(events),
                shard_key=first.session_id or getattr(first, "agent_id", None),
                idempotency_key=key,
            )
        except Rejected as err:
            return add_cors(rejection_response(KIND, err), request)
        answer: dict[str, Any] = {"accepted": len(events), "id": entry_id}
        if resent:
            answer["duplicate"] = True  # the original request's entry; nothing appended
        return add_cors(JSONResponse(answer, status_code=202), request)

    return post_events
