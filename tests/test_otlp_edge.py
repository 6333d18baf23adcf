"""The OTLP edge's answers (partial_success, 400/401/403/413/415/429/503, CORS), the
503 backpressure path with the real exporter retrying, and exactly-once storage."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time

import orjson
import pytest
import redis.asyncio as aioredis
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.conftest import make_project, wait_for
from tests.test_otlp_sdk import make_spans
from weftline.enrich.otlp import OtlpHandler
from weftline.enrich.stream_consumer import ConsumerOptions, Entry, StreamConsumer
from weftline.ground.metrics import REGISTRY
from weftline.storage import trace_queries as tq
from weftline.storage.keys import dlq_stream, in_stream

PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}


def span_request(trace_ids: list[bytes], start: int = 1_795_626_418_163_042_456) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "edge-test"
    ss = rs.scope_spans.add()
    for i, tid in enumerate(trace_ids):
        sp = ss.spans.add()
        sp.trace_id = tid
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.name = f"op{i}"
        sp.kind = 2
        sp.start_time_unix_nano = start + i
        sp.end_time_unix_nano = start + i + 1000
    return req.SerializeToString()


def rejected(reason: str, kind: str = "otlp") -> float:
    v = REGISTRY.get_sample_value(
        "weftline_ingest_rejected_requests_total", {"kind": kind, "reason": reason}
    )
    return v or 0.0


@pytest.fixture
def app(settings, valkey, ch, serve):
    settings.max_body_bytes = 64 * 1024
    return serve(settings, valkey.url, ch=ch)


def key_headers(settings, base: dict) -> dict:
    return {**base, "x-weftline-key": settings.projects[0].public_key}


def test_partial_success_protobuf_and_json(app, settings, http, ch):
    good, bad = b"\x01" * 16, b"\x02" * 8
    r = http.post(
        app.url + "/v1/traces", content=span_request([good, bad]), headers=key_headers(settings, PB)
    )
    assert r.status_code == 200
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert "invalid trace_id" in resp.partial_success.error_message

    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "AB" * 16,
                                "spanId": "cd" * 8,
                                "name": "ok",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": 1795626418163042456,
                                "endTimeUnixNano": "1795626418163043456",
                                "status": {"code": "STATUS_CODE_ERROR"},
                                "unknownField": {"ignored": True},
                            },
                            {"traceId": "", "spanId": "cd" * 8, "name": "no trace"},
                        ]
                    }
                ]
            }
        ]
    }
    r = http.post(
        app.url + "/v1/traces", content=orjson.dumps(doc), headers=key_headers(settings, JS)
    )
    assert r.status_code == 200
    assert r.json() == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "1 spans rejected: 1 invalid trace_id",
        }
    }
    pid = settings.projects[0].id
    wait_for(lambda: tq.count_spans(ch, pid) == 2)
    spans = tq.trace_spans(ch, pid, "ab" * 16)
    assert [(s["kind"], s["status_code"], s["service_name"]) for s in spans] == [
        ("client", "error", "unknown_service")
    ]


def test_failure_answers(app, settings, http):
    url = app.url + "/v1/traces"
    body = span_request([b"\x01" * 16])

    r = http.post(url, content=body, headers=PB)
    assert r.status_code == 401
    assert status_pb2.Status.FromString(r.content).code == 16

    r = http.post(url, content=body, headers={**PB, "x-weftline-key": "0" * 32})
    assert r.status_code == 403

    before = rejected("invalid_otlp")
    r = http.post(url, content=b"\xff\xff\xff", headers=key_headers(settings, PB))
    assert r.status_code == 400 and r.headers["content-type"] == "application/x-protobuf"
    st = status_pb2.Status.FromString(r.content)
    assert st.code == 3 and "invalid_otlp" in st.message
    assert rejected("invalid_otlp") == before + 1

    r = http.post(url, content=b"{not json", headers=key_headers(settings, JS))
    assert r.status_code == 400 and r.json()["error"] == "invalid_otlp" and r.json()["code"] == 3
    bad_hex = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"00"}]}]}]}'
    r = http.post(url, content=bad_hex, headers=key_headers(settings, JS))
    assert r.status_code == 400 and "not hex" in r.json()["detail"]

    r = http.post(url, content=body, headers=key_headers(settings, {"content-type": "text/plain"}))
    assert r.status_code == 415

    r = http.post(url, content=b"\0" * (65 * 1024), headers=key_headers(settings, PB))
    assert r.status_code == 413 and status_pb2.Status.FromString(r.content).code == 8
    bomb = gzip.compress(b"\0" * (2 * 1024 * 1024))
    r = http.post(
        url, content=bomb, headers=key_headers(settings, {**PB, "content-encoding": "gzip"})
    )
    assert r.status_code == 413
    r = http.post(
        url, content=b"not gzip", headers=key_headers(settings, {**PB, "content-encoding": "gzip"})
    )
    assert r.status_code == 400

    r = http.get(url)
    assert r.status_code == 405


def test_cors_preflight_and_response_headers(app, settings, http):
    r = http.options(
        app.url + "/v1/traces",
        headers={
            "origin": "http://localhost:5173",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-weftline-key",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "x-weftline-key" in r.headers["access-control-allow-headers"]
    r = http.post(
        app.url + "/v1/traces",
        content=span_request([b"\x05" * 16]),
        headers=key_headers(settings, {**PB, "origin": "http://localhost:5173"}),
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_rate_limit_429_with_retry_after(settings, valkey, ch, serve, http):
    settings.projects = [make_project(1, rate_limit=1.0)]
    app = serve(settings, valkey.url, ch=ch)
    h = key_headers(settings, PB)
    body = span_request([b"\x06" * 16])
    codes = [http.post(app.url + "/v1/traces", content=body, headers=h) for _ in range(3)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1


def test_backpressure_503_exporter_retries_and_nothing_is_lost(settings, valkey, vk, ch, serve):
    """The buffer is full: the edge answers 503 + Retry-After, the unmodified Python
    exporter retries, and once there is room its spans are stored."""
    settings.backlog_budget.otlp = 1
    settings.retry_after_seconds = 1
    app = serve(settings, valkey.url, ch=ch, run_workers=False)
    stream = in_stream("otlp")
    filler = vk.xadd(stream, {"filler": "1"})
    spans = make_spans("pressure", "s-p")
    exporter = OTLPSpanExporter(
        endpoint=app.url + "/v1/traces",
        headers={"x-weftline-key": settings.projects[0].public_key},
    )
    before = rejected("backlog_full")
    result: list[SpanExportResult] = []
    t = threading.Thread(target=lambda: result.append(exporter.export(spans)))
    t.start()
    wait_for(lambda: rejected("backlog_full") >= before + 1, timeout=8)
    vk.xdel(stream, filler)  # room again: the next retry is accepted
    t.join(15)
    assert result == [SpanExportResult.SUCCESS]
    assert vk.xlen(stream) == 1

    async def drain() -> None:
        client = aioredis.Redis.from_url(valkey.url)
        handler = OtlpHandler(ch, lambda _: 30)
        consumer = StreamConsumer(client, handler, "t", ConsumerOptions(batch_max_age_ms=10))
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        deadline = time.monotonic() + 15
        while await client.xlen(stream) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await client.aclose()

    asyncio.run(drain())
    trace_id = f"{spans[0].context.trace_id:032x}"
    assert tq.count_spans(ch, settings.projects[0].id, trace_id) == len(spans) == 2


def test_exactly_once_under_redelivery_and_exporter_retry(app, settings, http, ch, vk):
    """The same request sent twice (an exporter retry after a lost answer) and the same
    stream entry stored twice (a worker redelivery) both read back once."""
    pid = settings.projects[0].id
    body = span_request([b"\x07" * 16, b"\x08" * 16])
    for _ in range(2):
        r = http.post(app.url + "/v1/traces", content=body, headers=key_headers(settings, PB))
        assert r.status_code == 200
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    for _ in range(2):  # two identical lines in one request are two records
        rec = sl.log_records.add()
        rec.time_unix_nano = 1_795_626_418_000_000_000
        rec.body.string_value = "same line"
    for _ in range(2):
        r = http.post(
            app.url + "/v1/logs",
            content=logs.SerializeToString(),
            headers=key_headers(settings, PB),
        )
        assert r.status_code == 200
    wait_for(lambda: vk.xlen(in_stream("otlp")) == 0)
    wait_for(lambda: tq.count_spans(ch, pid) == 2 and tq.count_logs(ch, pid) == 2)

    # A redelivered entry: decode and store again under another batch token.
    handler = OtlpHandler(ch, lambda _: 30)
    entry = Entry(
        "1-0",
        {
            b"p": body,
            b"project": str(pid).encode(),
            b"received_at": b"1795626418000",
            b"sig": b"traces",
        },
    )
    rows = handler.decode(entry)
    asyncio.run(handler.store(rows, "otlp:redelivery:1"))
    asyncio.run(handler.store(rows, "otlp:redelivery:2"))
    assert tq.count_spans(ch, pid) == 2
    assert tq.count_logs(ch, pid) == 2
    assert tq.trace_bounds(ch, pid, "07" * 16) is not None
    assert len(tq.trace_spans(ch, pid, "07" * 16)) == 1


def test_poison_entry_goes_to_dlq_and_stream_moves_on(app, settings, http, ch, vk):
    vk.xadd(
        in_stream("otlp"),
        {"p": b"\xff\xff", "project": 1, "received_at": 1, "sig": "traces", "n": 1},
    )
    vk.xadd(in_stream("otlp"), {"p": b"", "project": 1, "received_at": 1, "sig": "profiles"})
    r = http.post(
        app.url + "/v1/traces",
        content=span_request([b"\x09" * 16]),
        headers=key_headers(settings, PB),
    )
    assert r.status_code == 200
    wait_for(lambda: tq.count_spans(ch, settings.projects[0].id) == 1)
    dead = wait_for(
        lambda: vk.xrange(dlq_stream("otlp")) if vk.xlen(dlq_stream("otlp")) == 2 else None
    )
    reasons = sorted(f[b"reason"].decode() for _, f in dead)
    assert "protobuf" in reasons[0] and "unknown OTLP signal" in reasons[1]
