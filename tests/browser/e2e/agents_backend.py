"""The canvas app's agent backend for the agents canvas test, in its own process: a click
on an agent node of the page's React Flow canvas posts to `/api/agents/{name}/run`, which
runs that pydantic-ai agent (offline `TestModel`, its own OpenTelemetry instrumentation)
inside the request's server span, continuing the browser's trace (traceparent).

usage: agents_backend.py PORT WEFTLINE_URL PUBLIC_KEY
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.genai_frameworks import provider, pydantic_ai_instrumented  # noqa: E402

AGENTS = ("planner", "coder")


def make_app(weftline: str, key: str) -> Starlette:
    tp = provider(weftline, key, "canvas-agents")
    tracer = tp.get_tracer("canvas.agents")
    w3c = TraceContextTextMapPropagator()

    async def run_agent(name: str, prompt: str) -> dict:
        from pydantic_ai import Agent
        from pydantic_ai.models.test import TestModel

        agent = Agent(TestModel(), name=name, instructions=f"You are the {name}.")

        @agent.tool_plain
        def lookup_ticket(ticket_id: str) -> str:
            return f"ticket {ticket_id} is open"

        with pydantic_ai_instrumented(tp):
            result = await agent.run(prompt)
        return {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
        }

    async def run(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in AGENTS:
            return JSONResponse({"error": "no such agent"}, 404)
        with tracer.start_as_current_span(
            f"POST /api/agents/{name}/run",
            context=w3c.extract(dict(request.headers)),
            kind=trace.SpanKind.SERVER,
        ) as span:
            usage = await run_agent(name, "look up t-1")
            trace_id = f"{span.get_span_context().trace_id:032x}"
        return JSONResponse({"agent": name, "trace_id": trace_id, "usage": usage})

    return Starlette(
        routes=[
            Route("/api/agents/{name}/run", run, methods=["POST"]),
            Route("/healthz", lambda r: PlainTextResponse("ok")),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_headers=["traceparent", "tracestate", "content-type"],
                allow_methods=["POST"],
            )
        ],
    )


if __name__ == "__main__":
    port, weftline, key = sys.argv[1:4]
    uvicorn.run(make_app(weftline, key), host="127.0.0.1", port=int(port), log_level="warning")
