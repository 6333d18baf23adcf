"""A small app backend for the end-to-end timeline test, run in its own process:
OpenTelemetry SDK exporting OTLP/protobuf to Weftline, `sentry-sdk` with its DSN at
Weftline, the error reported inside the request's trace (the SDK's OTLP integration
takes the trace from the current OTel span).

usage: backend.py PORT WEFTLINE_URL PUBLIC_KEY DSN
"""

from __future__ import annotations

import sys

import sentry_sdk
import uvicorn
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sentry_sdk.integrations.otlp import OTLPIntegration
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


class CardDeclined(RuntimeError):
    pass


def charge(cart: str) -> None:
    raise CardDeclined(f"card declined for cart {cart}")


def make_app(weftline: str, key: str, dsn: str) -> Starlette:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-api"}))
    exporter = OTLPSpanExporter(endpoint=weftline + "/v1/traces", headers={"x-weftline-key": key})
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    sentry_sdk.init(
        dsn=dsn,
        release="checkout-api@2.0.0",
        environment="e2e",
        server_name="checkout-1",
        # Spans go through our own OTel exporter; Sentry only reads the current trace.
        integrations=[OTLPIntegration(setup_otlp_traces_exporter=False, setup_propagator=False)],
        # The test environment carries agent frameworks (openai-agents, pydantic-ai) whose
        # auto-enabled Sentry integrations import them: 10+ s per start on a loaded machine.
        auto_enabling_integrations=False,
    )
    tracer = trace.get_tracer("checkout")
    w3c = TraceContextTextMapPropagator()

    async def checkout(request: Request) -> JSONResponse:
        cart = request.query_params.get("cart", "")
        ctx = w3c.extract(dict(request.headers))
        with tracer.start_as_current_span(
            "GET /api/checkout", context=ctx, kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.route", "/api/checkout")
            with tracer.start_as_current_span("SELECT cart", kind=trace.SpanKind.CLIENT):
                pass
            trace_id = f"{span.get_span_context().trace_id:032x}"
            with tracer.start_as_current_span("charge card") as pay:
                try:
                    charge(cart)
                except CardDeclined as e:
                    event_id = sentry_sdk.capture_exception(e)
                    pay.record_exception(e)
                    pay.set_status(Status(StatusCode.ERROR, str(e)))
            span.set_attribute("http.response.status_code", 500)
            return JSONResponse(
                {"trace_id": trace_id, "event_id": event_id, "error": "card declined"}, 500
            )

    return Starlette(
        routes=[
            Route("/api/checkout", checkout),
            Route("/healthz", lambda r: PlainTextResponse("ok")),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_headers=["traceparent", "tracestate"],
                allow_methods=["GET"],
            )
        ],
    )


if __name__ == "__main__":
    port, weftline, key, dsn = sys.argv[1:5]
    uvicorn.run(make_app(weftline, key, dsn), host="127.0.0.1", port=int(port), log_level="warning")
