"""OTLP decoding: a parsed Export*ServiceRequest → typed span and log records. Pure.

Parsing the bytes and the per-record checks live in `weftline.ground.otlp_wire`, shared
with the edge; a well-formed request with some bad records yields the good records plus a
count of the rejected ones, by reason.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

# The wire-level names are re-exported: this module is the decoder's one entry point.
from weftline.ground.otlp_wire import MAX_SESSION_ID as MAX_SESSION_ID
from weftline.ground.otlp_wire import MAX_TIME_NS as MAX_TIME_NS
from weftline.ground.otlp_wire import SESSION_KEYS as SESSION_KEYS
from weftline.ground.otlp_wire import SPAN_KINDS as SPAN_KINDS
from weftline.ground.otlp_wire import STATUS_CODES as STATUS_CODES
from weftline.ground.otlp_wire import UNKNOWN_SERVICE as UNKNOWN_SERVICE
from weftline.ground.otlp_wire import Decoded as Decoded
from weftline.ground.otlp_wire import Encoding as Encoding
from weftline.ground.otlp_wire import OtlpDecodeError as OtlpDecodeError
from weftline.ground.otlp_wire import Signal as Signal
from weftline.ground.otlp_wire import count_log_problems as count_log_problems
from weftline.ground.otlp_wire import count_metric_points as count_metric_points
from weftline.ground.otlp_wire import count_span_problems as count_span_problems
from weftline.ground.otlp_wire import log_problem as log_problem
from weftline.ground.otlp_wire import normalize_kind as normalize_kind
from weftline.ground.otlp_wire import normalize_status as normalize_status
from weftline.ground.otlp_wire import parse_request as parse_request
from weftline.ground.otlp_wire import span_problem as span_problem

# ---------------------------------------------------------------- values


def _float_text(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


def any_value_native(v: AnyValue) -> Any:
    """A JSON-ready Python value (arrays and maps keep their structure)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return v.bool_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        d = v.double_value
        return d if math.isfinite(d) else _float_text(d)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if which == "array_value":
        return [any_value_native(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value_native(kv.value) for kv in v.kvlist_value.values}
    return None


def any_value_text(v: AnyValue) -> str:
    """Attribute maps are Map(String, String): scalars as text, arrays and maps as JSON."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        return _float_text(v.double_value)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if which is None:
        return ""
    return orjson.dumps(any_value_native(v)).decode()


def attributes_map(attrs: Iterable[KeyValue]) -> dict[str, str]:
    # The hottest loop of the OTLP worker (spans carry tens of attributes): strings, by
    # far the most common values, are read inline rather than through any_value_text.
    out: dict[str, str] = {}
    for kv in attrs:
        v = kv.value
        if v.WhichOneof("value") == "string_value":
            out[kv.key] = v.string_value
        else:
            out[kv.key] = any_value_text(v)
    return out


def session_of(*maps: dict[str, str]) -> str:
    for m in maps:
        for key in SESSION_KEYS:
            v = m.get(key)
            if v:
                return v[:MAX_SESSION_ID]
    return ""


def ns_text(ns: int) -> str:
    """Nanoseconds since 1970 as ClickHouse DateTime64(9) text ("seconds.fraction")."""
    s, frac = divmod(ns, 1_000_000_000)
    return f"{s}.{frac:09d}"


# ---------------------------------------------------------------- records


# Not frozen: a frozen dataclass sets each field through object.__setattr__, a large
# share of the decoder's time at one record per span.
@dataclass(slots=True)
class SpanRecord:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    status_code: str
    status_message: str
    service_name: str
    start_ns: int
    duration_ns: int
    resource_attributes: dict[str, str]
    attributes: dict[str, str]
    event_times_ns: list[int]
    event_names: list[str]
    event_attributes: list[dict[str, str]]
    link_trace_ids: list[str]
    link_span_ids: list[str]
    link_attributes: list[dict[str, str]]
    session_id: str


@dataclass(frozen=True)
class LogRow:
    log_uid: int
    time_ns: int
    observed_ns: int
    severity_number: int
    severity_text: str
    body: str
    trace_id: str
    span_id: str
    flags: int
    service_name: str
    scope_name: str
    scope_version: str
    event_name: str
    resource_attributes: dict[str, str]
    attributes: dict[str, str]
    session_id: str


def _scope_attrs(name: str, version: str) -> dict[str, str]:
    out = {}
    if name:
        out["otel.scope.name"] = name
    if version:
        out["otel.scope.version"] = version
    return out


def spans_of(req: ExportTraceServiceRequest) -> Decoded[SpanRecord]:
    out: Decoded[SpanRecord] = Decoded()
    for rs in req.resource_spans:
        resource = attributes_map(rs.resource.attributes)
        service = resource.get("service.name") or UNKNOWN_SERVICE
        for ss in rs.scope_spans:
            scope = _scope_attrs(ss.scope.name, ss.scope.version)
            for span in ss.spans:
                problem = span_problem(span)
                if problem is not None:
                    out.problems[problem] += 1
                    continue
                attrs = attributes_map(span.attributes)
                if scope:
                    attrs = {**scope, **attrs}
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                # A span ended before it started (clock skew) is kept, with no duration.
                duration = end - start if end > start else 0
                # Events and links walked once each (every access to a repeated field
                # builds wrappers anew); most spans have no links at all.
                ev_times: list[int] = []
                ev_names: list[str] = []
                ev_attrs: list[dict[str, str]] = []
                for e in span.events:
                    t = e.time_unix_nano
                    ev_times.append(t if 0 < t <= MAX_TIME_NS else start)
                    ev_names.append(e.name)
                    ev_attrs.append(attributes_map(e.attributes))
                lk_traces: list[str] = []
                lk_spans: list[str] = []
                lk_attrs: list[dict[str, str]] = []
                if len(span.links):
                    for lk in span.links:
                        lk_traces.append(lk.trace_id.hex())
                        lk_spans.append(lk.span_id.hex())
                        lk_attrs.append(attributes_map(lk.attributes))
                status = span.status
                out.records.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=normalize_kind(span.kind),
                        status_code=normalize_status(status.code) or "unset",
                        status_message=status.message,
                        service_name=service,
                        start_ns=start,
                        duration_ns=min(duration, MAX_TIME_NS - start),
                        resource_attributes=resource,
                        attributes=attrs,
                        event_times_ns=ev_times,
                        event_names=ev_names,
                        event_attributes=ev_attrs,
                        link_trace_ids=lk_traces,
                        link_span_ids=lk_spans,
                        link_attributes=lk_attrs,
                        session_id=session_of(attrs, resource),
                    )
                )
    return out


def _severity_number(n: int) -> int:
    return n if 0 <= n <= 255 else 0


def record_uid(seen: Counter[bytes], *parts: bytes) -> int:
    """A record's id: its content (with its resource and scope) hashed, plus its occurrence
    number among identical records of this request — an exporter retrying the request gets
    the same ids (and collapses), identical records sent together stay distinct."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    digest = h.digest()
    seen[digest] += 1
    uid = hashlib.blake2b(digest + seen[digest].to_bytes(4, "little"), digest_size=8).digest()
    return int.from_bytes(uid, "little")


def logs_of(req: ExportLogsServiceRequest, received_ns: int) -> Decoded[LogRow]:
    """`log_uid` hashes the record's content, with its resource and scope, plus its
    occurrence number among identical records in this request: an exporter retrying the
    same request produces the same ids (and collapses), while identical lines sent
    together stay distinct."""
    out: Decoded[LogRow] = Decoded()
    seen: Counter[bytes] = Counter()
    for rl in req.resource_logs:
        resource = attributes_map(rl.resource.attributes)
        service = resource.get("service.name") or UNKNOWN_SERVICE
        res_key = rl.resource.SerializeToString(deterministic=True)
        for sl in rl.scope_logs:
            scope_key = sl.scope.SerializeToString(deterministic=True)
            for rec in sl.log_records:
                problem = log_problem(rec)
                if problem is not None:
                    out.problems[problem] += 1
                    continue
                uid = record_uid(
                    seen, res_key, scope_key, rec.SerializeToString(deterministic=True)
                )
                attrs = attributes_map(rec.attributes)
                body = rec.body
                observed = rec.observed_time_unix_nano or received_ns
                out.records.append(
                    LogRow(
                        log_uid=uid,
                        time_ns=rec.time_unix_nano or observed,
                        observed_ns=observed,
                        severity_number=_severity_number(rec.severity_number),
                        severity_text=rec.severity_text,
                        body=any_value_text(body) if body.WhichOneof("value") else "",
                        trace_id=rec.trace_id.hex(),
                        span_id=rec.span_id.hex(),
                        flags=rec.flags & 0xFFFFFFFF,
                        service_name=service,
                        scope_name=sl.scope.name,
                        scope_version=sl.scope.version,
                        event_name=rec.event_name,
                        resource_attributes=resource,
                        attributes=attrs,
                        session_id=session_of(attrs, resource),
                    )
                )
    return out


def decode_traces(body: bytes, encoding: Encoding) -> Decoded[SpanRecord]:
    req = parse_request("traces", body, encoding)
    assert isinstance(req, ExportTraceServiceRequest)
    return spans_of(req)


def decode_logs(body: bytes, encoding: Encoding, received_ns: int) -> Decoded[LogRow]:
    req = parse_request("logs", body, encoding)
    assert isinstance(req, ExportLogsServiceRequest)
    return logs_of(req, received_ns)
