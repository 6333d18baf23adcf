"""One session as one timeline: every signal's items in time order, each with the reason
it belongs to the session."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from weftline.dashboards.debug.agents_api import runs_in_traces
from weftline.ground.times import api_time
from weftline.storage import timeline_queries as q
from weftline.storage.clickhouse import ClickHouse


@dataclass
class Item:
    ts: str
    kind: str  # agent | span | click | network | error | page | log
    source: str  # agent | otlp | sentry | replay
    title: str
    reason: str
    severity: str = "info"  # info | warning | error
    detail: dict[str, Any] = field(default_factory=dict)
    ref: dict[str, str] = field(default_factory=dict)


def _ts(value: str) -> str:
    """Timestamps from ClickHouse as 'YYYY-MM-DD HH:MM:SS.fff…' → the API's format."""
    return api_time(value) or ""


def _agent_title(e: dict[str, Any]) -> str:
    t = e["type"]
    if t == "agent_state":
        task = f" on {e['current_task']}" if e["current_task"] else ""
        return f"agent {e['agent_id']} is {e['status']}{task}"
    if t == "task_update":
        return f"task {e['task_id']} {e['status']} ({e['agent_id']})"
    if t == "visualization_interaction":
        target = e["node_id"] or (
            f"{e['edge_source']}→{e['edge_target']}" if e["edge_source"] else "canvas"
        )
        return f"canvas {e['action'].replace('_', ' ')}: {target}"
    if t == "hitl":
        return f"human-in-the-loop {e['hitl_kind']} {e['status']}"
    return t


def agent_items(rows: list[dict[str, Any]], session_id: str) -> list[Item]:
    items = []
    for e in rows:
        reason = "session_id field" if e["session_id"] == session_id else f"trace {e['trace_id']}"
        failed = e["status"] in ("error", "failed")
        items.append(
            Item(
                ts=_ts(e["ts"]),
                kind="agent",
                source="agent",
                title=_agent_title(e),
                reason=reason,
                severity="error" if failed else "info",
                detail={k: v for k, v in e.items() if v not in ("", None, 0)},
                ref={"agent_id": e["agent_id"], "trace_id": e["trace_id"]},
            )
        )
    return items


def span_items(rows: list[dict[str, Any]], trace_reasons: dict[str, str]) -> list[Item]:
    items = []
    for s in rows:
        ms = s["duration_ns"] / 1e6
        items.append(
            Item(
                ts=_ts(s["start_time"]),
                kind="span",
                source=s["source"],
                title=f"{s['service_name'] or 'span'}: {s['name']} ({ms:.1f} ms)",
                reason=f"trace {s['trace_id']}: {trace_reasons.get(s['trace_id'], 'linked')}",
                severity="error" if s["status_code"] == "error" else "info",
                detail={
                    "kind": s["kind"],
                    "status": s["status_code"],
                    "status_message": s["status_message"],
                    "duration_ms": round(ms, 3),
                    "attributes": s["attributes"],
                },
                ref={
                    "trace_id": s["trace_id"],
                    "span_id": s["span_id"],
                    "parent_span_id": s["parent_span_id"],
                },
            )
        )
    return items


def run_items(runs: list[dict[str, Any]], trace_reasons: dict[str, str]) -> list[Item]:
    """One item per agent run, its tree (rows) in `detail` for the expanded view."""
    items = []
    for r in runs:
        u = r["usage"]
        tools = sum(t["count"] for t in r["tool_calls"])
        tool_errors = sum(t["errors"] for t in r["tool_calls"])
        bits = [f"{u['input_tokens']}→{u['output_tokens']} tokens", f"{tools} tool calls"]
        if tool_errors:
            bits.append(f"{tool_errors} failed")
        if r["waiting_ms"]:
            bits.append(f"waited {r['waiting_ms'] / 1000:.1f} s for a human")
        items.append(
            Item(
                ts=r["start"][:23] + "Z",
                kind="agent_run",
                source="otlp",
                title=f"agent {r['agent_name']} run ({r['duration_ms']:.1f} ms): "
                + ", ".join(bits),
                reason=f"trace {r['trace_id']}: {trace_reasons.get(r['trace_id'], 'linked')}",
                severity="error" if r["status"] == "error" or r["errors"] else "info",
                detail={
                    k: r[k]
                    for k in (
                        "usage",
                        "tool_calls",
                        "models",
                        "duration_ms",
                        "status",
                        "errors",
                        "waiting_ms",
                        "rows",
                    )
                },
                ref={"run_id": r["run_id"], "trace_id": r["trace_id"], "agent_id": r["agent_name"]},
            )
        )
    return items


REPLAY_KINDS = {"exception": "error", "console": "log", "custom": "agent"}


def _replay_title(e: dict[str, Any]) -> str:
    k = e["kind"]
    if k == "click":
        return f"click {e.get('name') or e.get('selector') or ''}".strip()
    if k == "network":
        return f"{e.get('method') or 'GET'} {e.get('url')} → {e.get('status')}"
    if k == "page":
        return f"page {e.get('page_url') or e.get('url')}"
    if k == "exception":
        return f"{e.get('name') or 'Error'}: {e.get('value')}"
    if k == "input":
        return f"input {e.get('selector') or e.get('name') or ''}".strip()
    return f"{k} {e.get('name') or ''} {e.get('value') or ''}".strip()


AGENT_EVENT_TYPES = {"agent_state", "task_update", "visualization_interaction", "hitl"}


def replay_items(rows: list[dict[str, Any]]) -> list[Item]:
    items = []
    for e in rows:
        if e["kind"] == "custom" and e.get("name") in AGENT_EVENT_TYPES:
            continue  # also stored as an agent event, which the timeline shows already
        kind = REPLAY_KINDS.get(e["kind"], e["kind"])
        status = e.get("status") or 0
        bad = e["kind"] == "exception" or (
            e["kind"] == "network" and str(status).isdigit() and int(status) >= 500
        )
        items.append(
            Item(
                ts=_ts(e["ts"]),
                kind=kind,
                source="replay",
                title=_replay_title(e),
                reason="OpenReplay tracker session",
                severity="error" if bad else "info",
                detail={k: v for k, v in e.items() if v not in ("", None, 0, {}, "0")},
                ref={"trace_id": e.get("trace_id") or "", "event_uid": e["event_uid"]},
            )
        )
    return items


def error_items(rows: list[dict[str, Any]], reasons: dict[str, str]) -> list[Item]:
    items = []
    for e in rows:
        etype = e["exception_types"][-1] if e["exception_types"] else ""
        evalue = e["exception_values"][-1] if e["exception_values"] else e["message"]
        side = "browser" if e["platform"] == "javascript" else "backend"
        items.append(
            Item(
                ts=_ts(e["timestamp"]),
                kind="error",
                source="sentry",
                title=f"{side} error {e['title']}",
                reason=reasons[e["event_id"]],
                severity="error" if e["level"] in ("error", "fatal") else "warning",
                detail={
                    "type": etype,
                    "value": evalue,
                    "culprit": e["culprit"],
                    "level": e["level"],
                    "platform": e["platform"],
                    "release": e["release"],
                    "handled": e["handled"],
                    "received_at": _ts(e["received_at"]),
                },
                ref={
                    "event_id": e["event_id"],
                    "group_id": e["group_id"],
                    "trace_id": e["trace_id"],
                },
            )
        )
    return items


MERGE_WINDOW_MS = 10_000


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso.rstrip("Z")).timestamp() * 1000


def merge_duplicate_errors(items: list[Item]) -> list[Item]:
    """A JS exception the tracker saw and the Sentry event of the same error (same type
    and message within a few seconds) become one item with both sources.

    The tracker's clock is aligned to the server's at session start; the SDK's event
    timestamp is the device's own (corrected only past a large drift), so a device clock
    a few tens of seconds off would keep the two apart: the event's arrival time, on the
    server's clock, counts as well, and the merged item keeps the tracker's time."""
    tracker = [i for i in items if i.source == "replay" and i.kind == "error"]
    drop: set[int] = set()
    for s in (i for i in items if i.source == "sentry" and i.kind == "error"):
        for t in tracker:
            if id(t) in drop:
                continue
            same = (t.detail.get("name") or "Error") == s.detail["type"] and (
                t.detail.get("value") or ""
            ) == (s.detail["value"] or "")
            near = min(abs(_ms(t.ts) - _ms(s.ts)), abs(_ms(t.ts) - _ms(s.detail["received_at"])))
            if same and near <= MERGE_WINDOW_MS:
                s.source = "replay+sentry"
                s.reason = f"{s.reason}; tracker saw the same {s.detail['type']}"
                s.ts = t.ts
                s.ref["tracker_event_uid"] = t.ref.get("event_uid", "")
                drop.add(id(t))
                break
    return [i for i in items if id(i) not in drop]


def build_timeline(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any]:
    traces, linked = q.session_links(ch, project_id, session_id)
    replay_rows = q.replay_events_for(ch, project_id, session_id)
    for e in replay_rows:  # the app's traceparent, seen by the tracker on a fetch
        if e.get("trace_id") and e["trace_id"] not in traces:
            traces[e["trace_id"]] = "traceparent header of a tracker network request"
    agent_rows = q.agent_events_for(ch, project_id, session_id, list(traces))
    for e in agent_rows:  # an agent event may tie in a trace of its own
        if e["session_id"] == session_id and e["trace_id"] and e["trace_id"] not in traces:
            traces[e["trace_id"]] = "agent event with session_id and trace_id"

    errors = q.errors_for(ch, project_id, list(linked), list(traces))
    reasons = {e["event_id"]: linked.get(e["event_id"]) or f"trace {e['trace_id']}" for e in errors}
    if not linked:  # no key at all: fall back to the same user in the same time window
        window = q.session_user_window(ch, project_id, session_id)
        if window:
            for e in q.unkeyed_user_errors(
                ch, project_id, window["user_id"], window["started_at"], window["last_event_at"]
            ):
                if e["event_id"] not in reasons:
                    errors.append(e)
                    reasons[e["event_id"]] = (
                        "inferred: same user id within the session's time window"
                    )

    items = agent_items(agent_rows, session_id) + replay_items(replay_rows)
    # An agent run is one item holding its GenAI spans (model and tool calls, nested agents).
    runs = runs_in_traces(ch, project_id, list(traces))
    folded = {(r["trace_id"], row["span_id"]) for r in runs for row in r["rows"]}
    spans = [
        s
        for s in q.spans_for(ch, project_id, list(traces))
        if (s["trace_id"], s["span_id"]) not in folded
    ]
    items += span_items(spans, traces) + run_items(runs, traces)
    items += error_items(errors, reasons)
    items = merge_duplicate_errors(items)
    items.sort(key=lambda i: i.ts)
    return {
        "session_id": session_id,
        "project_id": project_id,
        "traces": [{"trace_id": t, "reason": r} for t, r in traces.items()],
        "items": [asdict(i) for i in items],
    }


def waterfall(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans of one trace as rows with depth, offset and width (percent of the trace)."""
    if not spans:
        return []

    def start_ns(s: dict[str, Any]) -> int:
        dt = datetime.fromisoformat(s["ts"].rstrip("Z"))
        return int(dt.timestamp() * 1e9)

    by_id = {s["ref"]["span_id"]: s for s in spans}
    t0 = min(start_ns(s) for s in spans)
    t1 = max(start_ns(s) + int(s["detail"]["duration_ms"] * 1e6) for s in spans)
    total = max(1, t1 - t0)

    def depth(s: dict[str, Any]) -> int:
        d, seen = 0, set()
        while s["ref"]["parent_span_id"] in by_id and s["ref"]["span_id"] not in seen:
            seen.add(s["ref"]["span_id"])
            s = by_id[s["ref"]["parent_span_id"]]
            d += 1
        return d

    return [
        {
            **s,
            "depth": depth(s),
            "offset_pct": round((start_ns(s) - t0) / total * 100, 2),
            "width_pct": max(0.5, round(s["detail"]["duration_ms"] * 1e6 / total * 100, 2)),
        }
        for s in spans
    ]
