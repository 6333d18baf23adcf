"""OTLP on the wire: bytes (protobuf or OTLP/JSON) → the Export*ServiceRequest message,
and the checks that decide whether a span or log record can be stored. Pure.

Shared by the edge (which answers `partial_success` from these checks) and the workers
(which skip the same records), so it lives on the ground floor.

OTLP/JSON is not the proto3 JSON mapping: trace and span ids are hex (proto3 JSON would
read them as base64 and silently produce wrong bytes), enums should be integers (names
are accepted here too, including the short pdata spellings), and 64-bit integers come
as strings or numbers. Ids are therefore rewritten before `ParseDict`, and enum names
are mapped to their numbers.

Every malformed body raises `OtlpDecodeError`.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

Signal = Literal["traces", "logs", "metrics"]
Encoding = Literal["protobuf", "json"]

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}

# DateTime64(9) holds nanoseconds since 1970 in an Int64.
MAX_TIME_NS = 2**63 - 1
UNKNOWN_SERVICE = "unknown_service"
MAX_SESSION_ID = 200

# Attributes that tie a span or log to a browser session: the OTel semantic convention
# first, then the spellings OpenReplay integrations and RUM SDKs use.
SESSION_KEYS = (
    "session.id",
    "openreplay.session.id",
    "openreplay.session_id",
    "openreplay.sessionId",
    "openreplay_session_id",
    "rum.sessionId",
)

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")


class OtlpDecodeError(Exception):
    """The body is not a valid OTLP request of this signal."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _name_index(names: tuple[str, ...], prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, n in enumerate(names):
        for spelling in (n, n.upper(), n.capitalize(), f"{prefix}{n.upper()}"):
            out[spelling] = i
    return out


_KIND_BY_NAME = _name_index(SPAN_KINDS, "SPAN_KIND_")
_STATUS_BY_NAME = _name_index(STATUS_CODES, "STATUS_CODE_")
_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# SEVERITY_NUMBER_TRACE = 1, TRACE2..TRACE4, DEBUG = 5, ... FATAL4 = 24.
_SEVERITY_NAMES = (
    "UNSPECIFIED",
    *(f"{lvl}{n if n > 1 else ''}" for lvl in _LEVELS for n in range(1, 5)),
)
_SEVERITY_BY_NAME: dict[str, int] = {}
for _i, _n in enumerate(_SEVERITY_NAMES):
    _SEVERITY_BY_NAME[_n] = _i
    _SEVERITY_BY_NAME[f"SEVERITY_NUMBER_{_n}"] = _i
_SEVERITY_BY_NAME["SEVERITY_NUMBER_UNSPECIFIED"] = 0


def normalize_kind(value: Any) -> str:
    """'SPAN_KIND_SERVER', 'Server', 'server' or 2 → 'server'; anything else → 'unspecified'."""
    if isinstance(value, int) and 0 <= value < len(SPAN_KINDS):
        return SPAN_KINDS[value]
    if isinstance(value, str):
        i = _KIND_BY_NAME.get(value.strip())
        if i is None:
            i = _KIND_BY_NAME.get(value.strip().lower())
        if i is not None:
            return SPAN_KINDS[i]
    return "unspecified"


def normalize_status(value: Any) -> str | None:
    """'STATUS_CODE_ERROR', 'Error', 'error' or 2 → 'error'; None when not a status."""
    if isinstance(value, int) and 0 <= value < len(STATUS_CODES):
        return STATUS_CODES[value]
    if isinstance(value, str):
        i = _STATUS_BY_NAME.get(value.strip())
        if i is None:
            i = _STATUS_BY_NAME.get(value.strip().lower())
        if i is not None:
            return STATUS_CODES[i]
    return None


# ---------------------------------------------------------------- parsing


_ID_KEYS = frozenset(("traceId", "spanId", "parentSpanId"))


def _hex_to_b64(value: str, key: str) -> str:
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpDecodeError(f"{key} {value[:40]!r} is not hex") from None
    return base64.b64encode(raw).decode()


# The protobuf parser refuses messages nested deeper than 100, and nested AnyValues take
# at least 4 JSON levels for every 3 message levels. Refusing deeper JSON here keeps the
# edge from accepting a request the worker could not parse back from protobuf.
MAX_JSON_DEPTH = 100


def _prepare_json(doc: Any) -> None:
    """In place: hex ids → base64 (what ParseDict expects for bytes), enum names →
    numbers. Iterative, so a deeply nested body cannot exhaust the Python stack."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise OtlpDecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, str):
                    if k in _ID_KEYS:
                        node[k] = _hex_to_b64(v, k)
                    elif k == "kind":
                        i = _KIND_BY_NAME.get(v)
                        if i is not None:
                            node[k] = i
                    elif k == "code":
                        i = _STATUS_BY_NAME.get(v)
                        if i is not None:
                            node[k] = i
                    elif k == "severityNumber":
                        i = _SEVERITY_BY_NAME.get(v)
                        if i is not None:
                            node[k] = i
                elif isinstance(v, dict | list):
                    stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((x, depth + 1) for x in node if isinstance(x, dict | list))


def parse_request(signal: Signal, body: bytes, encoding: Encoding) -> Message:
    """Body → Export<Signal>ServiceRequest, or OtlpDecodeError."""
    cls = REQUEST_TYPES[signal]
    if encoding == "protobuf":
        try:
            return cls.FromString(body)
        except (ProtoDecodeError, RecursionError, ValueError) as e:
            raise OtlpDecodeError(f"body is not a protobuf {cls.__name__}: {e}") from None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OtlpDecodeError(f"body is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError(f"an OTLP/JSON {cls.__name__} must be a JSON object")
    _prepare_json(doc)
    msg = cls()
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError, AttributeError) as e:
        raise OtlpDecodeError(f"not an OTLP/JSON {cls.__name__}: {str(e)[:300]}") from None
    return msg


T = TypeVar("T")


@dataclass
class Decoded(Generic[T]):
    records: list[T] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.problems.values())

    def message(self, noun: str) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.problems.items()))
        return f"{self.rejected} {noun} rejected: {parts}" if self.problems else ""


def _valid_id(raw: bytes, size: int) -> bool:
    return len(raw) == size and raw != b"\x00" * size


def span_problem(span: Span) -> str | None:
    """Why a span cannot be stored, or None. Shared by the edge (to answer with
    partial_success) and the worker (to skip the same spans)."""
    if not _valid_id(span.trace_id, 16):
        return "invalid trace_id"
    if not _valid_id(span.span_id, 8):
        return "invalid span_id"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "invalid parent_span_id"
    if span.start_time_unix_nano == 0 or span.start_time_unix_nano > MAX_TIME_NS:
        return "invalid start time"
    return None


def log_problem(rec: LogRecord) -> str | None:
    if rec.trace_id and len(rec.trace_id) != 16:
        return "invalid trace_id"
    if rec.span_id and len(rec.span_id) != 8:
        return "invalid span_id"
    if rec.time_unix_nano > MAX_TIME_NS or rec.observed_time_unix_nano > MAX_TIME_NS:
        return "invalid timestamp"
    return None


def count_span_problems(req: ExportTraceServiceRequest) -> tuple[int, Counter[str]]:
    """(good spans, problems by reason) without building records: the edge's check."""
    good = 0
    problems: Counter[str] = Counter()
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                p = span_problem(span)
                if p is None:
                    good += 1
                else:
                    problems[p] += 1
    return good, problems


def count_log_problems(req: ExportLogsServiceRequest) -> tuple[int, Counter[str]]:
    good = 0
    problems: Counter[str] = Counter()
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                p = log_problem(rec)
                if p is None:
                    good += 1
                else:
                    problems[p] += 1
    return good, problems


def count_metric_points(req: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                which = m.WhichOneof("data")
                if which is not None:
                    n += len(getattr(m, which).data_points)
    return n


def hex_id(value: str, size: int) -> str | None:
    """A trace id (size 16) or span id (size 8) as lowercase hex, or None if malformed."""
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if _valid_id(raw, size) else None


# ---------------------------------------------------------------- metrics

STORED_METRIC_TYPES = ("gauge", "sum", "histogram", "exponential_histogram")


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def metric_point_problem(metric_type: str, point: Any) -> str | None:
    """Why a metric data point cannot be stored, or None. Shared by the edge (to answer
    with partial_success) and the worker (to skip the same points)."""
    if metric_type not in STORED_METRIC_TYPES:
        return f"{metric_type} data points are not stored"
    if point.time_unix_nano == 0 or point.time_unix_nano > MAX_TIME_NS:
        return "invalid timestamp"
    if point.start_time_unix_nano > MAX_TIME_NS:
        return "invalid start time"
    if metric_type in ("gauge", "sum"):
        if point.WhichOneof("value") == "as_double" and not _finite(point.as_double):
            return "non-finite value"
        return None
    for f in ("sum", "min", "max"):
        if point.HasField(f) and not _finite(getattr(point, f)):
            return "non-finite value"
    if metric_type == "histogram":
        if point.bucket_counts and len(point.bucket_counts) != len(point.explicit_bounds) + 1:
            return "histogram bucket counts do not match its bounds"
        if not _finite(*point.explicit_bounds):
            return "non-finite histogram bound"
    elif not -20 <= point.scale <= 20:
        return "exponential histogram scale out of range"
    return None


def count_metric_problems(req: ExportMetricsServiceRequest) -> tuple[int, Counter[str]]:
    """(good data points, problems by reason): the edge's check."""
    good = 0
    problems: Counter[str] = Counter()
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                which = m.WhichOneof("data")
                if which is None:
                    continue
                if not m.name:
                    problems["metric without a name"] += len(getattr(m, which).data_points)
                    continue
                for p in getattr(m, which).data_points:
                    problem = metric_point_problem(which, p)
                    if problem is None:
                        good += 1
                    else:
                        problems[problem] += 1
    return good, problems
