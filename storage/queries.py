"""Read queries. Bound parameters only; FINAL so redelivered rows count once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from weftline.ground.times import ch_time
from weftline.storage.clickhouse import ClickHouse


def agent_events(
    ch: ClickHouse,
    project_id: int,
    agent_id: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    sql = (
        "SELECT event_uid, type, ts, received_at, agent_id, session_id, trace_id, user_id,"
        " status, task_id, current_task, action, node_id, node_type, edge_source,"
        " edge_target, hitl_kind, duration_ms, response_time_ms, error, metrics, payload"
        f" FROM {ch.database}.agent_events FINAL"
        " WHERE project_id = {project:UInt32} AND agent_id = {agent:String}"
        " AND ts >= {start:DateTime64(3)} AND ts <= {end:DateTime64(3)}"
        " ORDER BY ts DESC, event_uid DESC LIMIT {limit:UInt32}"
    )
    params = {
        "project": project_id,
        "agent": agent_id,
        "start": ch_time(start or datetime(1970, 1, 2)),
        "end": ch_time(end or datetime(2200, 1, 1)),
        "limit": limit,
    }
    return ch.query(sql, params)


def count_agent_events(ch: ClickHouse, project_id: int | None = None) -> int:
    sql = f"SELECT count() AS n FROM {ch.database}.agent_events FINAL"
    params: dict[str, Any] = {}
    if project_id is not None:
        sql += " WHERE project_id = {project:UInt32}"
        params["project"] = project_id
    return int(ch.query(sql, params)[0]["n"])
