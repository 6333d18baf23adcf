"""GenAI extraction (pure, from decoded spans) and run assembly, on spans made by real
instrumentation: pydantic-ai's nested agents, older attribute names, scrubbed tool
content, and exactly-once storage of the rows."""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from pydantic_ai import Agent, RunContext  # module level: tool annotations resolve here
from pydantic_ai.models.test import TestModel

from tests.genai_frameworks import pydantic_ai_instrumented
from weftline.dashboards.debug.agent_runs import build_forest, run_summary, run_tree
from weftline.enrich.otlp import decode_otlp_entry


def capture() -> tuple[TracerProvider, InMemorySpanExporter]:
    mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    return tp, mem


def decode(spans) -> dict[str, list[dict]]:
    fields = {
        b"project": b"1",
        b"received_at": str(int(time.time() * 1000)).encode(),
        b"sig": b"traces",
        b"p": encode_spans(spans).SerializeToString(),
    }
    by: dict[str, list[dict]] = {}
    for table, row in decode_otlp_entry(fields):
        by.setdefault(table, []).append(row)
    return by


def as_read(rows: list[dict]) -> list[dict]:
    """Rows as the queries return them (start_ns instead of DateTime64 text)."""
    out = []
    for r in rows:
        s, frac = r["start_time"].split(".")
        out.append({**r, "start_ns": int(s) * 1_000_000_000 + int(frac)})
    return out


def test_nested_agent_run_usage_equals_the_frameworks() -> None:
    tp, mem = capture()
    coder = Agent(TestModel(), name="coder")
    planner = Agent(TestModel(), name="planner")

    @planner.tool
    async def delegate(ctx: RunContext[None], task: str) -> str:
        return (await coder.run(task, usage=ctx.usage)).output

    with pydantic_ai_instrumented(tp):
        result = planner.run_sync("plan the release")
    rows = decode(mem.get_finished_spans())
    forest = build_forest(as_read(rows["genai_spans"]), as_read(rows["spans"]))
    runs = {r["agent_name"]: r for r in as_read(rows["agent_runs"])}
    top = run_summary(runs["planner"], forest, {})
    sub = run_summary(runs["coder"], forest, {})
    # The planner lent its usage to the coder: the framework's figure covers both.
    assert top["usage"] == {
        "input_tokens": result.usage.input_tokens,
        "output_tokens": result.usage.output_tokens,
    }
    assert top["nested_runs"] == [sub["run_id"]] and sub["parent_run_id"] == top["run_id"]
    assert top["tool_calls"] == [{"name": "delegate", "count": 1, "errors": 0}]
    assert top["model_calls"] == 3 and sub["model_calls"] == 1  # its own 2 + the coder's
    # pydantic-ai's own per-run figure leaves the nested agent out; it is kept, not added.
    assert top["reported_usage"]["input_tokens"] < top["usage"]["input_tokens"]
    tree = run_tree(runs["planner"], forest, {})["tree"]
    tool = next(c for c in tree["children"] if c["type"] == "tool_call")
    assert [c["type"] for c in tool["children"]] == ["agent_run"]
    assert tool["children"][0]["agent_name"] == "coder"
    assert [c["type"] for c in tool["children"][0]["children"]] == ["model_call"]


def test_older_attribute_names_and_scrubbed_tool_content() -> None:
    tp, mem = capture()
    tracer = tp.get_tracer("legacy")
    with tracer.start_as_current_span(
        "researcher.agent", attributes={"traceloop.span.kind": "agent", "gen_ai.system": "openai"}
    ):
        with tracer.start_as_current_span(
            "openai.chat",
            attributes={
                "llm.request.type": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 3,
                "gen_ai.usage.cache_read_input_tokens": 4,
                "gen_ai.response.finish_reasons": ("stop",),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool pay",
            attributes={
                "gen_ai.tool.name": "pay",
                "gen_ai.tool.call.id": "call_9",
                "gen_ai.tool.call.arguments": (
                    '{"api_key": "sk-live-123", "card": "4111 1111 1111 1111"}'
                ),
                "gen_ai.tool.call.result": "charged 4111-1111-1111-1111",
                "error.type": "PaymentDeclined",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "declined"))
    rows = decode(mem.get_finished_spans())
    g = {r["name"]: r for r in rows["genai_spans"]}
    chat = g["openai.chat"]
    assert chat["operation"] == "chat" and chat["provider"] == "openai"
    assert (chat["input_tokens"], chat["output_tokens"], chat["cache_read_tokens"]) == (10, 3, 4)
    assert chat["finish_reasons"] == ["stop"]
    assert chat["agent_name"] == "researcher"  # from its run, in the same request
    run = g["researcher.agent"]
    assert run["operation"] == "invoke_agent" and run["agent_name"] == "researcher"
    pay = g["execute_tool pay"]
    assert pay["operation"] == "execute_tool" and pay["status"] == "error"
    assert pay["error_type"] == "PaymentDeclined" and pay["error_message"] == "declined"
    assert "sk-live" not in pay["tool_arguments"] and "4111" not in pay["tool_arguments"]
    assert "4111" not in pay["tool_result"] and "[Filtered]" in pay["tool_result"]
    # A span without GenAI attributes is not a GenAI span; one run row per agent run.
    assert [r["agent_name"] for r in rows["agent_runs"]] == ["researcher"]
    assert len(rows["genai_spans"]) == 3


def test_redelivered_rows_count_once(ch) -> None:
    from tests.genai_frameworks import pydantic_ai_run

    tp, mem = capture()
    pydantic_ai_run(tp)
    spans = mem.get_finished_spans()
    for attempt in ("a", "b"):  # a redelivered entry: a new batch, a new token
        for table, rows in decode(spans).items():
            ch.insert(table, rows, f"otlp:{attempt}:{table}")
    db = ch.database
    n = ch.query(f"SELECT count() AS n FROM {db}.genai_spans FINAL")[0]["n"]
    runs = ch.query(f"SELECT count() AS n FROM {db}.agent_runs FINAL")[0]["n"]
    assert (n, runs) == (4, 1)
