"""Browser → backend → Weftline: the unmodified OpenTelemetry web SDK with fetch
instrumentation in headless Chromium exports OTLP/JSON cross-origin (CORS preflight) to
Weftline, propagates `traceparent` to a small Python backend instrumented with the
Python SDK, which exports protobuf; one trace reads back with the browser span as the
parent of the backend's server span."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.conftest import LiveServer, wait_for
from weftline.embedded import free_port

PAGE_DIR = Path(__file__).parent / "browser" / "otel"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def build_page() -> None:
    """Bundle the page with esbuild (installing the locked packages first if needed)."""
    if not (PAGE_DIR / "node_modules" / ".bin" / "esbuild").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PAGE_DIR, check=True)
    subprocess.run(["npm", "run", "build"], cwd=PAGE_DIR, check=True, capture_output=True)


def backend_app(weftline_url: str, key: str) -> tuple[Starlette, TracerProvider]:
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout-api"}))
    tp.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=weftline_url + "/v1/traces", headers={"x-weftline-key": key})
        )
    )
    tracer = tp.get_tracer("checkout")

    async def cart(request: Request) -> JSONResponse:
        ctx = TraceContextTextMapPropagator().extract(dict(request.headers))
        with tracer.start_as_current_span(
            "GET /api/cart", context=ctx, kind=trace.SpanKind.SERVER
        ) as span:
            with tracer.start_as_current_span("SELECT cart", kind=trace.SpanKind.CLIENT):
                pass
            sc = span.get_span_context()
            return JSONResponse(
                {
                    "traceparent": request.headers.get("traceparent"),
                    "trace_id": f"{sc.trace_id:032x}",
                }
            )

    app = Starlette(
        routes=[Route("/api/cart", cart)],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_headers=["traceparent", "tracestate"],
                allow_methods=["GET"],
            )
        ],
    )
    return app, tp


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed")
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_browser_fetch_span_parents_backend_spans(settings, valkey, ch, serve, http):
    from playwright.sync_api import sync_playwright

    build_page()
    weftline = serve(settings, valkey.url, ch=ch)
    key = settings.projects[0].public_key
    app, tp = backend_app(weftline.url, key)
    backend = LiveServer(app, free_port()).start()
    static = LiveServer(
        Starlette(routes=[Mount("/", StaticFiles(directory=PAGE_DIR, html=True))]), free_port()
    ).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                logs: list[str] = []
                page.on("console", lambda m: logs.append(m.text))
                page.goto(
                    f"{static.url}/index.html?weftline={weftline.url}&key={key}"
                    f"&backend={backend.url}&session=sess-browser"
                )
                page.wait_for_function("window.__result !== undefined", timeout=20_000)
                result = page.evaluate("window.__result")
            finally:
                browser.close()
    finally:
        backend.stop()
        static.stop()
        tp.shutdown()
    assert "error" not in result, (result, logs)
    assert result["status"] == 200
    traceparent = result["backend"]["traceparent"]
    assert traceparent and traceparent.startswith("00-")
    trace_id = result["backend"]["trace_id"]
    assert traceparent.split("-")[1] == trace_id

    token = settings.projects[0].query_token

    def whole_trace():
        r = http.get(
            f"{weftline.url}/api/v1/traces/{trace_id}",
            headers={"authorization": f"Bearer {token}"},
        )
        return r.json() if r.status_code == 200 and r.json()["span_count"] >= 3 else None

    doc = wait_for(whole_trace, timeout=20)
    spans = {s["span_id"]: s for s in doc["spans"]}
    assert doc["services"] == ["checkout-api", "web-frontend"]
    browser_span = next(s for s in doc["spans"] if s["service"] == "web-frontend")
    server = next(s for s in doc["spans"] if s["name"] == "GET /api/cart")
    query = next(s for s in doc["spans"] if s["name"] == "SELECT cart")
    assert browser_span["kind"] == "client" and browser_span["depth"] == 0
    assert server["parent_span_id"] == browser_span["span_id"] == traceparent.split("-")[2]
    assert server["kind"] == "server" and server["depth"] == 1
    assert query["parent_span_id"] == server["span_id"] and query["depth"] == 2
    assert browser_span["children"] == [server["span_id"]]
    assert set(spans) == {browser_span["span_id"], server["span_id"], query["span_id"]}
    assert doc["session_ids"] == ["sess-browser"]

    # The browser session reaches the backend spans, which carry no session themselves.
    listed = http.get(
        f"{weftline.url}/api/v1/traces",
        params={"session_id": "sess-browser"},
        headers={"authorization": f"Bearer {token}"},
    ).json()["traces"]
    assert [t["trace_id"] for t in listed] == [trace_id]
    assert listed[0]["span_count"] == 3
