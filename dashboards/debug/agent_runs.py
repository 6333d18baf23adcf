"""Agent runs as read: GenAI spans of a trace → runs with their totals, and a run's tree.

A run is an `invoke_agent` span and everything under it. The parent links are walked
over every stored span of the trace (a model call may sit under a plain span, such as a
framework's workflow span, between it and its agent), so spans that arrived in any
order and in any request give the same tree. Pure functions over query rows.

- usage: the model calls of the run's whole subtree, nested agents included (what a
  framework reports for a run that lends its usage to the agents it calls);
- tool calls and models: the run's own (nested agents list theirs);
- time waiting for a human: `hitl` questions of the run's agent or trace while the run was
  open (opened → answered/dismissed, or still open), and tool calls whose decision was
  `require_approval`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from weftline.enrich.genai import MODEL_OPERATIONS, RUN
from weftline.ground.times import api_time

MAX_DEPTH = 256


def item_type(operation: str) -> str:
    if operation == RUN:
        return "agent_run"
    if operation in MODEL_OPERATIONS:
        return "model_call"
    if operation == "execute_tool":
        return "tool_call"
    return operation


def iso(ns: int) -> str:
    # The API's one time format (weftline.ground.times.api_time).
    return api_time(int(ns) // 1_000_000) or ""


@dataclass
class Forest:
    """The GenAI spans of some traces, each linked to its nearest GenAI ancestor."""

    spans: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    children: dict[tuple[str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def kids(self, s: dict[str, Any]) -> list[dict[str, Any]]:
        return self.children.get((s["trace_id"], s["span_id"]), [])


def build_forest(genai: list[dict[str, Any]], parents: list[dict[str, Any]]) -> Forest:
    """`genai`: genai_spans rows; `parents`: (trace_id, span_id, parent_span_id) of every
    span of the same traces."""
    f = Forest()
    up: dict[tuple[str, str], str] = {}
    for p in parents:
        up[(p["trace_id"], p["span_id"])] = p["parent_span_id"]
    for g in genai:
        g["start_ns"] = int(g["start_ns"])
        g["duration_ns"] = int(g["duration_ns"])
        f.spans.setdefault((g["trace_id"], g["span_id"]), g)
        up.setdefault((g["trace_id"], g["span_id"]), g["parent_span_id"])
    for key, g in f.spans.items():
        trace, pid, seen = key[0], g["parent_span_id"], 0
        g["genai_parent"] = ""
        while pid and seen < MAX_DEPTH and pid != key[1]:
            if (trace, pid) in f.spans:
                g["genai_parent"] = pid
                f.children[(trace, pid)].append(g)
                break
            pid, seen = up.get((trace, pid), ""), seen + 1
    for kids in f.children.values():
        kids.sort(key=lambda s: (s["start_ns"], s["span_id"]))
    _handoff_targets(f)
    return f


def _handoff_targets(f: Forest) -> None:
    """A handoff that does not name its target (the Agents SDK's instrumentation opens
    the span before the target is known) hands off to the next run of another agent
    that starts in the same trace after it: `handoff_to` is filled in, marked inferred."""
    runs = sorted(
        (s for s in f.spans.values() if s["operation"] == RUN), key=lambda s: s["start_ns"]
    )
    for h in f.spans.values():
        if h["operation"] != "handoff" or h["handoff_to"]:
            continue
        for r in runs:
            if (
                r["trace_id"] == h["trace_id"]
                and r["start_ns"] >= h["start_ns"]
                and r["agent_name"] not in ("", h["handoff_from"])
            ):
                h["handoff_to"] = r["agent_name"]
                h["handoff_to_inferred"] = True
                break


def _walk(f: Forest, s: dict[str, Any], own_only: bool) -> list[dict[str, Any]]:
    """Descendants of `s` (depth first); with own_only, not into nested runs."""
    out: list[dict[str, Any]] = []
    stack = list(reversed(f.kids(s)))
    seen: set[str] = set()
    while stack:
        c = stack.pop()
        if c["span_id"] in seen:
            continue
        seen.add(c["span_id"])
        out.append(c)
        if own_only and c["operation"] == RUN:
            continue
        stack.extend(reversed(f.kids(c)))
    return out


def usage_of(items: list[dict[str, Any]]) -> dict[str, int]:
    calls = [i for i in items if i["operation"] in MODEL_OPERATIONS]
    return {
        "input_tokens": sum(int(i["input_tokens"]) for i in calls),
        "output_tokens": sum(int(i["output_tokens"]) for i in calls),
        "cache_read_tokens": sum(int(i["cache_read_tokens"]) for i in calls),
        "cache_creation_tokens": sum(int(i["cache_creation_tokens"]) for i in calls),
        "model_calls": len(calls),
    }


def tool_summary(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}
    for i in items:
        if i["operation"] != "execute_tool":
            continue
        name = i["tool_name"] or i["name"]
        t = by.setdefault(name, {"name": name, "count": 0, "errors": 0})
        t["count"] += 1
        t["errors"] += i["status"] == "error"
    return sorted(by.values(), key=lambda t: t["name"])


def models_of(items: list[dict[str, Any]]) -> list[str]:
    return sorted(
        {
            i["response_model"] or i["request_model"]
            for i in items
            if i["operation"] in MODEL_OPERATIONS and (i["response_model"] or i["request_model"])
        }
    )


def hitl_intervals(events: list[dict[str, Any]], now_ns: int) -> list[dict[str, Any]]:
    """`hitl` events → one interval per question/review: opened → answered/dismissed
    (or still open). Notifications wait for nobody."""
    from weftline.ground.times import parse_ch_ms

    open_: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for e in events:
        if e["hitl_kind"] == "notification":
            continue
        key = e["hitl_id"] or e["event_uid"]
        ts = parse_ch_ms(e["ts"]) * 1_000_000
        if e["status"] == "opened":
            open_.setdefault(key, {**e, "hitl_id": key, "opened_ns": ts})
        elif key in open_:
            o = open_.pop(key)
            out.append({**o, "closed_ns": ts, "state": e["status"]})
    for o in open_.values():
        out.append({**o, "closed_ns": now_ns, "state": "open"})
    return out


def waiting_of(
    run: dict[str, Any], items: list[dict[str, Any]], intervals: list[dict[str, Any]]
) -> tuple[float, list[dict[str, Any]]]:
    """Milliseconds the run spent waiting for a human, and what it waited on."""
    lo, hi = run["start_ns"], run["start_ns"] + run["duration_ns"]
    names = {run["agent_name"], run.get("agent_id", "")} - {""}
    waits: list[dict[str, Any]] = []
    for iv in intervals:
        if not (iv["trace_id"] == run["trace_id"] or iv["agent_id"] in names):
            continue
        a, b = max(lo, iv["opened_ns"]), min(hi, iv["closed_ns"])
        if b > a:
            waits.append(
                {
                    "source": "hitl",
                    "hitl_id": iv["hitl_id"],
                    "kind": iv["hitl_kind"],
                    "state": iv["state"],
                    "start": iso(a),
                    "waited_ms": round((b - a) / 1e6, 3),
                }
            )
    for i in items:
        if i["operation"] == "execute_tool" and i["decision"] == "require_approval":
            waits.append(
                {
                    "source": "gen_ai.tool.call.decision",
                    "tool_call_id": i["tool_call_id"],
                    "tool": i["tool_name"],
                    "start": iso(i["start_ns"]),
                    "waited_ms": round(i["duration_ns"] / 1e6, 3),
                }
            )
    # Overlapping waits (two questions open at once) count once.
    spans = sorted(
        (
            int(datetime.fromisoformat(w["start"]).timestamp() * 1e9),
            int(datetime.fromisoformat(w["start"]).timestamp() * 1e9 + w["waited_ms"] * 1e6),
        )
        for w in waits
    )
    total, cur_a, cur_b = 0, None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None and cur_a is not None:
        total += cur_b - cur_a
    return round(total / 1e6, 3), waits


def run_summary(
    run: dict[str, Any],
    f: Forest,
    sessions: dict[str, str],
    intervals: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One entry of `GET /api/v1/agents/{name}/runs`."""
    run["start_ns"] = int(run["start_ns"])
    run["duration_ns"] = int(run["duration_ns"])
    node = f.spans.get((run["trace_id"], run["span_id"]), {**run, "operation": RUN})
    everything = _walk(f, node, own_only=False)
    own = _walk(f, node, own_only=True)
    usage = usage_of(everything)
    errors = sum(1 for i in everything if i["status"] == "error")
    waited, _ = waiting_of(run, own, intervals or [])
    parent = f.spans.get((run["trace_id"], node.get("genai_parent", "")))
    return {
        "run_id": run["span_id"],
        "trace_id": run["trace_id"],
        "agent_name": run["agent_name"],
        "agent_id": run["agent_id"] or None,
        "conversation_id": run["conversation_id"] or None,
        "start": iso(run["start_ns"]),
        "duration_ms": round(run["duration_ns"] / 1e6, 3),
        "status": "error" if run["status"] == "error" else "ok",
        "error": (run["error_type"] or run["error_message"]) or None,
        "errors": errors,
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]},
        "cache_read_tokens": usage["cache_read_tokens"],
        "model_calls": usage["model_calls"],
        "reported_usage": (
            {
                "input_tokens": int(run["reported_input_tokens"]),
                "output_tokens": int(run["reported_output_tokens"]),
            }
            if int(run["reported_input_tokens"]) or int(run["reported_output_tokens"])
            else None
        ),
        "tool_calls": tool_summary(own),
        "models": models_of(own),
        "nested_runs": [i["span_id"] for i in own if i["operation"] == RUN],
        "parent_run_id": _enclosing_run(f, node),
        "parent_span": parent["span_id"] if parent else None,
        "waiting_ms": waited,
        "session_id": sessions.get(run["trace_id"]) or run["session_id"] or None,
        "service_name": run["service_name"],
    }


def _enclosing_run(f: Forest, node: dict[str, Any]) -> str | None:
    cur, seen = node, 0
    while cur.get("genai_parent") and seen < MAX_DEPTH:
        cur = f.spans.get((cur["trace_id"], cur["genai_parent"]), {})
        if cur.get("operation") == RUN:
            return str(cur["span_id"])
        seen += 1
    return None


def _node(s: dict[str, Any], t0: int) -> dict[str, Any]:
    kind = item_type(s["operation"])
    out: dict[str, Any] = {
        "type": kind,
        "operation": s["operation"],
        "span_id": s["span_id"],
        "name": s["name"],
        "start": iso(s["start_ns"]),
        "offset_ms": round((s["start_ns"] - t0) / 1e6, 3),
        "duration_ms": round(s["duration_ns"] / 1e6, 3),
        "status": s["status"],
        "error": (s["error_type"] or s["error_message"]) or None,
    }
    if kind == "model_call":
        out.update(
            model=s["response_model"] or s["request_model"],
            provider=s["provider"],
            input_tokens=int(s["input_tokens"]),
            output_tokens=int(s["output_tokens"]),
            cache_read_tokens=int(s["cache_read_tokens"]),
            finish_reasons=s["finish_reasons"],
        )
    elif kind == "tool_call":
        out.update(
            tool=s["tool_name"],
            call_id=s["tool_call_id"],
            arguments=s["tool_arguments"] or None,
            result=s["tool_result"] or None,
            decision=s["decision"] or None,
        )
    elif kind == "agent_run":
        out.update(run_id=s["span_id"], agent_name=s["agent_name"])
    elif kind == "handoff":
        out.update(
            from_agent=s["handoff_from"] or None,
            to_agent=s["handoff_to"] or None,
            to_agent_inferred=bool(s.get("handoff_to_inferred")),
        )
    return out


def events_of(run: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The app's agent events that belong to the run: those of its trace, and those of
    its agent (by name or id) while it ran."""
    from weftline.ground.times import parse_ch_ms

    lo, hi = run["start_ns"], run["start_ns"] + run["duration_ns"]
    names = {run["agent_name"], run.get("agent_id", "")} - {""}
    out = []
    for e in events:
        ts = parse_ch_ms(e["ts"]) * 1_000_000
        by_trace = bool(e["trace_id"]) and e["trace_id"] == run["trace_id"]
        by_agent = e["agent_id"] in names and lo - 1_000_000 <= ts <= hi + 1_000_000
        if by_trace or by_agent:
            out.append(
                {
                    "type": e["type"],
                    "ts": iso(ts),
                    "offset_ms": round((ts - lo) / 1e6, 3),
                    "agent_id": e["agent_id"],
                    "status": e["status"],
                    "task_id": e["task_id"] or None,
                    "hitl_id": e["hitl_id"] or None,
                    "error": e["error"] or None,
                    "joined_by": "trace_id" if by_trace else "agent",
                }
            )
    return out


def run_tree(
    run: dict[str, Any],
    f: Forest,
    sessions: dict[str, str],
    intervals: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`GET /api/v1/agent-runs/{run_id}`: the run's summary and its tree (model calls, tool
    calls, nested agents, handoffs), each node with its offset from the run's start, a
    flat depth-first list for waterfalls, and the app's agent events joined to it."""
    summary = run_summary(run, f, sessions, intervals)
    node = f.spans.get((run["trace_id"], run["span_id"]), {**run, "operation": RUN})
    t0, total = run["start_ns"], max(1, run["duration_ns"])
    rows: list[dict[str, Any]] = []

    def build(s: dict[str, Any], depth: int, seen: set[str]) -> dict[str, Any]:
        n = _node(s, t0)
        n["depth"] = depth
        n["offset_pct"] = round(max(0, s["start_ns"] - t0) / total * 100, 2)
        n["width_pct"] = max(0.5, round(s["duration_ns"] / total * 100, 2))
        rows.append({k: v for k, v in n.items() if k != "children"})
        n["children"] = [
            build(c, depth + 1, seen | {c["span_id"]})
            for c in f.kids(s)
            if c["span_id"] not in seen and depth < MAX_DEPTH
        ]
        return n

    tree = build(node, 0, {node["span_id"]})
    _, waits = waiting_of(run, _walk(f, node, own_only=True), intervals or [])
    joined = events_of(run, events or [])
    return {**summary, "tree": tree, "rows": rows, "waits": waits, "events": joined}
