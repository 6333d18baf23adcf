"""Real agent frameworks, offline, exporting through the real OTLP/HTTP exporter.

- pydantic-ai with its `TestModel` and its own OpenTelemetry instrumentation
  (`Agent.instrument_all()`);
- the OpenAI Agents SDK with `opentelemetry-instrumentation-openai-agents`, its model
  replaced by the SDK's own `ScriptedModel` answers, traced the way the SDK's Responses
  model traces a call (a response span holding the `Response` with its usage), which is
  what the instrumentation reads tokens from. No request leaves the machine.

Each exporter is wired through a SimpleSpanProcessor: one export request per span,
children before their parents, the hardest order for the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def provider(url: str, key: str, service: str) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers={"x-weftline-key": key})
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


@dataclass
class RunResult:
    trace_id: str
    input_tokens: int
    output_tokens: int
    output: Any


@contextlib.contextmanager
def pydantic_ai_instrumented(tp: TracerProvider) -> Iterator[None]:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings

    Agent.instrument_all(InstrumentationSettings(tracer_provider=tp))
    try:
        yield
    finally:
        Agent.instrument_all(False)


def pydantic_ai_run(
    tp: TracerProvider,
    session_id: str = "",
    prompt: str = "look up t-1",
    in_tool: Callable[[str], None] | None = None,
) -> RunResult:
    """A `planner` agent with one tool, under an app span that names the browser session
    (as a backend handler of the canvas app would). `in_tool(trace_id)` runs inside the
    tool (e.g. to ask a human and wait)."""
    from opentelemetry import trace
    from pydantic_ai import Agent
    from pydantic_ai.models.test import TestModel

    agent = Agent(TestModel(), name="planner", instructions="Plan the ticket work.")

    @agent.tool_plain
    def lookup_ticket(ticket_id: str) -> str:
        if in_tool is not None:
            in_tool(f"{trace.get_current_span().get_span_context().trace_id:032x}")
        return f"ticket {ticket_id} is open"

    tracer = tp.get_tracer("canvas.backend")
    with pydantic_ai_instrumented(tp):
        attrs = {"session.id": session_id} if session_id else {}
        with tracer.start_as_current_span("POST /api/agents/planner/run", attributes=attrs) as s:
            result = agent.run_sync(prompt)
            trace_id = f"{s.get_span_context().trace_id:032x}"
    usage = result.usage
    return RunResult(trace_id, usage.input_tokens, usage.output_tokens, result.output)


@contextlib.contextmanager
def openai_agents_instrumented(tp: TracerProvider) -> Iterator[None]:
    import agents
    from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    os.environ.setdefault("OPENAI_API_KEY", "sk-offline-test")
    inst = OpenAIAgentsInstrumentor(replace_existing_processors=True)
    inst.instrument(tracer_provider=tp)
    try:
        yield
    finally:
        inst.uninstrument()
        agents.set_trace_processors([])


def _fake_responses_model(model: str, steps: list[Any]) -> Any:
    from agents.models.interface import Model
    from agents.testing import ScriptedModel
    from agents.tracing import response_span
    from openai.types.responses import Response, ResponseUsage
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    class FakeResponsesModel(Model):
        def __init__(self) -> None:
            self.scripted = ScriptedModel(steps)

        async def get_response(self, *args: Any, **kw: Any) -> Any:
            tracing = kw.get("tracing", args[6] if len(args) > 6 else None)
            disabled = tracing is not None and tracing.is_disabled()
            with response_span(disabled=disabled) as span:
                out = await self.scripted.get_response(*args, **kw)
                u = out.usage
                span.span_data.response = Response.model_construct(
                    id=out.response_id or "resp-fake",
                    model=model,
                    object="response",
                    created_at=time.time(),
                    output=out.output,
                    status="completed",
                    tools=[],
                    tool_choice="auto",
                    parallel_tool_calls=True,
                    usage=ResponseUsage(
                        input_tokens=u.input_tokens,
                        output_tokens=u.output_tokens,
                        total_tokens=u.total_tokens,
                        input_tokens_details=InputTokensDetails(
                            cached_tokens=u.input_tokens_details.cached_tokens,
                            cache_write_tokens=0,
                        ),
                        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
                    ),
                )
            return out

        def stream_response(self, *args: Any, **kw: Any) -> Any:
            raise NotImplementedError("the tests do not stream")

    return FakeResponsesModel()


def openai_agents_run(tp: TracerProvider) -> RunResult:
    """`triage` calls two tools (one fails) and hands off to `billing`."""
    from agents import Agent, Runner, function_tool
    from agents.testing import ModelStep, assistant_message, function_call
    from agents.usage import Usage

    @function_tool
    def lookup_ticket(ticket_id: str) -> str:
        """Look up a ticket."""
        return f"ticket {ticket_id} is open"

    @function_tool
    def check_refund(ticket_id: str) -> str:
        """Check refund eligibility."""
        raise ValueError("refund service down")

    billing = Agent(
        name="billing",
        instructions="Issue refunds.",
        model=_fake_responses_model(
            "gpt-fake-mini",
            [
                ModelStep(
                    output=[assistant_message("refund issued")],
                    usage=Usage(requests=1, input_tokens=30, output_tokens=4, total_tokens=34),
                )
            ],
        ),
    )
    triage = Agent(
        name="triage",
        instructions="Route the ticket.",
        tools=[lookup_ticket, check_refund],
        handoffs=[billing],
        model=_fake_responses_model(
            "gpt-fake",
            [
                ModelStep(
                    output=[
                        function_call("lookup_ticket", {"ticket_id": "t-1"}, call_id="call_1"),
                        function_call("check_refund", {"ticket_id": "t-1"}, call_id="call_2"),
                    ],
                    usage=Usage(requests=1, input_tokens=20, output_tokens=5, total_tokens=25),
                ),
                ModelStep(
                    output=[function_call("transfer_to_billing", {}, call_id="call_3")],
                    usage=Usage(requests=1, input_tokens=40, output_tokens=3, total_tokens=43),
                ),
            ],
        ),
    )
    with openai_agents_instrumented(tp):
        result = asyncio.run(Runner.run(triage, "help with t-1"))
    # The trace id is the instrumentation's own (its workflow span): read back by agent.
    usage = result.context_wrapper.usage
    return RunResult("", usage.input_tokens, usage.output_tokens, result.final_output)
