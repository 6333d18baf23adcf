"""Reads behind the agents API: runs of an agent, the GenAI spans of their traces, the
parent links between them. Bound parameters only; FINAL so a span stored twice counts
once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from weftline.storage.clickhouse import ClickHouse
from weftline.storage.trace_queries import EPOCH_MIN, FAR_FUTURE, ts9

MAX_TRACES = 1000
MAX_GENAI_SPANS = 50_000

RUN_COLUMNS = (
    "agent_name, agent_id, trace_id, span_id, parent_span_id, name, service_name,"
    " toUnixTimestamp64Nano(start_time) AS start_ns, duration_ns, status, error_type,"
    " error_message, conversation_id, provider, request_model, reported_input_tokens,"
    " reported_output_tokens, session_id"
)

GENAI_COLUMNS = (
    "trace_id, span_id, parent_span_id, operation, name, service_name,"
    " toUnixTimestamp64Nano(start_time) AS start_ns, duration_ns, status, error_type,"
    " error_message, agent_name, agent_id, conversation_id, provider, request_model,"
    " response_model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
    " finish_reasons, tool_name, tool_call_id, tool_type, tool_arguments, tool_result,"
    " handoff_from, handoff_to, decision, session_id"
)


def agent_runs(
    ch: ClickHouse,
    project_id: int,
    agent_name: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """One agent's runs, newest first."""
    return ch.query(
        f"SELECT {RUN_COLUMNS} FROM {ch.database}.agent_runs FINAL"
        " PREWHERE project_id = {p:UInt32} AND agent_name = {a:String}"
        " AND start_time >= {lo:DateTime64(9)} AND start_time <= {hi:DateTime64(9)}"
        " ORDER BY start_time DESC, span_id LIMIT {n:UInt32}",
        {
            "p": project_id,
            "a": agent_name,
            "lo": ts9(start, EPOCH_MIN),
            "hi": ts9(end, FAR_FUTURE),
            "n": limit,
        },
    )


def run_by_id(ch: ClickHouse, project_id: int, run_id: str) -> dict[str, Any] | None:
    rows = ch.query(
        f"SELECT {RUN_COLUMNS} FROM {ch.database}.agent_runs FINAL"
        " WHERE project_id = {p:UInt32} AND span_id = {r:String}"
        " ORDER BY start_time LIMIT 1",
        {"p": project_id, "r": run_id},
    )
    return rows[0] if rows else None


def genai_spans_of(ch: ClickHouse, project_id: int, trace_ids: list[str]) -> list[dict[str, Any]]:
    """Every GenAI span of these traces (model calls, tool calls, runs, handoffs)."""
    if not trace_ids:
        return []
    return ch.query(
        f"SELECT {GENAI_COLUMNS} FROM {ch.database}.genai_spans FINAL"
        " WHERE project_id = {p:UInt32} AND trace_id IN {t:Array(String)}"
        " ORDER BY start_time, span_id LIMIT {n:UInt32}",
        {"p": project_id, "t": trace_ids[:MAX_TRACES], "n": MAX_GENAI_SPANS},
    )


def span_parents(ch: ClickHouse, project_id: int, trace_ids: list[str]) -> list[dict[str, Any]]:
    """(trace, span, parent) of every span of these traces: a GenAI span's parent may be
    a plain span (an HTTP handler, a framework's workflow span) between it and its run."""
    if not trace_ids:
        return []
    return ch.query(
        f"SELECT DISTINCT trace_id, span_id, parent_span_id FROM {ch.database}.spans"
        " WHERE project_id = {p:UInt32} AND trace_id IN {t:Array(String)}"
        " LIMIT {n:UInt32}",
        {"p": project_id, "t": trace_ids[:MAX_TRACES], "n": MAX_GENAI_SPANS * 4},
    )


def sessions_of_traces(ch: ClickHouse, project_id: int, trace_ids: list[str]) -> dict[str, str]:
    """trace id → the session it is linked to (the smallest id when several are)."""
    if not trace_ids:
        return {}
    rows = ch.query(
        f"SELECT target_id, min(session_id) AS session_id FROM {ch.database}.links FINAL"
        " WHERE project_id = {p:UInt32} AND kind = 'trace' AND target_id IN {t:Array(String)}"
        " GROUP BY target_id",
        {"p": project_id, "t": trace_ids[:MAX_TRACES]},
    )
    return {r["target_id"]: r["session_id"] for r in rows}


def agents_seen(ch: ClickHouse, project_id: int) -> list[dict[str, Any]]:
    """Every agent name seen in GenAI spans (runs) and in the app's agent events."""
    db = ch.database
    return ch.query(
        "SELECT name, groupUniqArray(seen) AS seen_in, sum(runs) AS runs,"
        " max(last_ts) AS last_seen, argMax(last_status, last_ts) AS last_run_status FROM ("
        "  SELECT agent_name AS name, 'genai_spans' AS seen, count() AS runs,"
        "   max(toDateTime64(start_time, 3)) AS last_ts,"
        "   argMax(status, start_time) AS last_status"
        f"  FROM {db}.agent_runs FINAL WHERE project_id = {{p:UInt32}} AND agent_name != ''"
        "  GROUP BY agent_name"
        " UNION ALL"
        "  SELECT agent_id AS name, 'agent_events' AS seen, 0 AS runs, max(ts) AS last_ts,"
        "   '' AS last_status"
        f"  FROM {db}.agent_events WHERE project_id = {{p:UInt32}} AND agent_id != ''"
        "  GROUP BY agent_id"
        ") GROUP BY name ORDER BY last_seen DESC LIMIT 10000",
        {"p": project_id},
    )


def agent_events_near(
    ch: ClickHouse, project_id: int, agents: list[str], trace_ids: list[str], lo_ns: int, hi_ns: int
) -> list[dict[str, Any]]:
    """The app's agent events (agent_state, task_update, hitl) of these agents or traces
    around [lo, hi] (ns): what joins them to the runs."""
    if not agents and not trace_ids:
        return []
    return ch.query(
        "SELECT event_uid, type, ts, agent_id, trace_id, task_id, status, current_task,"
        " hitl_kind, duration_ms, response_time_ms, error,"
        " JSONExtractString(payload, 'hitl_id') AS hitl_id"
        f" FROM {ch.database}.agent_events FINAL"
        " WHERE project_id = {p:UInt32} AND type IN ('agent_state', 'task_update', 'hitl')"
        " AND (agent_id IN {a:Array(String)} OR (trace_id != '' AND trace_id IN {t:Array(String)}))"
        " AND ts >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC') - INTERVAL 1 HOUR"
        " AND ts <= fromUnixTimestamp64Nano({hi:Int64}, 'UTC') + INTERVAL 1 HOUR"
        " ORDER BY ts, event_uid LIMIT 10000",
        {"p": project_id, "a": agents, "t": trace_ids, "lo": lo_ns, "hi": hi_ns},
    )


def runs_of_traces(ch: ClickHouse, project_id: int, trace_ids: list[str]) -> list[dict[str, Any]]:
    """Every run in these traces (a session's linked traces)."""
    if not trace_ids:
        return []
    return ch.query(
        f"SELECT {RUN_COLUMNS} FROM {ch.database}.agent_runs FINAL"
        " WHERE project_id = {p:UInt32} AND trace_id IN {t:Array(String)}"
        " ORDER BY start_time, span_id LIMIT 1000",
        {"p": project_id, "t": trace_ids[:MAX_TRACES]},
    )
