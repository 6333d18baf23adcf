"""Read queries for spans, traces and logs. Bound parameters only; FINAL (or the
aggregating lookup tables) so a span or log stored twice is read once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from weftline.ground.times import ch_time
from weftline.storage.clickhouse import ClickHouse

EPOCH_MIN = datetime(1970, 1, 2)
FAR_FUTURE = datetime(2262, 1, 1)
MAX_TRACE_SPANS = 10_000

SPAN_COLUMNS = (
    "source, trace_id, span_id, parent_span_id, name, kind, op, status_code, status_message,"
    " service_name, toUnixTimestamp64Nano(start_time) AS start_ns, duration_ns,"
    " resource_attributes, attributes,"
    " arrayMap(t -> toUnixTimestamp64Nano(t), event_times) AS event_times_ns,"
    " event_names, event_attributes, link_trace_ids, link_span_ids, link_attributes, session_id"
)


def ts9(dt: datetime | None, default: datetime) -> str:
    """A naive UTC datetime as DateTime64(9) text."""
    return ch_time(dt or default, 6)


def trace_bounds(ch: ClickHouse, project_id: int, trace_id: str) -> tuple[int, int] | None:
    """(first start, last end) in ns from the lookup table, or None for an unknown trace."""
    rows = ch.query(
        "SELECT toUnixTimestamp64Nano(min(start_time)) AS lo,"
        " toUnixTimestamp64Nano(max(end_time)) AS hi, count() AS n"
        f" FROM {ch.database}.trace_times"
        " WHERE project_id = {project:UInt32} AND trace_id = {trace:String}",
        {"project": project_id, "trace": trace_id},
    )
    if not rows or int(rows[0]["n"]) == 0:
        return None
    return int(rows[0]["lo"]), int(rows[0]["hi"])


def trace_spans(ch: ClickHouse, project_id: int, trace_id: str) -> list[dict[str, Any]]:
    """Every span of one trace, read within the trace's time range (so the partitions
    outside it are skipped and the trace-id bloom filter prunes the rest)."""
    bounds = trace_bounds(ch, project_id, trace_id)
    if bounds is None:
        return []
    lo, hi = bounds
    return ch.query(
        f"SELECT {SPAN_COLUMNS} FROM {ch.database}.spans FINAL"
        " WHERE project_id = {project:UInt32} AND trace_id = {trace:String}"
        " AND start_time >= fromUnixTimestamp64Nano({lo:Int64}, 'UTC')"
        " AND start_time <= fromUnixTimestamp64Nano({hi:Int64}, 'UTC')"
        " ORDER BY start_time, span_id LIMIT {limit:UInt32}",
        {
            "project": project_id,
            "trace": trace_id,
            "lo": lo,
            "hi": hi,
            "limit": MAX_TRACE_SPANS,
        },
    )


def session_trace_ids(ch: ClickHouse, project_id: int, session_id: str) -> list[str]:
    """Traces with at least one span tied to the session, oldest first."""
    rows = ch.query(
        "SELECT trace_id, min(start_time) AS s"
        f" FROM {ch.database}.session_traces"
        " WHERE project_id = {project:UInt32} AND session_id = {session:String}"
        " GROUP BY trace_id ORDER BY s, trace_id LIMIT 10000",
        {"project": project_id, "session": session_id},
    )
    return [r["trace_id"] for r in rows]


@dataclass(frozen=True)
class TraceFilter:
    start: datetime | None = None
    end: datetime | None = None
    service: str | None = None
    min_duration_ns: int = 0
    status: str | None = None  # "error": traces with an error span; "ok": without
    session_id: str | None = None
    limit: int = 100


def trace_summaries(ch: ClickHouse, project_id: int, f: TraceFilter) -> list[dict[str, Any]]:
    """One row per trace with a span starting in [start, end], newest first. A trace
    that straddles the window is summarized from its spans inside it."""
    params: dict[str, Any] = {
        "project": project_id,
        "start": ts9(f.start, EPOCH_MIN),
        "end": ts9(f.end, FAR_FUTURE),
        "min_ns": f.min_duration_ns,
        "limit": f.limit,
    }
    where = [
        "project_id = {project:UInt32}",
        "start_time >= {start:DateTime64(9)}",
        "start_time <= {end:DateTime64(9)}",
    ]
    if f.session_id:
        where.append(
            "trace_id IN (SELECT trace_id FROM "
            f"{ch.database}.session_traces"
            " WHERE project_id = {project:UInt32} AND session_id = {session:String})"
        )
        params["session"] = f.session_id
    having = ["duration_ns >= {min_ns:UInt64}"]
    if f.service:
        having.append("has(services, {service:String})")
        params["service"] = f.service
    if f.status == "error":
        having.append("error_count > 0")
    elif f.status == "ok":
        having.append("error_count = 0")
    sql = (
        "SELECT trace_id,"
        " toUnixTimestamp64Nano(min(start_time)) AS start_ns,"
        " toUInt64(max(toUnixTimestamp64Nano(start_time) + duration_ns)"
        "   - min(toUnixTimestamp64Nano(start_time))) AS duration_ns,"
        " count() AS span_count,"
        " countIf(status_code = 'error') AS error_count,"
        " arraySort(groupUniqArray(service_name)) AS services,"
        " if(countIf(parent_span_id = '') > 0,"
        "    argMinIf(name, start_time, parent_span_id = ''), argMin(name, start_time))"
        "   AS root_name,"
        " if(countIf(parent_span_id = '') > 0,"
        "    argMinIf(service_name, start_time, parent_span_id = ''),"
        "    argMin(service_name, start_time)) AS root_service,"
        " arraySort(groupUniqArrayIf(session_id, session_id != '')) AS session_ids"
        f" FROM {ch.database}.spans FINAL"
        f" WHERE {' AND '.join(where)}"
        " GROUP BY trace_id"
        f" HAVING {' AND '.join(having)}"
        " ORDER BY start_ns DESC, trace_id LIMIT {limit:UInt32}"
    )
    return ch.query(sql, params)


@dataclass(frozen=True)
class LogFilter:
    start: datetime | None = None
    end: datetime | None = None
    service: str | None = None
    trace_id: str | None = None
    session_id: str | None = None
    min_severity: int = 0
    contains: str | None = None
    limit: int = 100


def logs(ch: ClickHouse, project_id: int, f: LogFilter) -> list[dict[str, Any]]:
    params: dict[str, Any] = {
        "project": project_id,
        "start": ts9(f.start, EPOCH_MIN),
        "end": ts9(f.end, FAR_FUTURE),
        "sev": f.min_severity,
        "limit": f.limit,
    }
    where = [
        "project_id = {project:UInt32}",
        "timestamp >= {start:DateTime64(9)}",
        "timestamp <= {end:DateTime64(9)}",
        "severity_number >= {sev:UInt8}",
    ]
    for col, value in (
        ("service_name", f.service),
        ("trace_id", f.trace_id),
        ("session_id", f.session_id),
    ):
        if value:
            where.append(f"{col} = {{{col}:String}}")
            params[col] = value
    if f.contains:
        where.append("positionCaseInsensitiveUTF8(body, {contains:String}) > 0")
        params["contains"] = f.contains
    sql = (
        "SELECT toString(log_uid) AS log_uid,"
        " toUnixTimestamp64Nano(timestamp) AS time_ns,"
        " toUnixTimestamp64Nano(observed_timestamp) AS observed_ns,"
        " severity_number, severity_text, body, trace_id, span_id, flags, service_name,"
        " scope_name, scope_version, event_name, resource_attributes, attributes, session_id"
        f" FROM {ch.database}.logs FINAL"
        f" WHERE {' AND '.join(where)}"
        " ORDER BY timestamp DESC, log_uid LIMIT {limit:UInt32}"
    )
    return ch.query(sql, params)


def count_spans(ch: ClickHouse, project_id: int, trace_id: str | None = None) -> int:
    sql = f"SELECT count() AS n FROM {ch.database}.spans FINAL WHERE project_id = {{p:UInt32}}"
    params: dict[str, Any] = {"p": project_id}
    if trace_id is not None:
        sql += " AND trace_id = {t:String}"
        params["t"] = trace_id
    return int(ch.query(sql, params)[0]["n"])


def count_logs(ch: ClickHouse, project_id: int) -> int:
    return int(
        ch.query(
            f"SELECT count() AS n FROM {ch.database}.logs FINAL WHERE project_id = {{p:UInt32}}",
            {"p": project_id},
        )[0]["n"]
    )
