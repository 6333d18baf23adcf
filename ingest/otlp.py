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
from weftline.ground.config import ProjectConfig
from weftline.ground.metrics import OTLP_REJECTED_RECORDS, REJECTED
from weftline.ground.rejections import Reason
from weftline.ingest.cors import add_cors, origin_allowed, preflight
from weftline.ingest.edge import Edge, Rejected
from weftline.ingest.limits import read_decoded_body

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


def _check(
    signal: od.Signal, body: bytes, encoding: od.Encoding
) -> tuple[Message, int, Counter[str]]:
    """Parse and count: (request, good records, problems by reason)."""
    try:
        req = od.parse_request(signal, body, encoding)
    except od.OtlpDecodeError as e:
        raise Rejected(Reason.INVALID_OTLP, e.reason) from None
    if signal == "traces":
        good, problems = od.count_span_problems(req)  # type: ignore[arg-type]
    elif signal == "logs":
        good, problems = od.count_log_problems(req)  # type: ignore[arg-type]
    else:
        good, problems = od.count_metric_problems(req)  # type: ignore[arg-type]
    return req, good, problems


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
            req, good, problems = _check(signal, body, encoding)
            for reason, n in problems.items():
                OTLP_REJECTED_RECORDS.labels(signal, reason).inc(n)
            decoded: od.Decoded = od.Decoded(problems=problems)
            if good:
                payload = body if encoding == "protobuf" else req.SerializeToString()
                await edge.enqueue(KIND, project, request, payload, good, {"sig": signal})
        except Rejected as err:
            return add_cors(error_response(err, encoding), request)
        resp = success_response(signal, encoding, decoded.rejected, decoded.message(_NOUN[signal]))
        return add_cors(resp, request)

    return export


SIGNALS: tuple[od.Signal, ...] = ("traces", "logs", "metrics")


def routes(edge: Edge) -> list[Route]:
    return [Route(f"/v1/{s}", make_route(edge, s), methods=["POST", "OPTIONS"]) for s in SIGNALS]
