"""The agent events an app sends to `POST /api/v1/events`.

Four kinds, told apart by `type` (a pydantic discriminated union). Unknown
fields are rejected so a typo shows up as a 400, not as a silently empty column.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

Id = Annotated[str, Field(min_length=1, max_length=256)]
TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")

# ClickHouse partitions agent_events by day; a request spanning years would make
# hundreds of parts, so timestamps must be near "now".
MAX_FUTURE = timedelta(days=1)
MAX_PAST = timedelta(days=3650)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    ts: datetime | None = Field(
        default=None, description="when it happened (ISO 8601 or epoch ms); default: received"
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="the client's own id of this event: a resend of it is stored once"
        " (with the same ts; without ts, each copy's time is when it was received)",
    )
    session_id: str | None = Field(default=None, max_length=256)
    trace_id: str | None = Field(default=None, description="W3C trace id, 32 hex characters")
    user_id: str | None = Field(default=None, max_length=256)

    @field_validator("trace_id")
    @classmethod
    def _trace_shape(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if not TRACE_ID_RE.match(v):
            raise ValueError("trace_id must be 32 hex characters")
        return v

    @field_validator("ts")
    @classmethod
    def _ts_range(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if v > now + MAX_FUTURE:
            raise ValueError("ts is more than a day in the future")
        if v < now - MAX_PAST:
            raise ValueError("ts is more than ten years in the past")
        return v


class AgentMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_tasks: int | None = Field(default=None, ge=0)
    completed_tasks: int | None = Field(default=None, ge=0)
    cpu_usage: float | None = Field(default=None, ge=0)
    memory_usage: float | None = Field(default=None, ge=0)


class AgentState(_Event):
    type: Literal["agent_state"]
    agent_id: Id
    status: Literal["idle", "busy", "error", "terminated"]
    current_task: str | None = Field(default=None, max_length=1024)
    metrics: AgentMetrics = Field(default_factory=AgentMetrics)
    heartbeat: datetime | None = Field(default=None, description="last heartbeat; default: ts")


class TaskUpdate(_Event):
    type: Literal["task_update"]
    task_id: Id
    agent_id: Id
    state: Literal["queued", "running", "done", "failed"]
    duration_ms: float | None = Field(default=None, ge=0)
    error: str | None = Field(default=None, max_length=16_384)


class Viewport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float
    y: float
    zoom: float = Field(gt=0)


CanvasAction = Literal[
    "node_click",
    "node_double_click",
    "node_context_menu",
    "node_drag_start",
    "node_drag",
    "node_drag_stop",
    "node_add",
    "node_delete",
    "edge_click",
    "edge_connect",
    "edge_update",
    "edge_delete",
    "viewport_change",
    "selection_change",
    "pane_click",
]


class VisualizationInteraction(_Event):
    type: Literal["visualization_interaction"]
    action: CanvasAction
    agent_id: str | None = Field(default=None, max_length=256)
    node_id: str | None = Field(default=None, max_length=256)
    node_type: str | None = Field(default=None, max_length=256)
    edge_id: str | None = Field(default=None, max_length=256)
    edge_source: str | None = Field(default=None, max_length=256)
    edge_target: str | None = Field(default=None, max_length=256)
    selected_nodes: list[str] | None = Field(default=None, max_length=10_000)
    viewport: Viewport | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Hitl(_Event):
    type: Literal["hitl"]
    hitl_id: Id
    kind: Literal["notification", "question", "review"]
    state: Literal["opened", "answered", "dismissed"]
    agent_id: str | None = Field(default=None, max_length=256)
    task_id: str | None = Field(default=None, max_length=256)
    message: str | None = Field(default=None, max_length=16_384)
    response_time_ms: float | None = Field(default=None, ge=0)


AgentEvent = Annotated[
    AgentState | TaskUpdate | VisualizationInteraction | Hitl, Field(discriminator="type")
]
EVENTS = TypeAdapter(list[AgentEvent])


class Problem(BaseModel):
    index: int | None
    field: str
    message: str


def problems_of(error: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into `{index, field, message}` items a client can act on."""
    out: list[Problem] = []
    for e in error.errors(include_url=False):
        loc = list(e["loc"])
        index = loc.pop(0) if loc and isinstance(loc[0], int) else None
        # The discriminator's own tag ("agent_state", ...) is noise in the path.
        if loc and loc[0] in {"agent_state", "task_update", "visualization_interaction", "hitl"}:
            loc.pop(0)
        out.append(
            Problem(index=index, field=".".join(str(p) for p in loc) or "$", message=e["msg"])
        )
    return out
