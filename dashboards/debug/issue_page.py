"""What /ui/issues/{id} shows: the issue with one of its events in full (stack with
context and locals, breadcrumbs, tags, user, request, contexts), the navigation between
its events, the distribution of tag values over all its events, an occurrence histogram
and the sessions it happened in, each with a replay link at the error's moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from weftline.ground.times import api_time, parse_ch_ms
from weftline.storage import replay_queries, sentry_queries, timeline_queries
from weftline.storage.clickhouse import ClickHouse

HISTOGRAM_HOURS = 24
MAX_SESSIONS = 50


def _json(v: str | None) -> Any:
    if not v:
        return None
    try:
        return orjson.loads(v)
    except orjson.JSONDecodeError:
        return None


def _breadcrumbs(raw: Any) -> list[dict[str, Any]]:
    values = raw.get("values") if isinstance(raw, dict) else raw
    out = []
    for b in values if isinstance(values, list) else []:
        if not isinstance(b, dict):
            continue
        ts = b.get("timestamp")
        if isinstance(ts, int | float):
            ts = api_time(int(ts * 1000))
        out.append({**b, "timestamp": ts if isinstance(ts, str) else None})
    return out


def histogram(
    ch: ClickHouse, project_id: int, group_id: str, last_seen: str
) -> list[dict[str, Any]]:
    """Events per hour over the day before the issue was last seen (empty hours kept)."""
    end = datetime.fromtimestamp(parse_ch_ms(last_seen) / 1000, UTC).replace(tzinfo=None)
    end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=HISTOGRAM_HOURS)
    got = {
        parse_ch_ms(r["hour"][:19] + ".000"): r["count"]
        for r in sentry_queries.hourly_histogram(ch, project_id, group_id, start, end)
    }
    peak = max(got.values(), default=0)
    out = []
    for h in range(HISTOGRAM_HOURS):
        t = start + timedelta(hours=h)
        ms = int(t.replace(tzinfo=UTC).timestamp() * 1000)
        n = got.get(ms, 0)
        out.append({"hour": api_time(ms), "count": n, "pct": round(n * 100 / peak) if peak else 0})
    return out


def issue_context(
    ch: ClickHouse, project_id: int, group_id: str, event_id: str
) -> dict[str, Any] | None:
    issue = sentry_queries.get_issue(ch, project_id, group_id)
    if issue is None:
        return None
    event = None
    if event_id:
        event = sentry_queries.event_of_issue(ch, project_id, group_id, event_id)
    if event is None:
        event = sentry_queries.latest_event(ch, project_id, group_id)
    nav: dict[str, str | None] = {"previous": None, "next": None}
    if event is not None:
        nav = sentry_queries.event_neighbors(
            ch, project_id, group_id, event["timestamp"], event["event_id"]
        )
        event = {
            **event,
            "timestamp": api_time(event["timestamp"]),
            "received_at": api_time(event["received_at"]),
            "exceptions": _json(event["exceptions"]) or [],
            "contexts": _json(event["contexts"]) or {},
            "request": _json(event["request"]) or {},
            "breadcrumbs": _breadcrumbs(_json(event["breadcrumbs"])),
        }
    sessions = timeline_queries.sessions_of_issue(ch, project_id, group_id)[:MAX_SESSIONS]
    times = sentry_queries.session_error_times(
        ch, project_id, group_id, [s["session_id"] for s in sessions]
    )
    for s in sessions:
        s["t"] = None
        ts = times.get(s["session_id"])
        bounds = replay_queries.replay_bounds(ch, project_id, s["session_id"])
        s["has_replay"] = bounds is not None
        if ts and bounds is not None:
            s["t"] = round(max(0, parse_ch_ms(ts) - bounds["start_ms"]) / 1000, 1)
        s["error_at"] = api_time(ts)
    return {
        "issue": {
            **issue,
            "first_seen": api_time(issue["first_seen"]),
            "last_seen": api_time(issue["last_seen"]),
        },
        "event": event,
        "nav": nav,
        "tags": sentry_queries.tag_distribution(ch, project_id, group_id),
        "histogram": histogram(ch, project_id, group_id, issue["last_seen"]),
        "sessions": sessions,
    }
