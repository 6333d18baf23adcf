"""Names of the Valkey streams, groups and keys.

One stream per signal kind; the hash tag `{kind}` keeps a stream and its DLQ in
one cluster slot so no command crosses slots.
"""

from __future__ import annotations

KINDS = ("agent", "replay", "sentry", "otlp")
GROUP = "wl:enrich"


def in_stream(kind: str) -> str:
    return f"wl:in:{{{kind}}}"


def dlq_stream(kind: str) -> str:
    return f"wl:dlq:{{{kind}}}"


def agent_state_key(project_id: int, agent_id: str) -> str:
    return f"wl:agent:{{p{project_id}}}:{agent_id}"


def agent_index_key(project_id: int) -> str:
    return f"wl:agents:{{p{project_id}}}"


def live_channel(project_id: int) -> str:
    return f"wl:live:{project_id}"


def replay_active_key() -> str:
    """Sorted set: `project:session` → last time a batch of it was stored (ms)."""
    return "wl:replay:active"


def replay_ender_lock() -> str:
    return "wl:replay:ender-lock"


# The alert loop's keys share one hash tag, so its scripts never cross cluster slots.
def alert_leader_key() -> str:
    return "wl:{alerts}:leader"


def alert_state_key() -> str:
    return "wl:{alerts}:state"


def alert_groups_key() -> str:
    return "wl:{alerts}:groups"


def alert_counters_stream() -> str:
    return "wl:{alerts}:counters"
