"""GenAI spans → `genai_spans` and `agent_runs` rows. Pure.

Frameworks name the same facts differently, and the OpenTelemetry GenAI conventions
renamed some of them, so each fact is read from the current attribute first, then the
older spellings still sent by instrumentations that predate them:

- operation: `gen_ai.operation.name`; `traceloop.span.kind` (agent, tool, workflow, llm);
  the span name's first word;
- provider: `gen_ai.provider.name`, `gen_ai.system`;
- agent: `gen_ai.agent.name` / `gen_ai.agent.id`, `agent_name` (older pydantic-ai), a run
  span named `invoke_agent X` or `X.agent`;
- tokens: `gen_ai.usage.input_tokens` / `output_tokens`, `gen_ai.usage.prompt_tokens` /
  `completion_tokens`, `llm.usage.*`; cache: `gen_ai.usage.cache_read.input_tokens`,
  `gen_ai.usage.cache_read_input_tokens` (and the same for cache creation);
- tool: `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.tool.call.arguments` /
  `.result` (older: `tool_arguments` / `tool_response`);
- handoff: operation `handoff`, `gen_ai.handoff.from_agent` / `to_agent`.

One request holds any subset of a trace's spans (a SimpleSpanProcessor sends each span
alone, children before their parents), so the agent of a span is filled in here only
from what the same request shows; the read side walks the parent links of everything
stored (weftline.dashboards.debug.agent_runs) for the exact tree and totals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from weftline.enrich.otlp_decode import SpanRecord, ns_text
from weftline.enrich.sentry_scrub import scrub

GENAI_SPANS = "genai_spans"
AGENT_RUNS = "agent_runs"

# Content a tool call may carry (opt-in in the conventions): bounded, and scrubbed like
# every other payload before it is written.
MAX_CONTENT = 8192
MAX_NAME = 256

RUN = "invoke_agent"
MODEL_OPERATIONS = frozenset(("chat", "text_completion", "generate_content", "embeddings"))
KNOWN_OPERATIONS = MODEL_OPERATIONS | {
    RUN,
    "create_agent",
    "invoke_workflow",
    "plan",
    "execute_tool",
    "retrieval",
    "handoff",
}
_TRACELOOP_KINDS = {
    "agent": RUN,
    "tool": "execute_tool",
    "workflow": "invoke_workflow",
    "llm": "chat",
    "handoff": "handoff",
}


def _first(attrs: Mapping[str, str], *keys: str) -> str:
    for k in keys:
        v = attrs.get(k)
        if v:
            return v
    return ""


def _tokens(attrs: Mapping[str, str], *keys: str) -> int:
    """Token counts arrive as ints (protobuf), as numeric text (JSON exporters) or
    as floats; anything negative, huge or not a number counts as absent."""
    for k in keys:
        raw = attrs.get(k)
        if raw is None or raw == "":
            continue
        try:
            n = float(raw)
        except ValueError:
            continue
        if math.isfinite(n) and 0 <= n < 2**63:
            return int(n)
    return 0


def operation_of(s: SpanRecord) -> str:
    """The GenAI operation of a span, or '' for a span that is not a GenAI one."""
    a = s.attributes
    op = a.get("gen_ai.operation.name", "").strip().lower()
    if op:
        return op[:64]
    kind = _TRACELOOP_KINDS.get(a.get("traceloop.span.kind", "").lower())
    if kind:
        return kind
    if any(k.startswith("gen_ai.") for k in a):
        word = s.name.split(" ", 1)[0].lower()
        if word in KNOWN_OPERATIONS:
            return word
        if a.get("gen_ai.tool.name"):
            return "execute_tool"
        if "gen_ai.request.model" in a or "gen_ai.usage.input_tokens" in a:
            return "chat"
        return "other"
    return ""


def agent_name_of(s: SpanRecord, op: str) -> str:
    a = s.attributes
    name = _first(a, "gen_ai.agent.name", "agent_name")
    if not name and op == RUN:
        if s.name.startswith("invoke_agent "):
            name = s.name[len("invoke_agent ") :]
        elif s.name.endswith(".agent"):
            name = s.name[: -len(".agent")]
        else:
            name = s.name
    return name.strip()[:MAX_NAME]


def _content(raw: str) -> str:
    """Tool arguments and results: JSON is scrubbed by key and value, text by value."""
    if not raw:
        return ""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    cleaned = scrub(value)
    text = cleaned if isinstance(cleaned, str) else orjson.dumps(cleaned).decode()
    return text[:MAX_CONTENT]


def _finish_reasons(raw: str) -> list[str]:
    if not raw:
        return []
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    items = value if isinstance(value, list) else [value]
    return [str(x)[:64] for x in items[:16]]


def _error(s: SpanRecord) -> tuple[str, str, str]:
    """(status, error type, message): an error status, or an `error.type`, fails it."""
    etype = s.attributes.get("error.type", "")
    message = s.status_message
    for name, attrs in zip(s.event_names, s.event_attributes, strict=False):
        if name == "exception":
            etype = etype or attrs.get("exception.type", "")
            message = message or attrs.get("exception.message", "")
    failed = s.status_code == "error" or bool(etype)
    return ("error" if failed else "ok"), etype[:MAX_NAME], message[:MAX_CONTENT]


def _decision(s: SpanRecord) -> str:
    """A `gen_ai.tool.call.decision` event's outcome (still under discussion in the
    conventions: the outcome key is read under the names proposed so far)."""
    for name, attrs in zip(s.event_names, s.event_attributes, strict=False):
        if name == "gen_ai.tool.call.decision":
            return _first(
                attrs, "gen_ai.tool.call.decision.outcome", "gen_ai.decision.outcome", "outcome"
            )[:32]
    return _first(s.attributes, "gen_ai.tool.call.decision.outcome")[:32]


def genai_span_row(
    s: SpanRecord, op: str, project_id: int, received: str, retention_days: int
) -> dict[str, Any]:
    a = s.attributes
    status, etype, message = _error(s)
    return {
        "project_id": project_id,
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "operation": op,
        "name": s.name[:MAX_NAME],
        "service_name": s.service_name,
        "start_time": ns_text(s.start_ns),
        "duration_ns": s.duration_ns,
        "status": status,
        "error_type": etype,
        "error_message": message,
        "agent_name": agent_name_of(s, op),
        "agent_id": _first(a, "gen_ai.agent.id")[:MAX_NAME],
        "run_span_id": s.span_id if op == RUN else "",
        "conversation_id": _first(a, "gen_ai.conversation.id")[:MAX_NAME],
        "provider": _first(a, "gen_ai.provider.name", "gen_ai.system")[:64],
        "request_model": _first(a, "gen_ai.request.model", "llm.request.model")[:MAX_NAME],
        "response_model": _first(a, "gen_ai.response.model", "llm.response.model")[:MAX_NAME],
        "input_tokens": _tokens(
            a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens"
        ),
        "output_tokens": _tokens(
            a,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.usage.completion_tokens",
        ),
        "cache_read_tokens": _tokens(
            a, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"
        ),
        "cache_creation_tokens": _tokens(
            a,
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
        ),
        "finish_reasons": _finish_reasons(a.get("gen_ai.response.finish_reasons", "")),
        "tool_name": _first(a, "gen_ai.tool.name")[:MAX_NAME],
        "tool_call_id": _first(a, "gen_ai.tool.call.id", "tool_call_id")[:MAX_NAME],
        "tool_type": _first(a, "gen_ai.tool.type")[:64],
        "tool_arguments": _content(_first(a, "gen_ai.tool.call.arguments", "tool_arguments")),
        "tool_result": _content(_first(a, "gen_ai.tool.call.result", "tool_response")),
        "handoff_from": _first(a, "gen_ai.handoff.from_agent")[:MAX_NAME],
        "handoff_to": _first(a, "gen_ai.handoff.to_agent")[:MAX_NAME],
        "decision": _decision(s),
        "session_id": s.session_id,
        "received_at": received,
        "retention_days": retention_days,
    }


def agent_run_row(g: dict[str, Any], s: SpanRecord) -> dict[str, Any]:
    a = s.attributes
    return {
        "project_id": g["project_id"],
        "agent_name": g["agent_name"],
        "agent_id": g["agent_id"],
        "trace_id": g["trace_id"],
        "span_id": g["span_id"],
        "parent_span_id": g["parent_span_id"],
        "name": g["name"],
        "service_name": g["service_name"],
        "start_time": g["start_time"],
        "duration_ns": g["duration_ns"],
        "status": g["status"],
        "error_type": g["error_type"],
        "error_message": g["error_message"],
        "conversation_id": g["conversation_id"],
        "provider": g["provider"],
        "request_model": g["request_model"] or _first(a, "model_name")[:MAX_NAME],
        "reported_input_tokens": _tokens(a, "gen_ai.aggregated_usage.input_tokens"),
        "reported_output_tokens": _tokens(a, "gen_ai.aggregated_usage.output_tokens"),
        "session_id": g["session_id"],
        "received_at": g["received_at"],
        "retention_days": g["retention_days"],
    }


MAX_ANCESTRY = 256


def _attribute_within_request(rows: list[dict[str, Any]], parents: dict[str, str]) -> None:
    """In place: a span without its own agent takes that of its nearest enclosing run,
    when the request holds the path to it (`parents`: every span of the request)."""
    runs = {r["span_id"]: r for r in rows if r["operation"] == RUN}
    if not runs:
        return
    for r in rows:
        if r["operation"] == RUN:
            continue
        sid, seen = r["parent_span_id"], 0
        while sid and seen < MAX_ANCESTRY:
            run = runs.get(sid)
            if run is not None:
                r["run_span_id"] = run["span_id"]
                if not r["agent_name"]:
                    r["agent_name"] = run["agent_name"]
                    r["agent_id"] = r["agent_id"] or run["agent_id"]
                break
            sid, seen = parents.get(sid, ""), seen + 1


def genai_rows(
    spans: Iterable[SpanRecord], project_id: int, received: str, retention_days: int
) -> list[tuple[str, dict[str, Any]]]:
    """The GenAI rows of one decoded request: a `genai_spans` row per GenAI span, and an
    `agent_runs` row per agent run."""
    out: list[tuple[str, dict[str, Any]]] = []
    rows: list[dict[str, Any]] = []
    parents: dict[str, dict[str, str]] = {}
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        parents.setdefault(s.trace_id, {})[s.span_id] = s.parent_span_id
        op = operation_of(s)
        if not op:
            continue
        g = genai_span_row(s, op, project_id, received, retention_days)
        rows.append(g)
        by_trace.setdefault(s.trace_id, []).append(g)
        if op == RUN:
            out.append((AGENT_RUNS, agent_run_row(g, s)))
    # Span ids are unique within a trace only: attribute trace by trace.
    for trace_id, trace_rows in by_trace.items():
        _attribute_within_request(trace_rows, parents[trace_id])
    return [(GENAI_SPANS, g) for g in rows] + out
