"""The unmodified OpenTelemetry Python SDK and OTLP/HTTP exporters against the live server
(real valkey-server, real chDB, the app under uvicorn)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs as json_encode_logs
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as json_encode
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.conftest import wait_for
from weftline.storage import trace_queries as tq


@pytest.fixture
def app(settings, valkey, ch, serve):
    return serve(settings, valkey.url, ch=ch)


def make_spans(service: str = "checkout-api", session: str = "sess-42") -> list[ReadableSpan]:
    """A small real trace: SERVER root (tied to a session) → INTERNAL child that fails."""
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("demo.tracer", "0.1.0")
    with tracer.start_as_current_span(
        "GET /api/cart",
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": "GET", "session.id": session, "n": 7, "r": 0.5},
    ) as root:
        root.add_event("cache.miss", {"key": "cart:42"})
        with tracer.start_as_current_span("db.query") as child:
            child.set_attribute("db.system", "postgresql")
            child.set_attribute("flags", [1, 2])
            try:
                raise ValueError("boom")
            except ValueError as e:
                child.record_exception(e)
                child.set_status(Status(StatusCode.ERROR, "query failed"))
    tp.shutdown()
    return list(mem.get_finished_spans())


def api(http, app, settings, path: str, **params: Any) -> Any:
    token = settings.projects[0].query_token
    r = http.get(app.url + path, params=params, headers={"authorization": f"Bearer {token}"})
    return r


def read_trace(http, app, settings, trace_id: str, n: int) -> dict:
    def ready():
        r = api(http, app, settings, f"/api/v1/traces/{trace_id}")
        return r.json() if r.status_code == 200 and r.json()["span_count"] >= n else None

    return wait_for(ready)


@pytest.mark.parametrize(
    "compression,auth",
    [(Compression.NoCompression, "x-weftline-key"), (Compression.Gzip, "authorization")],
)
def test_python_exporter_protobuf_trace_reads_back_as_tree(
    app, settings, http, ch, compression, auth
):
    key = settings.projects[0].public_key
    headers = {auth: key if auth == "x-weftline-key" else f"Bearer {key}"}
    spans = make_spans()
    exporter = OTLPSpanExporter(
        endpoint=app.url + "/v1/traces", headers=headers, compression=compression
    )
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()

    root = next(s for s in spans if s.parent is None)
    child = next(s for s in spans if s.parent is not None)
    trace_id = f"{root.context.trace_id:032x}"
    doc = read_trace(http, app, settings, trace_id, 2)

    assert doc["span_count"] == 2
    assert doc["services"] == ["checkout-api"]
    assert doc["session_ids"] == ["sess-42"]
    assert doc["root_span_ids"] == [f"{root.context.span_id:016x}"]
    top, sub = doc["spans"]
    assert (top["depth"], sub["depth"]) == (0, 1)
    assert top["children"] == [sub["span_id"]] and sub["parent_span_id"] == top["span_id"]
    assert top["kind"] == "server" and sub["kind"] == "internal"
    assert sub["status"] == "error" and sub["status_message"] == "query failed"
    assert top["offset_ms"] == 0
    assert sub["offset_ms"] == pytest.approx((child.start_time - root.start_time) / 1e6, abs=1e-3)
    assert top["duration_ms"] == pytest.approx((root.end_time - root.start_time) / 1e6, abs=1e-3)
    assert top["attributes"]["n"] == "7" and top["attributes"]["r"] == "0.5"
    assert top["attributes"]["otel.scope.name"] == "demo.tracer"
    assert sub["attributes"]["flags"] == "[1,2]"
    assert top["events"][0]["name"] == "cache.miss"
    assert top["events"][0]["attributes"] == {"key": "cart:42"}
    assert doc["errors"][0]["span_id"] == sub["span_id"]
    assert doc["errors"][0]["exceptions"][0]["type"] == "ValueError"

    # The session reaches the whole trace, including the child that carries no session.
    listed = api(http, app, settings, "/api/v1/traces", session_id="sess-42").json()["traces"]
    assert [t["trace_id"] for t in listed] == [trace_id]
    assert listed[0]["span_count"] == 2 and listed[0]["root_name"] == "GET /api/cart"
    assert tq.session_trace_ids(ch, settings.projects[0].id, "sess-42") == [trace_id]


def test_trace_summaries_filter(app, settings, http):
    key = settings.projects[0].public_key
    exporter = OTLPSpanExporter(endpoint=app.url + "/v1/traces", headers={"x-weftline-key": key})
    a = make_spans("svc-a", "s-a")
    b = make_spans("svc-b", "s-b")
    assert exporter.export(a + b) == SpanExportResult.SUCCESS
    ids = {f"{s[0].context.trace_id:032x}" for s in (a, b)}
    wait_for(lambda: len(api(http, app, settings, "/api/v1/traces").json().get("traces", [])) == 2)
    by_service = api(http, app, settings, "/api/v1/traces", service="svc-b").json()["traces"]
    assert [t["trace_id"] for t in by_service] == [f"{b[0].context.trace_id:032x}"]
    errors = api(http, app, settings, "/api/v1/traces", status="STATUS_CODE_ERROR").json()
    assert {t["trace_id"] for t in errors["traces"]} == ids
    assert api(http, app, settings, "/api/v1/traces", status="ok").json()["traces"] == []
    slow = api(http, app, settings, "/api/v1/traces", min_duration_ms="60000").json()
    assert slow["traces"] == []
    # Far in the future, inside what the read side accepts (until 2106).
    future = api(http, app, settings, "/api/v1/traces", **{"from": "2100-01-01T00:00:00Z"})
    assert future.json()["traces"] == []
    # Another project's token sees nothing of project 1.
    other = http.get(
        app.url + "/api/v1/traces",
        headers={"authorization": f"Bearer {settings.projects[1].query_token}"},
    )
    assert other.status_code == 200 and other.json()["traces"] == []
    assert api(http, app, settings, "/api/v1/traces/zz").status_code == 400
    assert api(http, app, settings, f"/api/v1/traces/{'ab' * 16}").status_code == 404


def test_python_log_exporter_logs_read_back_with_trace_context(app, settings, http):
    key = settings.projects[0].public_key
    lp = LoggerProvider(resource=Resource.create({"service.name": "checkout-api"}))
    mem = InMemoryLogRecordExporter()
    lp.add_log_record_processor(SimpleLogRecordProcessor(mem))
    log = logging.getLogger("test.otlp.logs")
    log.propagate = False
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=lp)
    log.addHandler(handler)
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout-api"}))
    tracer = tp.get_tracer("t")
    try:
        with tracer.start_as_current_span("work", attributes={"session.id": "sess-l"}) as span:
            log.warning("cart %s is large", "c-1", extra={"session.id": "sess-l"})
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError:
                log.exception("division failed")
    finally:
        log.removeHandler(handler)
    records = mem.get_finished_logs()
    assert len(records) == 2
    exporter = OTLPLogExporter(endpoint=app.url + "/v1/logs", headers={"x-weftline-key": key})
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    assert exporter.export(records) == LogRecordExportResult.SUCCESS
    trace_id = f"{span.get_span_context().trace_id:032x}"

    def logs():
        r = api(http, app, settings, "/api/v1/logs", trace_id=trace_id)
        return r.json()["logs"] if r.status_code == 200 and len(r.json()["logs"]) == 2 else None

    got = wait_for(logs)
    err = next(x for x in got if x["severity_number"] == 17)
    warn = next(x for x in got if x["severity_number"] == 13)
    assert err["severity_text"] == "ERROR" and err["body"] == "division failed"
    assert err["attributes"]["exception.type"] == "ZeroDivisionError"
    assert err["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert warn["body"] == "cart c-1 is large" and warn["session_id"] == "sess-l"
    assert err["service"] == "checkout-api"
    errors_only = api(http, app, settings, "/api/v1/logs", min_severity="error").json()["logs"]
    assert [x["body"] for x in errors_only] == ["division failed"]
    found = api(http, app, settings, "/api/v1/logs", q="LARGE").json()["logs"]
    assert [x["body"] for x in found] == ["cart c-1 is large"]


def test_json_encoding_from_real_sdk_objects(app, settings, http, ch):
    """OTLP/JSON as the OpenTelemetry JSON encoder renders real SDK spans: hex ids,
    integer enums, 64-bit integers as strings."""
    spans = make_spans("json-svc", "sess-j")
    body = json_encode(spans).to_json().encode()
    assert b'"kind": 2' in body  # integer enums, not names
    key = settings.projects[0].public_key
    r = http.post(
        app.url + "/v1/traces",
        content=body,
        headers={"content-type": "application/json", "x-weftline-key": key},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {}
    trace_id = f"{spans[0].context.trace_id:032x}"
    doc = read_trace(http, app, settings, trace_id, 2)
    got = {s["span_id"]: s for s in doc["spans"]}
    for s in spans:
        v = got[f"{s.context.span_id:016x}"]
        assert v["name"] == s.name
        assert v["kind"] == s.kind.name.lower()
        assert v["duration_ms"] == pytest.approx((s.end_time - s.start_time) / 1e6, abs=1e-3)
        if s.parent is not None:
            assert v["parent_span_id"] == f"{s.parent.span_id:016x}"

    lp = LoggerProvider(resource=Resource.create({"service.name": "json-svc"}))
    mem = InMemoryLogRecordExporter()
    lp.add_log_record_processor(SimpleLogRecordProcessor(mem))
    lp.get_logger("j").emit(body="hello json", severity_text="INFO", attributes={"k": 1})
    log_body = json_encode_logs(mem.get_finished_logs()).to_json().encode()
    r = http.post(
        app.url + "/v1/logs",
        content=log_body,
        headers={"content-type": "application/json", "x-weftline-key": key},
    )
    assert r.status_code == 200 and r.json() == {}
    wait_for(lambda: tq.count_logs(ch, settings.projects[0].id) == 1)
    got_logs = api(http, app, settings, "/api/v1/logs", service="json-svc").json()["logs"]
    assert got_logs[0]["body"] == "hello json" and got_logs[0]["attributes"] == {"k": "1"}
