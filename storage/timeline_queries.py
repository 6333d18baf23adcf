"""Queries behind one session's timeline. Bound parameters only; FINAL where redelivery
could leave a duplicate not yet merged.

PREWHERE with FINAL filters rows before duplicates are collapsed, which is only the same
as filtering after when every copy of a row agrees on the condition: so PREWHERE here
tests sort-key columns only (copies share their sort key). It lets ClickHouse read the
other columns for the matching rows alone instead of whole granules."""

from __future__ import annotations

from typing import Any

from weftline.storage.clickhouse import ClickHouse


def session_links(
    ch: ClickHouse, project_id: int, session_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Traces and errors tied to the session, each with its reason, in one read: the
    evidence the workers wrote down (links) first, then spans that carry the session id
    but were stored without a link (session_traces is their per-session index). Ordered,
    so the reason kept for a trace does not depend on which branch is read first."""
    db = ch.database
    rows = ch.query(
        "SELECT kind, target_id, reason FROM ("
        f" SELECT 0 AS pri, kind, target_id, min(reason) AS reason FROM {db}.links FINAL"
        "  WHERE project_id = {p:UInt32} AND session_id = {s:String}"
        "  AND kind IN ('trace', 'error')"
        "  GROUP BY kind, target_id"
        " UNION ALL"
        " SELECT 1 AS pri, 'trace' AS kind, trace_id AS target_id,"
        " 'span carries the session id' AS reason"
        f" FROM {db}.session_traces WHERE project_id = {{p:UInt32}} AND session_id = {{s:String}}"
        "  GROUP BY trace_id"
        ") ORDER BY pri, kind, target_id",
        {"p": project_id, "s": session_id},
    )
    traces: dict[str, str] = {}
    errors: dict[str, str] = {}
    for r in rows:
        (traces if r["kind"] == "trace" else errors).setdefault(r["target_id"], r["reason"])
    return traces, errors


AGENT_COLUMNS = (
    "event_uid, type, ts, agent_id, session_id, trace_id, status, task_id,"
    " current_task, action, node_id, node_type, edge_source, edge_target, hitl_kind,"
    " duration_ms, response_time_ms, error"
)


def agent_events_for(
    ch: ClickHouse, project_id: int, session_id: str, trace_ids: list[str]
) -> list[dict[str, Any]]:
    """Events with the session id or one of its traces, read only where agent_event_keys
    says they can be (their agents, within their time range): `agent_events` is sorted by
    agent, and its bloom filters alone let most of the table through."""
    db = ch.database
    return ch.query(
        "WITH (SELECT (groupUniqArray(agent_id), min(first_ts), max(last_ts))"
        f" FROM {db}.agent_event_keys WHERE project_id = {{p:UInt32}}"
        " AND ((key_kind = 'session' AND key = {s:String})"
        "      OR (key_kind = 'trace' AND key IN {t:Array(String)}))) AS keys"
        f" SELECT {AGENT_COLUMNS} FROM {db}.agent_events FINAL"
        " PREWHERE project_id = {p:UInt32} AND agent_id IN keys.1"
        " AND ts BETWEEN keys.2 AND keys.3"
        " WHERE (session_id = {s:String} OR (trace_id != '' AND has({t:Array(String)}, trace_id)))"
        " ORDER BY ts, event_uid LIMIT 10000",
        {"p": project_id, "s": session_id, "t": trace_ids},
    )


def spans_for(ch: ClickHouse, project_id: int, trace_ids: list[str]) -> list[dict[str, Any]]:
    if not trace_ids:
        return []
    return ch.query(
        "SELECT trace_id, span_id, parent_span_id, name, kind, op, status_code, status_message,"
        " service_name, source, start_time, duration_ns, session_id, attributes"
        f" FROM {ch.database}.spans FINAL"
        " PREWHERE project_id = {p:UInt32} AND has({t:Array(String)}, trace_id)"
        " ORDER BY start_time LIMIT 20000",
        {"p": project_id, "t": trace_ids},
    )


def replay_events_for(ch: ClickHouse, project_id: int, session_id: str) -> list[dict[str, Any]]:
    """The session's tracker events, read within its time range (replay_session_bounds):
    the table is partitioned by day, and a session id alone makes every part of every
    day answer with a granule of other sessions."""
    db = ch.database
    return ch.query(
        "WITH (SELECT (min(first_ts), max(last_ts)) FROM"
        f" {db}.replay_session_bounds"
        " WHERE project_id = {p:UInt32} AND session_id = {s:String}) AS bounds"
        " SELECT event_uid, ts, kind, page_url, name, selector, url, method, status,"
        " duration_ms, value, trace_id, span_id"
        f" FROM {db}.replay_events FINAL"
        " PREWHERE project_id = {p:UInt32} AND session_id = {s:String}"
        " AND ts BETWEEN bounds.1 AND bounds.2"
        " WHERE kind NOT IN ('performance', 'resource', 'viewport', 'tab')"
        " ORDER BY ts, page_no, event_uid LIMIT 20000",
        {"p": project_id, "s": session_id},
    )


def recent_sessions(
    ch: ClickHouse, project_id: int, search: str, limit: int
) -> list[dict[str, Any]]:
    """Sessions seen in any signal, newest first."""
    db = ch.database
    return ch.query(
        "SELECT session_id, min(ts) AS first_seen, max(ts) AS last_seen,"
        " sum(agent) AS agent_events, sum(spans) AS spans, sum(replay) AS replay_events FROM ("
        f" SELECT session_id, ts, 1 AS agent, 0 AS spans, 0 AS replay FROM {db}.agent_events"
        "  WHERE project_id = {p:UInt32} AND session_id != ''"
        " UNION ALL"
        " SELECT session_id, toDateTime64(start_time, 3) AS ts, 0, 1, 0"
        f" FROM {db}.spans WHERE project_id = {{p:UInt32}} AND session_id != ''"
        " UNION ALL"
        f" SELECT session_id, ts, 0, 0, 1 FROM {db}.replay_events"
        "  WHERE project_id = {p:UInt32}"
        ") WHERE position(session_id, {q:String}) > 0"
        " GROUP BY session_id ORDER BY last_seen DESC LIMIT {n:UInt32}",
        {"p": project_id, "q": search, "n": limit},
    )


ERROR_COLUMNS = (
    "event_id, group_id, timestamp, received_at, level, platform, title, culprit, message,"
    " exception_types, exception_values, handled, trace_id, openreplay_session_id, user_id,"
    " release, environment, server_name, sdk_name, transaction"
)


def errors_for(
    ch: ClickHouse, project_id: int, event_ids: list[str], trace_ids: list[str]
) -> list[dict[str, Any]]:
    """Errors by event id, then those of the traces not already among them: disjoint
    branches, each pruned by its own bloom filter (under one OR the two filters let most
    granules through, and FINAL widened that to the whole table)."""
    if not event_ids and not trace_ids:
        return []
    db = ch.database
    branches = []
    if event_ids:
        branches.append(
            f"SELECT {ERROR_COLUMNS} FROM {db}.sentry_errors FINAL"
            " WHERE project_id = {p:UInt32} AND event_id IN {e:Array(String)}"
        )
    if trace_ids:
        branches.append(
            f"SELECT {ERROR_COLUMNS} FROM {db}.sentry_errors FINAL"
            " WHERE project_id = {p:UInt32} AND trace_id IN {t:Array(String)}"
            " AND trace_id != '' AND event_id NOT IN {e:Array(String)}"
        )
    return ch.query(
        f"SELECT {ERROR_COLUMNS} FROM ({' UNION ALL '.join(branches)})"
        " ORDER BY timestamp LIMIT 5000",
        {"p": project_id, "e": event_ids, "t": trace_ids},
    )


def session_user_window(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any] | None:
    """The tracker session's user id and time span, for the inferred fallback."""
    rows = ch.query(
        "SELECT user_id, started_at, last_event_at"
        f" FROM {ch.database}.replay_sessions FINAL"
        " WHERE project_id = {p:UInt32} AND session_id = {s:String} AND user_id != ''"
        " LIMIT 1",
        {"p": project_id, "s": session_id},
    )
    return rows[0] if rows else None


def unkeyed_user_errors(
    ch: ClickHouse, project_id: int, user_id: str, start: str, end: str
) -> list[dict[str, Any]]:
    """Errors of the same user in the window that name no session at all."""
    return ch.query(
        f"SELECT {ERROR_COLUMNS} FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {p:UInt32} AND user_id = {u:String}"
        " AND timestamp BETWEEN parseDateTime64BestEffort({a:String}, 3) - INTERVAL 1 MINUTE"
        "                   AND parseDateTime64BestEffort({b:String}, 3) + INTERVAL 1 MINUTE"
        " AND openreplay_session_id = '' AND openreplay_session_url = ''"
        " AND openreplay_session_token = ''"
        " ORDER BY timestamp LIMIT 1000",
        {"p": project_id, "u": user_id, "a": start, "b": end},
    )


def sessions_of_trace(ch: ClickHouse, project_id: int, trace_id: str) -> list[dict[str, Any]]:
    return ch.query(
        f"SELECT session_id, any(reason) AS reason FROM {ch.database}.links FINAL"
        " WHERE project_id = {p:UInt32} AND kind = 'trace' AND target_id = {t:String}"
        " GROUP BY session_id ORDER BY session_id",
        {"p": project_id, "t": trace_id},
    )


def sessions_of_issue(ch: ClickHouse, project_id: int, group_id: str) -> list[dict[str, Any]]:
    db = ch.database
    return ch.query(
        f"SELECT session_id, any(reason) AS reason FROM {db}.links FINAL"
        " WHERE project_id = {p:UInt32} AND ("
        "  (kind = 'error' AND target_id IN (SELECT event_id FROM "
        f"   {db}.sentry_errors WHERE project_id = {{p:UInt32}} AND group_id = {{g:String}}))"
        "  OR (kind = 'trace' AND target_id IN (SELECT trace_id FROM "
        f"   {db}.sentry_errors WHERE project_id = {{p:UInt32}} AND group_id = {{g:String}}"
        "   AND trace_id != '')))"
        " GROUP BY session_id ORDER BY session_id",
        {"p": project_id, "g": group_id},
    )


def replay_details_for(ch: ClickHouse, project_id: int, session_id: str) -> list[dict[str, Any]]:
    """What the session page expands a tracker item into: request/response headers and
    bodies, WebSocket payloads, exception stacks (the timeline read leaves them out)."""
    return ch.query(
        "SELECT event_uid, request_headers, response_headers, request_body, response_body,"
        " request_size, response_size, stack, details"
        f" FROM {ch.database}.replay_events FINAL"
        " PREWHERE project_id = {p:UInt32} AND session_id = {s:String}"
        " WHERE kind IN ('network', 'exception', 'websocket', 'graphql', 'input')"
        " ORDER BY ts, event_uid LIMIT 20000",
        {"p": project_id, "s": session_id},
    )


def logs_for(
    ch: ClickHouse, project_id: int, session_id: str, trace_ids: list[str], limit: int = 2000
) -> list[dict[str, Any]]:
    """OTLP log records of the session: those carrying its id and those of its traces."""
    return ch.query(
        "SELECT timestamp, severity_text, severity_number, body, trace_id, span_id,"
        " service_name, attributes"
        f" FROM {ch.database}.logs FINAL"
        " WHERE project_id = {p:UInt32}"
        " AND (session_id = {s:String}"
        " OR (notEmpty(trace_id) AND has({t:Array(String)}, trace_id)))"
        " ORDER BY timestamp, log_uid LIMIT {limit:UInt32}",
        {"p": project_id, "s": session_id, "t": trace_ids, "limit": limit},
    )
