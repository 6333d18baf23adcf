"""OTLP/HTTP receiver: `POST /v1/traces`, `/v1/logs`, `/v1/metrics`.

What the unmodified exporters need, per the OTLP spec:
- protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`), gzip/deflate;
  the response uses the request's encoding;
- 200 with an empty `Export*ServiceResponse`, or with `partial_success` counting the
  records that were rejected (the exporter must not retry those);
- failures carry a `google.rpc.Status` body; 400 is final, 429/503 carry `Retry-After`
  and are retried (503 by every Python exporter version, 429 only by ≥ 1.45);
- the project key in a header the exporters can set through `OTEL_EXPORTER_OTLP_HEADERS`:
  `x-weftline-key=<key>` or `authorization=Bearer <key>` (or `?key=`);
- CORS preflight for browser exporters.

The edge parses the request (to answer 400 or partial_success honestly) and enqueues it
as protobuf, whatever it arrived as, so the worker reads one encoding. Metrics are stored
(gauge, sum, histogram, exponential histogram); `partial_success.rejected_data_points`
counts only the points that really cannot be (a summary, a bad timestamp, a non-finite
value, buckets that do not match their bounds), with the reasons.
"""

from __future__ import annotations

from collections import Counter

import orjson
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from weftline.ground import otlp_wire as od
from weftline.ground.config import ProjectConfig, Settings
from weftline.ground.metrics import OTLP_REJECTED_RECORDS, REJECTED
from weftline.ground.rejections import Reason
from weftline.ingest.cors import add_cors, origin_allowed, preflight
from weftline.ingest.edge import Edge, Rejected
from weftline.ingest.limits import off_loop, read_decoded_body, run_isolated

KIND = "otlp"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# HTTP status → google.rpc.Code, for the Status body of a failure.
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 429: 8, 503: 14}

_RESPONSE_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceResponse,
    "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
}
_REJECTED_FIELD = {
    "traces": "rejected_spans",
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
}
_NOUN = {"traces": "spans", "logs": "log records", "metrics": "data points"}


def encoding_of(content_type: str | None) -> od.Encoding | None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in (PROTOBUF, "application/protobuf"):
        return "protobuf"
    if media == JSON:
        return "json"
    return None


def ingest_key_of(request: Request) -> str | None:
    """`X-Weftline-Key: <key>`, `Authorization: Bearer <key>` or `?key=<key>`."""
    key = request.headers.get("x-weftline-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query_params.get("key")


def success_response(
    signal: od.Signal, encoding: od.Encoding, rejected: int = 0, message: str = ""
) -> Response:
    msg = _RESPONSE_TYPES[signal]()
    if rejected or message:
        ps = msg.partial_success  # type: ignore[attr-defined]
        setattr(ps, _REJECTED_FIELD[signal], rejected)
        ps.error_message = message
    if encoding == "protobuf":
        return Response(msg.SerializeToString(), status_code=200, media_type=PROTOBUF)
    body: dict = {}
    if rejected or message:
        key = {"traces": "rejectedSpans", "logs": "rejectedLogRecords"}.get(
            signal, "rejectedDataPoints"
        )
        # int64 fields are strings in OTLP/JSON.
        body = {"partialSuccess": {key: str(rejected), "errorMessage": message}}
    return Response(orjson.dumps(body), status_code=200, media_type=JSON)


def error_response(err: Rejected, encoding: od.Encoding | None) -> Response:
    """A google.rpc.Status in the request's encoding; JSON bodies also carry the
    house `error`/`detail` fields (unknown fields are ignored by OTLP clients)."""
    REJECTED.labels(KIND, err.reason).inc()
    code = _GRPC_CODE.get(err.status, 2)
    if encoding == "protobuf":
        status = status_pb2.Status(code=code, message=f"{err.reason}: {err.message}")
        return Response(
            status.SerializeToString(),
            status_code=err.status,
            media_type=PROTOBUF,
            headers=err.headers,
        )
    body = {"code": code, "message": err.message, "error": err.reason, "detail": err.message}
    return Response(
        orjson.dumps(body), status_code=err.status, media_type=JSON, headers=err.headers
    )


def _authorize(edge: Edge, request: Request) -> ProjectConfig:
    key = ingest_key_of(request)
    project = edge.projects.by_key(key)
    if project is None:
        if key is None:
            raise Rejected(
                Reason.MISSING_KEY,
                "send the project's public key: OTEL_EXPORTER_OTLP_HEADERS="
                "x-weftline-key=<key> (or authorization=Bearer <key>)",
            )
        raise Rejected(Reason.UNKNOWN_KEY, "no project has this public key")
    if not origin_allowed(project, request.headers.get("origin")):
        raise Rejected(Reason.ORIGIN_NOT_ALLOWED, "origin not in allowed_origins")
    return project


def _records(signal: od.Signal, req: Message) -> tuple[int, int]:
    """(records, attributes) of a request: spans, log records or metrics, and every
    attribute they, their events, links and resources carry."""
    records = attributes = 0
    outer, inner, leaf = {
        "traces": ("resource_spans", "scope_spans", "spans"),
        "logs": ("resource_logs", "scope_logs", "log_records"),
        "metrics": ("resource_metrics", "scope_metrics", "metrics"),
    }[signal]
    for r in getattr(req, outer):
        attributes += len(r.resource.attributes)
        for sc in getattr(r, inner):
            records += len(getattr(sc, leaf))
    return records, attributes


def _attributes(signal: od.Signal, req: Message) -> int:
    n = 0
    if signal == "traces":
        for rs in req.resource_spans:  # type: ignore[attr-defined]
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    n += len(sp.attributes) + len(sp.events) + len(sp.links)
                    for ev in sp.events:
                        n += len(ev.attributes)
                    for ln in sp.links:
                        n += len(ln.attributes)
    elif signal == "logs":
        for rl in req.resource_logs:  # type: ignore[attr-defined]
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    n += len(rec.attributes)
    return n


def check_body(
    signal: od.Signal, body: bytes, encoding: od.Encoding, max_records: int, max_attributes: int
) -> tuple[str, str, bytes, int, Counter[str]]:
    """Pure, and run in the parse process for large bodies: parse, bound the records and
    attributes, count the problems. Returns ("ok", "", payload to enqueue (protobuf),
    good records, problems) or ("rejected", reason, message, 0, {}) (picklable, unlike
    `Rejected`)."""
    try:
        try:
            req = od.parse_request(signal, body, encoding)
        except od.OtlpDecodeError as e:
            raise Rejected(Reason.INVALID_OTLP, e.reason) from None
        records, attributes = _records(signal, req)
        if records > max_records:
            raise Rejected(
                Reason.TOO_MANY_RECORDS,
                f"{records} {_NOUN[signal]} in one request; the limit is {max_records}",
            )
        attributes += _attributes(signal, req)
        if attributes > max_attributes:
            raise Rejected(
                Reason.TOO_MANY_RECORDS,
                f"{attributes} attributes in one request; the limit is {max_attributes}",
            )
        _, good, problems = _counted(signal, req)
    except Rejected as e:
        return "rejected", str(e.reason), e.message.encode(), 0, Counter()
    payload = body if encoding == "protobuf" or not good else req.SerializeToString()
    return "ok", "", payload, good, problems


def _counted(signal: od.Signal, req: Message) -> tuple[Message, int, Counter[str]]:
    if signal == "traces":
        good, problems = od.count_span_problems(req)  # type: ignore[arg-type]
    elif signal == "logs":
        good, problems = od.count_log_problems(req)  # type: ignore[arg-type]
    else:
        good, problems = od.count_metric_problems(req)  # type: ignore[arg-type]
    return req, good, problems


# Bodies up to this size are parsed in a thread of this process: protobuf's parser holds
# the GIL, ~0.5 µs per message, so 128 KiB of the smallest messages (2 bytes each) is
# ~30 ms of loop time at worst. Larger ones go to the parse process (`run_isolated`).
INLINE_PARSE_BYTES = 128 * 1024


async def checked(
    settings: Settings, signal: od.Signal, body: bytes, encoding: od.Encoding
) -> tuple[bytes, int, Counter[str]]:
    args = (signal, body, encoding, settings.otlp_max_records, settings.otlp_max_attributes)
    if len(body) <= INLINE_PARSE_BYTES:
        verdict = await off_loop(check_body, *args)
    else:
        verdict = await run_isolated(check_body, *args)
    status, reason, payload, good, problems = verdict
    if status != "ok":
        raise Rejected(Reason(reason), payload.decode())
    return payload, good, problems


def make_route(edge: Edge, signal: od.Signal):
    settings = edge.settings

    async def export(request: Request) -> Response:
        if request.method == "OPTIONS":
            return preflight(request)
        encoding = encoding_of(request.headers.get("content-type"))
        try:
            if encoding is None:
                raise Rejected(
                    Reason.UNSUPPORTED_MEDIA_TYPE,
                    f"Content-Type must be {PROTOBUF} or {JSON}",
                )
            project = _authorize(edge, request)
            edge.check_rate(project)
            body = await read_decoded_body(
                request, settings.max_body_bytes, settings.max_body_bytes
            )
            payload, good, problems = await checked(settings, signal, body, encoding)
            for reason, n in problems.items():
                OTLP_REJECTED_RECORDS.labels(signal, reason).inc(n)
            decoded: od.Decoded = od.Decoded(problems=problems)
            if good:
                await edge.enqueue(KIND, project, request, payload, good, {"sig": signal})
        except Rejected as err:
            return add_cors(error_response(err, encoding), request)
        resp = success_response(signal, encoding, decoded.rejected, decoded.message(_NOUN[signal]))
        return add_cors(resp, request)

    return export


SIGNALS: tuple[od.Signal, ...] = ("traces", "logs", "metrics")


def routes(edge: Edge) -> list[Route]:
    return [Route(f"/v1/{s}", make_route(edge, s), methods=["POST", "OPTIONS"]) for s in SIGNALS]
