"""Agent event validation (pure)."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from weftline.ground.agent_schema import EVENTS, problems_of


def test_each_kind_validates():
    events = EVENTS.validate_python(
        [
            {
                "type": "agent_state",
                "agent_id": "a",
                "status": "idle",
                "metrics": {
                    "total_tasks": 1,
                    "completed_tasks": 1,
                    "cpu_usage": 3.5,
                    "memory_usage": 100,
                },
            },
            {
                "type": "task_update",
                "task_id": "t",
                "agent_id": "a",
                "state": "done",
                "duration_ms": 12,
            },
            {
                "type": "visualization_interaction",
                "action": "edge_connect",
                "edge_source": "n1",
                "edge_target": "n2",
                "viewport": {"x": 1, "y": 2, "zoom": 1.5},
                "metadata": {"k": [1, 2]},
            },
            {
                "type": "hitl",
                "hitl_id": "h",
                "kind": "question",
                "state": "answered",
                "response_time_ms": 4000,
                "session_id": "s1",
                "trace_id": "0AF7651916CD43DD8448EB211C80319C",
            },
        ]
    )
    assert [e.type for e in events] == [
        "agent_state",
        "task_update",
        "visualization_interaction",
        "hitl",
    ]
    assert events[3].trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert events[0].metrics.cpu_usage == 3.5


def test_problems_name_index_and_field():
    with pytest.raises(ValidationError) as exc:
        EVENTS.validate_python(
            [
                {"type": "agent_state", "agent_id": "a", "status": "idle"},
                {"type": "task_update", "task_id": "t", "agent_id": "a", "state": "exploded"},
                {"type": "hitl", "hitl_id": "h", "kind": "question"},
                {"type": "nope"},
            ]
        )
    problems = [p.model_dump() for p in problems_of(exc.value)]
    assert {"index": 1, "field": "state"} == {k: problems[0][k] for k in ("index", "field")}
    assert {(p["index"], p["field"]) for p in problems} == {(1, "state"), (2, "state"), (3, "$")}


def test_epoch_ms_and_range():
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    [ev] = EVENTS.validate_python(
        [{"type": "agent_state", "agent_id": "a", "status": "busy", "ts": now_ms}]
    )
    assert abs(ev.ts.timestamp() * 1000 - now_ms) < 1
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    with pytest.raises(ValidationError, match="future"):
        EVENTS.validate_python(
            [{"type": "agent_state", "agent_id": "a", "status": "busy", "ts": future}]
        )


def test_unknown_fields_and_bad_trace_id_are_rejected():
    with pytest.raises(ValidationError) as exc:
        EVENTS.validate_python(
            [
                {
                    "type": "agent_state",
                    "agent_id": "a",
                    "status": "busy",
                    "stauts": "x",
                    "trace_id": "xyz",
                }
            ]
        )
    fields = {p.field for p in problems_of(exc.value)}
    assert fields == {"stauts", "trace_id"}
