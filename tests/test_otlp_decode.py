"""The pure OTLP decoder: protobuf and OTLP/JSON agree on real SDK output, the JSON traps
(hex ids, enum ints or names, int64 as strings or numbers), and fuzzing: malformed
input raises OtlpDecodeError and nothing else."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as json_encode
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as proto_encode
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from weftline.dashboards.debug.traces_api import build_tree
from weftline.enrich import otlp_decode as od
from weftline.enrich.otlp import decode_otlp_entry
from weftline.enrich.stream_consumer import DecodeError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

T0 = 1_795_626_418_163_042_456

ids16 = st.integers(min_value=1, max_value=2**128 - 1)
ids8 = st.integers(min_value=1, max_value=2**64 - 1)
scalar = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
attr_value = st.one_of(scalar, st.lists(st.integers(-1000, 1000), max_size=4))
attrs = st.dictionaries(st.text(min_size=1, max_size=12), attr_value, max_size=5)


@st.composite
def sdk_spans(draw) -> list[ReadableSpan]:
    n = draw(st.integers(1, 4))
    trace_id = draw(ids16)
    span_ids = draw(st.lists(ids8, min_size=n, max_size=n, unique=True))
    out = []
    for span_id in span_ids:
        start = T0 + draw(st.integers(0, 10**12))
        parent = SpanContext(trace_id, draw(ids8), is_remote=True) if draw(st.booleans()) else None
        out.append(
            ReadableSpan(
                name=draw(st.text(max_size=30)),
                context=SpanContext(trace_id, span_id, False, TraceFlags(1)),
                parent=parent,
                resource=Resource.create({"service.name": draw(st.sampled_from(["a", "b"]))}),
                attributes=draw(attrs),
                events=[Event("e", draw(attrs), timestamp=start + 5)],
                links=[Link(SpanContext(draw(ids16), draw(ids8), False), {"l": 1})],
                kind=draw(st.sampled_from(list(SpanKind))),
                status=Status(draw(st.sampled_from(list(StatusCode))), None),
                start_time=start,
                end_time=start + draw(st.integers(0, 10**10)),
                instrumentation_scope=InstrumentationScope("scope", "1.0"),
            )
        )
    return out


@FUZZ
@given(sdk_spans())
def test_protobuf_and_json_from_real_encoders_decode_the_same(spans):
    from_proto = od.decode_traces(proto_encode(spans).SerializeToString(), "protobuf")
    from_json = od.decode_traces(json_encode(spans).to_json().encode(), "json")
    assert from_proto.rejected == from_json.rejected == 0
    assert from_proto.records == from_json.records
    by_id = {r.span_id: r for r in from_proto.records}
    assert len(by_id) == len(spans)
    for s in spans:
        rec = by_id[f"{s.context.span_id:016x}"]
        assert rec.trace_id == f"{s.context.trace_id:032x}"
        assert rec.span_id == f"{s.context.span_id:016x}"
        assert rec.parent_span_id == (f"{s.parent.span_id:016x}" if s.parent else "")
        assert rec.kind == s.kind.name.lower()
        assert rec.status_code == s.status.status_code.name.lower()
        assert rec.start_ns == s.start_time and rec.duration_ns == s.end_time - s.start_time
        assert rec.service_name == s.resource.attributes["service.name"]
        assert rec.attributes["otel.scope.name"] == "scope"
        for k, v in s.attributes.items():
            expected = (
                ("true" if v else "false")
                if isinstance(v, bool)
                else orjson.dumps(list(v)).decode()
                if isinstance(v, tuple | list)
                else repr(v)
                if isinstance(v, float)
                else str(v)
            )
            assert rec.attributes[k] == expected
        assert rec.link_trace_ids == [f"{s.links[0].context.trace_id:032x}"]
        assert rec.event_times_ns == [s.start_time + 5]


def js_style_body() -> dict:
    """Shaped like the browser exporter's body: intValue as a JSON number, timestamps as
    strings; here with upper-case hex and enum names to check the lenient paths."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "demo-web", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": "E679D405E51630A6AC5D6B5E39EAECE1",
                                "spanId": "4b8797bcb99e2797",
                                "parentSpanId": "b4c01af6502812ad",
                                "name": "HTTP GET",
                                "kind": 3,
                                "startTimeUnixNano": "1795626592331000000",
                                "endTimeUnixNano": 1795626592332320359,
                                "attributes": [
                                    {"key": "code", "value": {"intValue": 200}},
                                    {"key": "big", "value": {"intValue": 9007199254740991}},
                                    {"key": "s", "value": {"intValue": "-7"}},
                                    {"key": "b", "value": {"bytesValue": "AAE="}},
                                    {"key": "session.id", "value": {"stringValue": "or-1"}},
                                ],
                                "status": {"code": 0},
                                "flags": 257,
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_otlp_json_traps():
    rec = od.decode_traces(orjson.dumps(js_style_body()), "json").records[0]
    assert rec.trace_id == "e679d405e51630a6ac5d6b5e39eaece1"  # hex, not base64
    assert rec.parent_span_id == "b4c01af6502812ad"
    assert rec.kind == "client" and rec.status_code == "unset"
    assert rec.duration_ns == 1_320_359
    assert rec.attributes["code"] == "200" and rec.attributes["big"] == "9007199254740991"
    assert rec.attributes["s"] == "-7" and rec.attributes["b"] == "AAE="
    assert rec.session_id == "or-1" and rec.service_name == "web"


@pytest.mark.parametrize(
    "kind,status,expected",
    [
        ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR", ("server", "error")),
        ("Server", "Error", ("server", "error")),
        ("CONSUMER", "OK", ("consumer", "ok")),
        (4, 1, ("producer", "ok")),
        (0, "STATUS_CODE_UNSET", ("unspecified", "unset")),
    ],
)
def test_enum_names_and_numbers_normalize(kind, status, expected):
    body = js_style_body()
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["kind"], span["status"] = kind, {"code": status, "message": "m"}
    rec = od.decode_traces(orjson.dumps(body), "json").records[0]
    assert (rec.kind, rec.status_code) == expected
    assert rec.status_message == "m"


def test_normalizers_accept_every_spelling():
    for v in ("SPAN_KIND_CLIENT", "Client", "client", "CLIENT", 3):
        assert od.normalize_kind(v) == "client"
    for v in ("STATUS_CODE_ERROR", "Error", "error", 2):
        assert od.normalize_status(v) == "error"
    assert od.normalize_kind("nonsense") == "unspecified"
    assert od.normalize_status("nonsense") is None


def test_rejected_spans_are_counted_by_reason():
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for tid, sid, start in (
        (b"\x01" * 16, b"\x01" * 8, T0),  # good
        (b"\x00" * 16, b"\x01" * 8, T0),  # all-zero trace id
        (b"\x01" * 12, b"\x01" * 8, T0),  # wrong length
        (b"\x01" * 16, b"", T0),  # no span id
        (b"\x01" * 16, b"\x02" * 8, 0),  # no start
        (b"\x01" * 16, b"\x03" * 8, 2**63),  # beyond DateTime64(9)
    ):
        s = spans.add()
        s.trace_id, s.span_id, s.start_time_unix_nano = tid, sid, start
        s.end_time_unix_nano = 1  # ends before it starts: kept with no duration
    d = od.spans_of(req)
    assert len(d.records) == 1 and d.records[0].duration_ns == 0
    assert d.problems == {"invalid trace_id": 2, "invalid span_id": 1, "invalid start time": 2}
    assert od.count_span_problems(req) == (1, d.problems)
    assert d.message("spans").startswith("5 spans rejected: ")


def test_logs_severity_names_body_and_stable_ids():
    doc = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                },
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1795626418000000000",
                                "severityNumber": "SEVERITY_NUMBER_ERROR",
                                "severityText": "ERROR",
                                "body": {
                                    "kvlistValue": {
                                        "values": [{"key": "a", "value": {"intValue": "1"}}]
                                    }
                                },
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                            },
                            {"severityNumber": 9, "body": {"stringValue": "x"}},
                            {"severityNumber": 9, "body": {"stringValue": "x"}},
                        ]
                    }
                ],
            }
        ]
    }
    d = od.decode_logs(orjson.dumps(doc), "json", received_ns=T0)
    first, a, b = d.records
    assert first.severity_number == 17 and first.body == '{"a":1}'
    assert first.trace_id == "5b8efff798038103d269b633813fc60c"
    assert a.time_ns == T0 and a.observed_ns == T0  # no timestamps: the receive time
    assert a.log_uid != b.log_uid  # identical lines in one request stay two records
    again = od.decode_logs(orjson.dumps(doc), "json", received_ns=T0)
    assert [r.log_uid for r in again.records] == [r.log_uid for r in d.records]


def test_build_tree_orders_depth_first_and_survives_orphans_and_cycles():
    def s(sid, parent, start):
        return {
            "span_id": sid,
            "parent_span_id": parent,
            "start_ns": start * 1_000_000,  # ms → ns
            "duration_ns": 10_000_000,
            "name": sid,
            "service_name": "x",
            "kind": "internal",
            "source": "otlp",
            "op": "",
            "status_code": "unset",
            "status_message": "",
            "session_id": "",
            "attributes": {},
            "resource_attributes": {},
            "event_times_ns": [],
            "event_names": [],
            "event_attributes": [],
            "link_trace_ids": [],
            "link_span_ids": [],
            "link_attributes": [],
        }

    rows = [
        s("c2", "r", 30),
        s("r", "", 0),
        s("c1", "r", 10),
        s("g", "c1", 15),
        s("o", "missing", 5),
        s("x", "y", 50),
        s("y", "x", 60),
    ]
    ordered, t0, t1 = build_tree(rows)
    assert [(v["span_id"], v["depth"]) for v in ordered] == [
        ("r", 0),
        ("c1", 1),
        ("g", 2),
        ("c2", 1),
        ("o", 0),
        ("x", 0),
        ("y", 1),
    ]
    assert ordered[4]["orphan"] and ordered[0]["children"] == ["c1", "c2"]
    assert (t0, t1) == (0, 70_000_000) and ordered[2]["offset_ms"] == 15.0


# ---------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
otlp_keys = st.sampled_from(
    [
        "resourceSpans",
        "resourceLogs",
        "scopeSpans",
        "scopeLogs",
        "spans",
        "logRecords",
        "traceId",
        "spanId",
        "parentSpanId",
        "kind",
        "status",
        "code",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "timeUnixNano",
        "severityNumber",
        "attributes",
        "key",
        "value",
        "intValue",
        "stringValue",
        "arrayValue",
        "kvlistValue",
        "values",
        "body",
        "name",
        "resource",
        "events",
        "links",
    ]
)
otlp_shaped = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(alphabet="0123456789abcdefABXZ-_ ", max_size=34),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(otlp_keys, children, max_size=5)
    ),
    max_leaves=40,
)


def _only_decode_errors(signal: od.Signal, body: bytes, encoding: od.Encoding) -> None:
    try:
        req = od.parse_request(signal, body, encoding)
    except od.OtlpDecodeError:
        return
    if encoding == "json":  # what the edge enqueues, the worker must read back
        again = od.parse_request(signal, req.SerializeToString(), "protobuf")
        assert again == req
    if signal == "traces":
        d = od.spans_of(req)  # type: ignore[arg-type]
        for r in d.records:
            assert len(r.trace_id) == 32 and len(r.span_id) == 16
            assert 0 < r.start_ns <= od.MAX_TIME_NS and r.duration_ns >= 0
            assert r.start_ns + r.duration_ns <= od.MAX_TIME_NS
            assert r.kind in od.SPAN_KINDS and r.status_code in od.STATUS_CODES
        assert od.count_span_problems(req)[0] == len(d.records)  # type: ignore[arg-type]
    elif signal == "logs":
        d2 = od.logs_of(req, T0)  # type: ignore[arg-type]
        for r in d2.records:
            assert 0 <= r.time_ns <= od.MAX_TIME_NS and 0 <= r.severity_number <= 255
    else:
        od.count_metric_points(req)  # type: ignore[arg-type]


signals = st.sampled_from(["traces", "logs", "metrics"])


@FUZZ
@given(signals, st.binary(max_size=300))
def test_fuzz_protobuf_bytes(signal, body):
    _only_decode_errors(signal, body, "protobuf")


@FUZZ
@given(signals, sdk_spans(), st.data())
def test_fuzz_mutated_real_protobuf(signal, spans, data):
    raw = bytearray(proto_encode(spans).SerializeToString())
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _only_decode_errors(signal, bytes(raw), "protobuf")


@FUZZ
@given(signals, json_values)
def test_fuzz_json_values(signal, doc):
    try:
        body = orjson.dumps(doc)
    except (orjson.JSONEncodeError, TypeError):
        return
    _only_decode_errors(signal, body, "json")


@FUZZ
@given(st.sampled_from(["traces", "logs"]), otlp_shaped)
def test_fuzz_otlp_shaped_json(signal, doc):
    _only_decode_errors(signal, orjson.dumps(doc), "json")


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_json_bytes(body):
    _only_decode_errors("traces", body, "json")


def test_deeply_nested_json_is_a_decode_error():
    deep = b'{"resourceSpans":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(od.OtlpDecodeError):
        od.parse_request("traces", deep, "json")
    # Deep enough to overflow a recursive decoder, shallow enough for the JSON parser:
    # refused, rather than accepted at the edge and refused by the worker's protobuf
    # parser (which stops at 100 nested messages).
    levels = 40
    body = (
        '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":'
        + '{"arrayValue":{"values":[' * levels
        + '{"stringValue":"x"}'
        + "]}}" * levels
        + "}]}]}]}"
    ).encode()
    with pytest.raises(od.OtlpDecodeError, match="nested"):
        od.parse_request("logs", body, "json")


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([b"p", b"project", b"received_at", b"sig"]), st.binary(max_size=40)
    )
)
def test_fuzz_stream_entries_only_raise_decode_error(fields):
    try:
        decode_otlp_entry(fields)
    except DecodeError:
        pass


def test_worker_rows_match_the_spans_table_columns(ch):
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    rows = decode_otlp_entry(
        {
            b"p": req.SerializeToString(),
            b"project": b"1",
            b"received_at": b"1795626418000",
            b"sig": b"logs",
        }
    )
    cols = {
        r["name"]
        for r in ch.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'logs'",
            {"db": ch.database},
        )
    }
    assert set(rows[0][1]) == cols
    span_body = proto_encode(
        [
            ReadableSpan(
                "n",
                SpanContext(1, 1, False),
                resource=Resource.create({}),
                start_time=T0,
                end_time=T0 + 1,
            )
        ]
    ).SerializeToString()
    rows = decode_otlp_entry(
        {b"p": span_body, b"project": b"1", b"received_at": b"1795626418000", b"sig": b"traces"}
    )
    span_cols = {
        r["name"]
        for r in ch.query(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'spans'",
            {"db": ch.database},
        )
    }
    assert set(rows[0][1]) == span_cols
