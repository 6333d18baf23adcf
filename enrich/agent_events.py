"""Agent events worker: stream entry → `agent_events` rows, current agent state, live feed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from pydantic import ValidationError

from weftline.enrich.links import with_links
from weftline.enrich.stream_consumer import DecodeError, Entry
from weftline.ground.agent_schema import (
    EVENTS,
    AgentState,
    Hitl,
    TaskUpdate,
    VisualizationInteraction,
)
from weftline.ground.times import ch_time
from weftline.storage.clickhouse import ClickHouse
from weftline.storage.keys import agent_index_key, agent_state_key, live_channel
from weftline.storage.valkey import publish_many
from weftline.storage.writer import write_tables

TABLE = "agent_events"


# Not frozen: a frozen dataclass sets each of these 25 fields through object.__setattr__,
# which made row construction the worker's largest cost.
@dataclass(slots=True)
class AgentEventRow:
    project_id: int
    event_uid: str
    type: str
    ts: str
    received_at: str
    agent_id: str = ""
    session_id: str = ""
    trace_id: str = ""
    user_id: str = ""
    status: str = ""
    task_id: str = ""
    current_task: str = ""
    action: str = ""
    node_id: str = ""
    node_type: str = ""
    edge_source: str = ""
    edge_target: str = ""
    hitl_kind: str = ""
    duration_ms: float | None = None
    response_time_ms: float | None = None
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    payload: str = ""
    retention_days: int = 30
    # Not stored: used for the agent's current state.
    heartbeat_ms: int = 0

    def stored(self) -> dict[str, Any]:
        """The ClickHouse row (dataclasses.asdict deep-copies and costs several times more)."""
        return {k: getattr(self, k) for k in STORED_COLUMNS}


def _field(fields: Mapping[bytes, bytes], name: bytes) -> bytes:
    try:
        return fields[name]
    except KeyError:
        raise DecodeError(f"entry has no {name.decode()!r} field") from None


def decode_agent_entry(
    entry_id: str, fields: Mapping[bytes, bytes], retention_days: int = 30
) -> list[AgentEventRow]:
    """Pure: one stream entry (a validated request) → one row per event.

    `event_uid` = entry id + position, stable under redelivery.
    """
    try:
        project_id = int(_field(fields, b"project"))
        received_ms = int(_field(fields, b"received_at"))
    except ValueError as e:
        raise DecodeError(f"bad entry metadata: {e}") from None
    payload = _field(fields, b"p")
    try:
        events = EVENTS.validate_json(payload)
        raw = orjson.loads(payload)  # the events as sent, for the payload column
    except ValidationError as e:
        raise DecodeError(
            f"invalid agent events: {e.error_count()} errors: {e.errors()[:3]}"
        ) from None
    received = datetime.fromtimestamp(received_ms / 1000, UTC)
    received_text = ch_time(received)
    rows = []
    for i, ev in enumerate(events):
        ts = ev.ts or received
        common: dict[str, Any] = {
            "project_id": project_id,
            # The client's id where it gave one (a resend collapses under FINAL whatever
            # entry it came in), else the entry id + position (stable under redelivery).
            "event_uid": f"id:{ev.event_id}" if ev.event_id else f"{entry_id}:{i}",
            "type": ev.type,
            "ts": ch_time(ts),
            "received_at": received_text,
            "session_id": ev.session_id or "",
            "trace_id": ev.trace_id or "",
            "user_id": ev.user_id or "",
            "payload": orjson.dumps(raw[i]).decode(),
            "retention_days": retention_days,
        }
        if isinstance(ev, AgentState):
            hb = ev.heartbeat or ts
            common.update(
                agent_id=ev.agent_id,
                status=ev.status,
                current_task=ev.current_task or "",
                metrics={
                    k: float(v) for k in METRIC_FIELDS if (v := getattr(ev.metrics, k)) is not None
                },
                # The newest heartbeat wins the agent's state: one from the future would
                # pin it, so no heartbeat counts as later than its arrival (+ a minute).
                heartbeat_ms=min(int(hb.timestamp() * 1000), received_ms + MAX_HEARTBEAT_AHEAD_MS),
            )
        elif isinstance(ev, TaskUpdate):
            common.update(
                agent_id=ev.agent_id,
                task_id=ev.task_id,
                status=ev.state,
                duration_ms=ev.duration_ms,
                error=ev.error or "",
            )
        elif isinstance(ev, VisualizationInteraction):
            common.update(
                agent_id=ev.agent_id or "",
                action=ev.action,
                node_id=ev.node_id or "",
                node_type=ev.node_type or "",
                edge_source=ev.edge_source or "",
                edge_target=ev.edge_target or "",
            )
        elif isinstance(ev, Hitl):
            common.update(
                agent_id=ev.agent_id or "",
                task_id=ev.task_id or "",
                status=ev.state,
                hitl_kind=ev.kind,
                response_time_ms=ev.response_time_ms,
            )
        rows.append(AgentEventRow(**common))
    return rows


# Keep the newest state only: a redelivered or late heartbeat must not roll an
# agent's state back.
SET_STATE_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], 'heartbeat_ms')
if cur and tonumber(cur) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'heartbeat_ms', ARGV[1], 'status', ARGV[2],
  'current_task', ARGV[3], 'metrics', ARGV[4], 'agent_id', ARGV[5], 'updated_ms', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 1
"""

STORED_COLUMNS = tuple(f for f in AgentEventRow.__dataclass_fields__ if f not in {"heartbeat_ms"})
MAX_HEARTBEAT_AHEAD_MS = 60_000
METRIC_FIELDS = ("total_tasks", "completed_tasks", "cpu_usage", "memory_usage")


class AgentEventsHandler:
    kind = "agent"

    def __init__(
        self,
        ch: ClickHouse,
        client: aioredis.Redis,
        retention_of: Callable[[int], int],
        state_ttl_seconds: int,
    ) -> None:
        self.ch = ch
        self.client = client
        self.retention_of = retention_of
        self.state_ttl = state_ttl_seconds
        self._set_state = client.register_script(SET_STATE_IF_NEWER)

    def decode(self, entry: Entry) -> list[AgentEventRow]:
        try:
            project_id = int(entry.fields.get(b"project", b"0"))
        except ValueError:
            project_id = 0
        return decode_agent_entry(entry.id, entry.fields, self.retention_of(project_id))

    async def store(self, rows: list[AgentEventRow], token: str) -> None:
        data = [r.stored() for r in rows]
        await write_tables(self.ch, with_links({TABLE: data}), token, order=(TABLE,))

    async def after_store(self, rows: list[AgentEventRow]) -> None:
        """Newest state per agent (one script call per agent, not per event) and one live
        message per project per batch."""
        now_ms = int(time.time() * 1000)
        # Scripts run outside the pipeline: a Valkey cluster pipeline refuses EVALSHA.
        newest: dict[tuple[int, str], AgentEventRow] = {}
        feed: dict[int, list[bytes]] = {}
        for r in rows:
            if r.type == "agent_state":
                k = (r.project_id, r.agent_id)
                if k not in newest or r.heartbeat_ms >= newest[k].heartbeat_ms:
                    newest[k] = r
            feed.setdefault(r.project_id, []).append(live_message(r))
        await asyncio.gather(
            *(
                self._set_state(
                    keys=[agent_state_key(r.project_id, r.agent_id), agent_index_key(r.project_id)],
                    args=[
                        r.heartbeat_ms,
                        r.status,
                        r.current_task,
                        orjson.dumps(r.metrics),
                        r.agent_id,
                        now_ms,
                        self.state_ttl,
                    ],
                )
                for r in newest.values()
            )
        )
        # A JSON array of already-serialized events, without re-encoding them.
        await publish_many(
            self.client,
            [(live_channel(p), b"[" + b",".join(m) + b"]") for p, m in feed.items()],
        )


def live_message(r: AgentEventRow) -> bytes:
    msg: dict[str, Any] = {
        "type": r.type,
        "event_uid": r.event_uid,
        "ts": r.ts,
        "agent_id": r.agent_id,
    }
    for k in ("status", "current_task", "task_id", "action", "node_id", "session_id"):
        v = getattr(r, k)
        if v:
            msg[k] = v
    if r.metrics:
        msg["metrics"] = r.metrics
    return orjson.dumps(msg)
