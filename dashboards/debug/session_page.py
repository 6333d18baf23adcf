"""What /ui/sessions/{id} shows beside the replay: the session header, the timeline
items placed on the replay's clock (`t`, seconds since the session's start, the `?t=`
of the player), the tabs they belong to and the markers they put on the scrubber."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from weftline.dashboards.debug.timeline import build_timeline, waterfall
from weftline.ground.times import api_time
from weftline.storage import replay_queries, sentry_queries, timeline_queries
from weftline.storage.clickhouse import ClickHouse

# Timeline kinds that are noise in the list (they show as the page itself).
HIDDEN_KINDS = frozenset({"performance", "resource", "viewport", "tab", "visibility"})
TABS = (
    ("all", "Timeline"),
    ("console", "Console"),
    ("network", "Network"),
    ("errors", "Errors"),
    ("agent", "Agent & canvas"),
    ("spans", "Backend spans"),
    ("logs", "Logs"),
)


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _tab(item: dict[str, Any]) -> str:
    k = item["kind"]
    if k == "log":
        return "console"
    if k in ("network", "websocket", "graphql"):
        return "network"
    if k == "error":
        return "errors"
    if k in ("agent", "agent_run"):
        return "agent"
    if k == "span":
        return "spans"
    return ""


def _marker(item: dict[str, Any]) -> str:
    k = item["kind"]
    d = item["detail"]
    if k == "click":
        return "click"
    if k == "error":
        return "error"
    if k == "network":
        status = d.get("status")
        failed = status is None or not str(status).isdigit() or int(status) >= 400
        return "network" if failed else ""
    if k == "agent":
        return "agent"
    return ""


def _frames(stack: Any) -> list[dict[str, Any]]:
    """Tracker stacks (error-stack-parser frames) in the Sentry frame shape."""
    if not isinstance(stack, list):
        return []
    out = []
    for f in stack:
        if isinstance(f, dict):
            out.append(
                {
                    "function": f.get("functionName") or f.get("function") or "?",
                    "filename": f.get("fileName") or f.get("filename") or "",
                    "lineno": f.get("lineNumber") or f.get("lineno"),
                    "colno": f.get("columnNumber") or f.get("colno"),
                    "context_line": f.get("source") or f.get("context_line") or "",
                }
            )
    return out


def session_context(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any]:
    t = build_timeline(ch, project_id, session_id)
    session = replay_queries.get_session(ch, project_id, session_id)
    bounds = replay_queries.replay_bounds(ch, project_id, session_id)
    details = {
        d["event_uid"]: d for d in timeline_queries.replay_details_for(ch, project_id, session_id)
    }
    trace_ids = [tr["trace_id"] for tr in t["traces"]]
    logs = timeline_queries.logs_for(ch, project_id, session_id, trace_ids)
    items = [i for i in t["items"] if i["detail"].get("kind") not in HIDDEN_KINDS]
    if bounds is not None:
        start_ms = bounds["start_ms"]
    elif items:
        start_ms = min(epoch_ms(i["ts"]) for i in items)
    else:
        start_ms = 0
    events: dict[str, dict[str, Any] | None] = {}
    for i in items:
        i["t"] = round(max(0, epoch_ms(i["ts"]) - start_ms) / 1000, 3)
        i["tab"] = _tab(i)
        i["marker"] = _marker(i)
        extra = details.get(i["ref"].get("event_uid") or i["ref"].get("tracker_event_uid", ""))
        if extra:
            i["extra"] = {
                "request_headers": extra["request_headers"] or {},
                "response_headers": extra["response_headers"] or {},
                "request_body": _json(extra["request_body"]),
                "response_body": _json(extra["response_body"]),
                "frames": _frames(_json(extra["stack"])),
                "details": _json(extra["details"]) or {},
            }
        eid = i["ref"].get("event_id")
        if i["kind"] == "error" and eid:
            if eid not in events:
                events[eid] = sentry_queries.error_by_id(ch, project_id, eid)
            ev = events[eid]
            if ev:
                i["exceptions"] = _json(ev["exceptions"]) or []
    log_rows = []
    for r in logs:
        ts = api_time(r["timestamp"]) or ""
        log_rows.append(
            {
                **r,
                "ts": ts,
                "t": round(max(0, epoch_ms(ts) - start_ms) / 1000, 3) if ts else 0,
            }
        )
    waterfalls = []
    for tr in t["traces"]:
        spans = [
            i for i in t["items"] if i["kind"] == "span" and i["ref"]["trace_id"] == tr["trace_id"]
        ]
        waterfalls.append({**tr, "rows": waterfall(spans)})
    if session:
        session = {
            **session,
            "started_at": api_time(session["started_at"]),
            "last_event_at": api_time(session["last_event_at"]),
            "duration_ms": int(session["duration_ms"]),
            "pages_count": int(session["pages_count"] or 0),
            "errors_count": int(session["errors_count"] or 0),
        }
    return {
        "t": t,
        "items": items,
        "session": session,
        "start_ms": start_ms,
        "has_replay": bounds is not None,
        "logs": log_rows,
        "waterfalls": waterfalls,
        "tabs": TABS,
        "counts": {
            key: (len(log_rows) if key == "logs" else sum(1 for i in items if i["tab"] == key))
            for key, _ in TABS
            if key != "all"
        },
        "releases": sorted({e["release"] for e in events.values() if e and e.get("release")}),
    }
