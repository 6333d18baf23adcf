"""Queries over the OpenReplay tables. Bound parameters only; FINAL so rows that were
stored twice (redelivery, tracker retries) count once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from weftline.ground.times import ch_time as _ch_time
from weftline.ground.times import parse_ch_ms
from weftline.storage.clickhouse import ClickHouse

SESSION_COLUMNS = (
    "session_id, started_at, user_uuid, user_id, user_anonymous_id, tracker_version, rev_id,"
    " user_agent, browser, browser_version, os, os_version, device_type, device, country,"
    " timezone, screen_width, screen_height, referrer, metadata, ended, last_event_at,"
    " duration_ms, pages_count, events_count, errors_count, version, retention_days"
)
TIMELINE_COLUMNS = (
    "ts, kind, event_uid, page_no, tab_id, page_url, name, selector, url, method, status,"
    " duration_ms, value, x, y, request_headers, response_headers, request_body,"
    " response_body, request_size, response_size, trace_id, span_id, stack, details"
)
# Per-session totals, computed from the events so they are right before the ender runs.
_TOTALS = (
    "SELECT session_id, max(ts) AS last_ts, count() AS events,"
    " countIf(kind = 'page') AS pages, countIf(kind = 'exception') AS errors,"
    " argMaxIf(value, ts, kind = 'user_id') AS uid,"
    " argMaxIf(value, ts, kind = 'anonymous_id') AS aid"
    " FROM {db}.replay_events FINAL"
    " WHERE project_id = {{project:UInt32}} {where} GROUP BY session_id"
)


def _with_totals(ch: ClickHouse, inner_where: str, totals_where: str) -> str:
    db = ch.database
    totals = _TOTALS.format(db=db, where=totals_where)
    return (
        "SELECT * FROM (SELECT s.session_id AS session_id, s.started_at AS started_at,"
        " s.user_uuid AS user_uuid, if(e.uid != '', e.uid, s.user_id) AS user_id,"
        " if(e.aid != '', e.aid, s.user_anonymous_id) AS user_anonymous_id,"
        " s.tracker_version AS tracker_version, s.rev_id AS rev_id,"
        " s.user_agent AS user_agent, s.browser AS browser,"
        " s.browser_version AS browser_version, s.os AS os, s.os_version AS os_version,"
        " s.device_type AS device_type, s.device AS device, s.country AS country,"
        " s.timezone AS timezone, s.screen_width AS screen_width,"
        " s.screen_height AS screen_height, s.referrer AS referrer, s.metadata AS metadata,"
        " s.ended AS ended, greatest(s.last_event_at, e.last_ts) AS last_event_at,"
        " toUInt64(greatest(0, dateDiff('millisecond', s.started_at,"
        " greatest(s.last_event_at, e.last_ts)))) AS duration_ms,"
        " e.pages AS pages_count, e.events AS events_count, e.errors AS errors_count"
        f" FROM (SELECT {SESSION_COLUMNS} FROM {db}.replay_sessions FINAL"
        f" WHERE project_id = {{project:UInt32}} {inner_where}) AS s"
        f" LEFT JOIN ({totals}) AS e ON s.session_id = e.session_id)"
    )


def list_sessions(
    ch: ClickHouse,
    project_id: int,
    start: datetime | None,
    end: datetime | None,
    user_id: str | None,
    limit: int,
    errors_only: bool = False,
    search: str = "",
) -> list[dict[str, Any]]:
    """Sessions that started in [start, end], newest first. `user_id` matches the
    tracker's user (setUserID / anonymous id) or the user of a Sentry event tied to the
    session (its openReplaySession.id tag, or a link the workers wrote); `search` is a
    substring of the session id or user."""
    db = ch.database
    sql = _with_totals(
        ch,
        "AND started_at >= {start:DateTime64(3)} AND started_at <= {end:DateTime64(3)}",
        # Events never precede their session's start by much (same server-aligned clock).
        "AND ts >= {start:DateTime64(3)} - INTERVAL 1 HOUR",
    )
    sentry_users = (
        f"SELECT event_id, openreplay_session_id FROM {db}.sentry_errors"
        " WHERE project_id = {project:UInt32}"
        " AND (user_id = {user:String} OR user_email = {user:String}"
        " OR user_username = {user:String})"
    )
    sql += (
        " WHERE ({user:String} = '' OR user_id = {user:String}"
        " OR user_anonymous_id = {user:String}"
        f" OR session_id IN (SELECT openreplay_session_id FROM ({sentry_users}))"
        f" OR session_id IN (SELECT session_id FROM {db}.links"
        "   WHERE project_id = {project:UInt32} AND kind = 'error'"
        f"   AND target_id IN (SELECT event_id FROM ({sentry_users}))))"
        " AND (NOT {errors:Bool} OR errors_count > 0)"
        " AND ({q:String} = '' OR positionCaseInsensitive(session_id, {q:String}) > 0"
        " OR positionCaseInsensitive(user_id, {q:String}) > 0)"
        " ORDER BY started_at DESC, session_id DESC LIMIT {limit:UInt32}"
    )
    return ch.query(
        sql,
        {
            "project": project_id,
            "start": _ch_time(start or datetime(1970, 1, 2)),
            "end": _ch_time(end or datetime(2200, 1, 1)),
            "user": user_id or "",
            "errors": errors_only,
            "q": search,
            "limit": limit,
        },
    )


def get_session(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any] | None:
    sql = _with_totals(ch, "AND session_id = {sid:String}", "AND session_id = {sid:String}")
    rows = ch.query(sql, {"project": project_id, "sid": session_id})
    if not rows:
        return None
    row = rows[0]
    row["metadata"] = {**row.get("metadata", {}), **session_metadata(ch, project_id, session_id)}
    return row


def session_metadata(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, str]:
    """setMetadata pairs, the latest value per key (the tracker re-sends them on restart)."""
    rows = ch.query(
        f"SELECT name, argMax(value, ts) AS value FROM {ch.database}.replay_events FINAL"
        " WHERE project_id = {project:UInt32} AND session_id = {sid:String}"
        " AND kind = 'metadata' GROUP BY name ORDER BY name",
        {"project": project_id, "sid": session_id},
    )
    return {r["name"]: r["value"] for r in rows}


def timeline(ch: ClickHouse, project_id: int, session_id: str, limit: int) -> list[dict[str, Any]]:
    return ch.query(
        f"SELECT {TIMELINE_COLUMNS} FROM {ch.database}.replay_events FINAL"
        " WHERE project_id = {project:UInt32} AND session_id = {sid:String}"
        " ORDER BY ts, page_no, event_uid LIMIT {limit:UInt32}",
        {"project": project_id, "sid": session_id, "limit": limit},
    )


def closed_session_row(
    ch: ClickHouse, project_id: int, session_id: str, now_ms: int
) -> dict[str, Any] | None:
    """The session's row with its final totals and `ended = 1`, versioned `now_ms` so it
    outranks the start rows; None when nothing of the session is stored."""
    db = ch.database
    cur = ch.query(
        f"SELECT {SESSION_COLUMNS} FROM {db}.replay_sessions FINAL"
        " WHERE project_id = {project:UInt32} AND session_id = {sid:String}",
        {"project": project_id, "sid": session_id},
    )
    totals = ch.query(
        "SELECT min(ts) AS first_ts, "
        + _TOTALS.format(db=db, where="AND session_id = {sid:String}").removeprefix("SELECT "),
        {"project": project_id, "sid": session_id},
    )
    if not cur and not totals:
        return None
    row: dict[str, Any] = dict(cur[0]) if cur else {"session_id": session_id}
    row["project_id"] = project_id
    t = totals[0] if totals else {}
    if "started_at" not in row:
        row["started_at"] = t.get("first_ts") or t.get("last_ts")
    started = parse_ch_ms(row["started_at"])
    last = max(started, parse_ch_ms(t["last_ts"]) if t else started)
    row.update(
        ended=1,
        last_event_at=row["started_at"] if last == started else t["last_ts"],
        duration_ms=last - started,
        pages_count=int(t.get("pages", 0)),
        events_count=int(t.get("events", 0)),
        errors_count=int(t.get("errors", 0)),
        version=max(now_ms, int(row.get("version", 0)) + 1),
    )
    if t.get("uid"):
        row["user_id"] = t["uid"]
    if t.get("aid"):
        row["user_anonymous_id"] = t["aid"]
    row["metadata"] = {**row.get("metadata", {}), **session_metadata(ch, project_id, session_id)}
    return row


def count_replay(ch: ClickHouse, table: str, project_id: int, session_id: str) -> int:
    if table not in ("replay_events", "replay_batches", "replay_sessions"):
        raise ValueError(table)
    rows = ch.query(
        f"SELECT count() AS n FROM {ch.database}.{table} FINAL"
        " WHERE project_id = {project:UInt32} AND session_id = {sid:String}",
        {"project": project_id, "sid": session_id},
    )
    return int(rows[0]["n"])


def replay_bounds(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any] | None:
    """Where the replay's clock starts and ends (epoch ms): the session's start, or its
    first stored batch when the start row is missing; None without any batch."""
    db = ch.database
    rows = ch.query(
        "SELECT toUnixTimestamp64Milli(min(ts)) AS first_ms,"
        " toUnixTimestamp64Milli(max(ts)) AS last_ms, count() AS batches,"
        " sum(size) AS bytes,"
        f" (SELECT toUnixTimestamp64Milli(min(started_at)) FROM {db}.replay_sessions FINAL"
        "  WHERE project_id = {p:UInt32} AND session_id = {s:String}) AS started_ms,"
        f" (SELECT count() FROM {db}.replay_sessions FINAL"
        "  WHERE project_id = {p:UInt32} AND session_id = {s:String}) AS has_start"
        f" FROM {db}.replay_batches FINAL"
        " WHERE project_id = {p:UInt32} AND session_id = {s:String}",
        {"p": project_id, "s": session_id},
    )
    r = rows[0] if rows else None
    if r is None or int(r["batches"]) == 0:
        return None
    first = int(r["first_ms"])
    started = int(r["started_ms"]) if int(r["has_start"]) else first
    return {
        "start_ms": min(started, first),
        "last_ms": int(r["last_ms"]),
        "batches": int(r["batches"]),
        "bytes": int(r["bytes"]),
    }


def replay_batch_bodies(ch: ClickHouse, project_id: int, session_id: str) -> list[dict[str, Any]]:
    """Every stored batch of the session (raw tracker bytes, base64), in the order the
    tracker wrote them: page, then the worker's message counter."""
    return ch.query(
        "SELECT page_no, tab_id, data_type, first_index, body_base64"
        f" FROM {ch.database}.replay_batches FINAL"
        " WHERE project_id = {p:UInt32} AND session_id = {s:String}"
        " ORDER BY page_no, first_index, data_type",
        {"p": project_id, "s": session_id},
    )
