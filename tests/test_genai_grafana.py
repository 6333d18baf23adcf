"""The agents dashboard's GenAI panels and the GenAI alert rules, run on chDB over rows the
real worker decoder made from real frameworks' spans (pydantic-ai, OpenAI Agents SDK)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.genai_frameworks import openai_agents_run, pydantic_ai_run
from tests.test_alerts import alert_settings
from weftline.dashboards.alerting.evaluator import AlertLoop
from weftline.dashboards.alerting.rules import Threshold, load_rules
from weftline.dashboards.grafana.check import load_dashboards, run_dashboard
from weftline.dashboards.grafana.macros import TimeRange, Variable
from weftline.enrich.otlp import decode_otlp_entry


def capture() -> tuple[TracerProvider, InMemorySpanExporter]:
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "agents"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    return tp, mem


def store(ch, spans: Sequence[ReadableSpan], n: int) -> None:
    """As the OTLP worker would: one stream entry per request, `n` requests."""
    batch = uuid.uuid4().hex[:8]  # a dedup token of its own per request
    for i, req in enumerate([spans[k::n] for k in range(n)]):
        fields = {
            b"project": b"1",
            b"received_at": str(int(time.time() * 1000)).encode(),
            b"sig": b"traces",
            b"p": encode_spans(req).SerializeToString(),
        }
        by: dict[str, list] = {}
        for table, row in decode_otlp_entry(fields):
            by.setdefault(table, []).append(row)
        for table, rows in by.items():
            ch.insert(table, rows, f"otlp:{batch}-{i}:{table}")


def test_genai_panels_and_rules_read_the_frameworks_figures(ch, valkey) -> None:
    tp, mem = capture()
    pa = pydantic_ai_run(tp)
    store(ch, mem.get_finished_spans(), 1)
    tp2, mem2 = capture()
    oa = openai_agents_run(tp2)
    # One span per request: the model calls arrive without their agent (the Agents SDK
    # instrumentation puts no agent name on them), which the panel finds through the run.
    spans = mem2.get_finished_spans()
    store(ch, spans, len(spans))

    dash = next(d for d in load_dashboards() if d["uid"] == "weftline-agents")
    # The range ends a little ahead: macros bound it to whole seconds, and the spans are
    # from the last second.
    rng = TimeRange.last(3600, now=datetime.now(UTC) + timedelta(seconds=5))
    db = {"db": Variable([ch.database])}
    results = {r.title: r for r in run_dashboard(dash, ch, rng, db)}
    for title in (
        "Tokens by agent and model",
        "Agent runs per minute",
        "p95 run duration",
        "Tool error rate",
        "Runs by agent",
        "Time waiting for humans",
    ):
        assert results[title].error is None, (title, results[title].error)

    tokens: dict[str, int] = {}
    for r in results["Tokens by agent and model"].rows:
        tokens[r["agent_model"]] = tokens.get(r["agent_model"], 0) + int(r["tokens"])
    assert tokens == {
        "planner · test": pa.input_tokens + pa.output_tokens,
        "triage · gpt-fake": 20 + 5 + 40 + 3,
        "billing · gpt-fake-mini": 30 + 4,
    }
    assert sum(v for k, v in tokens.items() if k != "planner · test") == (
        oa.input_tokens + oa.output_tokens
    )
    by_agent = {r["agent_name"]: r for r in results["Runs by agent"].rows}
    assert {k: int(v["runs"]) for k, v in by_agent.items()} == {
        "planner": 1,
        "triage": 1,
        "billing": 1,
    }
    rates: dict[str, list[float]] = {}
    for r in results["Tool error rate"].rows:
        rates.setdefault(r["tool_name"], []).append(float(r["error_rate"]))
    # Two lookups (one per framework) in the same interval or in two: none failed.
    assert sorted(rates) == ["check_refund", "lookup_ticket"]
    assert rates["check_refund"] == [1.0] and set(rates["lookup_ticket"]) == {0.0}
    assert results["Agent runs per minute"].rows and results["p95 run duration"].rows

    # The rules: token spend per hour (and against a budget lowered under what was spent).
    rules = {r.name: r for r in load_rules()}
    low = dataclasses.replace(rules["token_spend_hourly"], threshold=Threshold(op="gt", value=100))
    client = aioredis.Redis.from_url(valkey.url)
    loop = AlertLoop(alert_settings(), [], ch, client)

    async def run(rule):
        return await loop.evaluate_rule(rule, time.time(), await loop.existing_tables())

    total = pa.input_tokens + pa.output_tokens + oa.input_tokens + oa.output_tokens
    out = asyncio.run(run(rules["token_spend_hourly"]))
    assert out.status == "ok" and out.breaching == []  # 2M tokens an hour: far from it
    assert [(lb["project"], v) for lb, v in out.samples] == [("1", total)]
    assert [(lb["project"], v) for lb, v in asyncio.run(run(low)).breaching] == [("1", total)]
    for name in ("tool_error_rate", "agent_stuck_busy"):
        assert asyncio.run(run(rules[name])).status == "ok", name
    asyncio.run(client.aclose())
