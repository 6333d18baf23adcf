"""Read queries for Sentry issues and errors. Bound parameters only.

Group figures are aggregated from `sentry_errors FINAL` with uniqExact over event ids,
so a redelivered or resent event never counts twice. Status comes from
`sentry_issue_status` (newest version wins); a resolved group that received an event
after it was resolved reads as unresolved and `regressed`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from weftline.ground.times import ch_ms, ch_time
from weftline.storage.clickhouse import ClickHouse

STATUSES = ("unresolved", "resolved", "ignored")


def _t(dt: datetime | None, default: datetime) -> str:
    return ch_time(dt or default)


def _groups_sql(db: str, extra_where: str) -> str:
    # Aggregate per group over all time (first seen is global), then keep groups with
    # an event in [start, end]. LEFT JOIN leaves status '' for never-touched groups.
    return f"""
SELECT
    g.group_id AS group_id, g.title AS title, g.culprit AS culprit, g.level AS level,
    g.platform AS platform, g.count AS count, g.count_in_range AS count_in_range,
    g.users AS users, g.first_seen AS first_seen, g.last_seen AS last_seen,
    g.last_received AS last_received, g.grouping_variant AS grouping_variant,
    g.latest_event_id AS latest_event_id,
    st.status AS set_status, st.updated_at AS status_updated_at,
    (st.status = 'resolved' AND g.last_received > st.updated_at) AS regressed,
    multiIf(regressed, 'unresolved', st.status = '', 'unresolved', st.status) AS status
FROM
(
    SELECT
        group_id,
        argMax(title, timestamp) AS title,
        argMax(culprit, timestamp) AS culprit,
        argMax(level, timestamp) AS level,
        argMax(platform, timestamp) AS platform,
        argMax(grouping_variant, timestamp) AS grouping_variant,
        argMax(event_id, timestamp) AS latest_event_id,
        uniqExact(event_id) AS count,
        uniqExactIf(event_id, timestamp >= {{start:DateTime64(3)}}
                    AND timestamp <= {{end:DateTime64(3)}}) AS count_in_range,
        uniqExactIf(user_key, user_key != '') AS users,
        min(timestamp) AS first_seen,
        max(timestamp) AS last_seen,
        max(received_at) AS last_received
    FROM {db}.sentry_errors FINAL
    WHERE project_id = {{project:UInt32}} {extra_where}
    GROUP BY group_id
    HAVING count_in_range > 0
) AS g
LEFT JOIN
(
    SELECT group_id, status, updated_at
    FROM {db}.sentry_issue_status FINAL
    WHERE project_id = {{project:UInt32}}
) AS st ON g.group_id = st.group_id
"""


def list_issues(
    ch: ClickHouse,
    project_id: int,
    start: datetime | None,
    end: datetime | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    sql = "SELECT * FROM (" + _groups_sql(ch.database, "") + ")"
    params: dict[str, Any] = {
        "project": project_id,
        "start": _t(start, datetime(1970, 1, 2)),
        "end": _t(end, datetime(2200, 1, 1)),
        "limit": limit,
    }
    if status:
        sql += " WHERE status = {status:String}"
        params["status"] = status
    sql += " ORDER BY last_seen DESC, group_id LIMIT {limit:UInt32}"
    return [_issue(r) for r in ch.query(sql, params)]


def get_issue(ch: ClickHouse, project_id: int, group_id: str) -> dict[str, Any] | None:
    sql = _groups_sql(ch.database, "AND group_id = {group:String}")
    rows = ch.query(
        sql,
        {
            "project": project_id,
            "group": group_id,
            "start": _t(None, datetime(1970, 1, 2)),
            "end": _t(None, datetime(2200, 1, 1)),
        },
    )
    return _issue(rows[0]) if rows else None


def _issue(r: dict[str, Any]) -> dict[str, Any]:
    r["regressed"] = bool(r.get("regressed"))
    r["count"] = int(r["count"])
    r["count_in_range"] = int(r["count_in_range"])
    r["users"] = int(r["users"])
    if not r.get("set_status"):
        r["status_updated_at"] = None
    r.pop("set_status", None)
    return r


ERROR_COLUMNS = (
    "event_id, group_id, timestamp, received_at, level, platform, event_type, title,"
    " culprit, message, exceptions, handled, logger, transaction, release, dist,"
    " environment, server_name, user_id, user_email, user_username, user_ip, tags,"
    " contexts, request_url, request_method, request, breadcrumbs, sdk_name, sdk_version,"
    " trace_id, span_id, replay_id,"
    " openreplay_session_id, openreplay_session_url, openreplay_session_token,"
    " fingerprint, grouping_variant, grouping_config"
)


def latest_event(ch: ClickHouse, project_id: int, group_id: str) -> dict[str, Any] | None:
    rows = ch.query(
        f"SELECT {ERROR_COLUMNS} FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND group_id = {group:String}"
        " ORDER BY timestamp DESC, event_id DESC LIMIT 1",
        {"project": project_id, "group": group_id},
    )
    return rows[0] if rows else None


def error_by_id(ch: ClickHouse, project_id: int, event_id: str) -> dict[str, Any] | None:
    rows = ch.query(
        f"SELECT {ERROR_COLUMNS} FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND event_id = {event:String} LIMIT 1",
        {"project": project_id, "event": event_id},
    )
    return rows[0] if rows else None


def hourly_histogram(
    ch: ClickHouse, project_id: int, group_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    rows = ch.query(
        "SELECT toStartOfHour(timestamp) AS hour, uniqExact(event_id) AS count"
        f" FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND group_id = {group:String}"
        " AND timestamp >= {start:DateTime64(3)} AND timestamp <= {end:DateTime64(3)}"
        " GROUP BY hour ORDER BY hour",
        {
            "project": project_id,
            "group": group_id,
            "start": _t(start, start),
            "end": _t(end, end),
        },
    )
    return [{"hour": r["hour"], "count": int(r["count"])} for r in rows]


def linked_ids(ch: ClickHouse, project_id: int, group_id: str, limit: int = 100) -> dict[str, Any]:
    rows = ch.query(
        "SELECT"
        " groupUniqArrayIf({lim:UInt32})(openreplay_session_id, openreplay_session_id != '')"
        " AS sessions,"
        " groupUniqArrayIf({lim:UInt32})(openreplay_session_url, openreplay_session_url != '')"
        " AS session_urls,"
        " groupUniqArrayIf({lim:UInt32})(trace_id, trace_id != '') AS traces,"
        " groupUniqArrayIf({lim:UInt32})(replay_id, replay_id != '') AS replays,"
        " groupUniqArrayIf({lim:UInt32})(openreplay_session_token,"
        "   openreplay_session_token != '') AS session_tokens"
        f" FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND group_id = {group:String}",
        {"project": project_id, "group": group_id, "lim": limit},
    )
    r = rows[0] if rows else {}
    return {
        "session_ids": sorted(r.get("sessions", [])),
        "session_urls": sorted(r.get("session_urls", [])),
        "session_tokens": sorted(r.get("session_tokens", [])),
        "trace_ids": sorted(r.get("traces", [])),
        "replay_ids": sorted(r.get("replays", [])),
    }


def set_status(ch: ClickHouse, project_id: int, group_id: str, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(status)
    now_ns = time.time_ns()
    ch.insert(
        "sentry_issue_status",
        [
            {
                "project_id": project_id,
                "group_id": group_id,
                "status": status,
                "updated_at": ch_ms(now_ns // 10**6),
                "version": now_ns,
            }
        ],
    )


def count_errors(ch: ClickHouse, project_id: int) -> int:
    rows = ch.query(
        f"SELECT uniqExact(event_id) AS n FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32}",
        {"project": project_id},
    )
    return int(rows[0]["n"])


def count_rows(ch: ClickHouse, table: str, project_id: int, where: str = "") -> int:
    """Rows of a Sentry table as queries see them (FINAL). `table`/`where` are code
    constants, never user input."""
    rows = ch.query(
        f"SELECT count() AS n FROM {ch.database}.{table} FINAL"
        " WHERE project_id = {project:UInt32}" + (f" AND {where}" if where else ""),
        {"project": project_id},
    )
    return int(rows[0]["n"])


def event_of_issue(
    ch: ClickHouse, project_id: int, group_id: str, event_id: str
) -> dict[str, Any] | None:
    """One event of the issue (None when the id belongs to another issue)."""
    rows = ch.query(
        f"SELECT {ERROR_COLUMNS} FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND group_id = {group:String}"
        " AND event_id = {event:String} LIMIT 1",
        {"project": project_id, "group": group_id, "event": event_id},
    )
    return rows[0] if rows else None


def event_neighbors(
    ch: ClickHouse, project_id: int, group_id: str, timestamp: str, event_id: str
) -> dict[str, str | None]:
    """The issue's events just before and after this one (by time, then id)."""
    db = ch.database
    params = {"project": project_id, "group": group_id, "ts": timestamp, "event": event_id}
    base = (
        f"SELECT event_id FROM {db}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND group_id = {group:String}"
    )
    prev = ch.query(
        base + " AND (timestamp, event_id) < ({ts:DateTime64(3)}, {event:String})"
        " ORDER BY timestamp DESC, event_id DESC LIMIT 1",
        params,
    )
    nxt = ch.query(
        base + " AND (timestamp, event_id) > ({ts:DateTime64(3)}, {event:String})"
        " ORDER BY timestamp, event_id LIMIT 1",
        params,
    )
    return {
        "previous": prev[0]["event_id"] if prev else None,
        "next": nxt[0]["event_id"] if nxt else None,
    }


def tag_distribution(
    ch: ClickHouse, project_id: int, group_id: str, top: int = 5
) -> list[dict[str, Any]]:
    """Per tag key (the event's tags plus release, environment, level, user), its most
    frequent values across the issue's events with their counts."""
    rows = ch.query(
        "SELECT key, value, uniqExact(event_id) AS n FROM ("
        " SELECT event_id, arrayConcat(mapKeys(tags),"
        "  ['release', 'environment', 'level', 'user', 'server_name']) AS ks,"
        "  arrayConcat(mapValues(tags), [release, environment, level,"
        "  if(user_id != '', user_id, if(user_email != '', user_email, user_ip)),"
        "  server_name]) AS vs"
        f" FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {project:UInt32} AND group_id = {group:String})"
        " ARRAY JOIN ks AS key, vs AS value WHERE value != ''"
        " GROUP BY key, value ORDER BY key, n DESC, value",
        {"project": project_id, "group": group_id},
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = out.setdefault(r["key"], {"key": r["key"], "total": 0, "values": []})
        t["total"] += int(r["n"])
        if len(t["values"]) < top:
            t["values"].append({"value": r["value"], "count": int(r["n"])})
    for t in out.values():
        for v in t["values"]:
            v["percent"] = round(v["count"] * 100 / t["total"]) if t["total"] else 0
    return list(out.values())


def session_error_times(
    ch: ClickHouse, project_id: int, group_id: str, session_ids: list[str]
) -> dict[str, str]:
    """When the issue first happened in each of these sessions (an event tagged with the
    session, or linked to it)."""
    db = ch.database
    rows = ch.query(
        "SELECT session_id, min(ts) AS ts FROM ("
        " SELECT openreplay_session_id AS session_id, timestamp AS ts"
        f" FROM {db}.sentry_errors FINAL"
        " WHERE project_id = {p:UInt32} AND group_id = {g:String}"
        " AND has({s:Array(String)}, openreplay_session_id)"
        " UNION ALL"
        " SELECT l.session_id AS session_id, e.timestamp AS ts"
        f" FROM {db}.links AS l INNER JOIN (SELECT event_id, trace_id, timestamp"
        f"  FROM {db}.sentry_errors FINAL"
        "  WHERE project_id = {p:UInt32} AND group_id = {g:String}) AS e"
        " ON l.target_id = e.event_id"
        " WHERE l.project_id = {p:UInt32} AND l.kind = 'error'"
        " AND has({s:Array(String)}, l.session_id)"
        ") GROUP BY session_id",
        {"p": project_id, "g": group_id, "s": session_ids},
    )
    return {r["session_id"]: r["ts"] for r in rows}
