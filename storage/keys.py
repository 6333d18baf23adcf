"""Names of the Valkey streams, groups and keys.

One stream per signal kind by default. For a Valkey cluster, a kind can be split into
N shards (`stream_shards`): shard 0 keeps the unsharded name, so growing from 1 to N
keeps the existing backlog. The hash tag (`{agent}`, `{agent:3}`) puts a stream and its
DLQ in one cluster slot, so no command ever crosses slots; different shards hash to
different slots and spread over the masters.
"""

from __future__ import annotations

import zlib

KINDS = ("agent", "replay", "sentry", "otlp")
GROUP = "wl:enrich"


def _tag(kind: str, shard: int) -> str:
    return f"{{{kind}}}" if shard == 0 else f"{{{kind}:{shard}}}"


def in_stream(kind: str, shard: int = 0) -> str:
    return f"wl:in:{_tag(kind, shard)}"


def backlog_items_key(stream: str) -> str:
    """The count of items in a stream's entries (same hash tag as the stream): raised by
    the append script, lowered with the acknowledgement, so `/metrics` reads it in O(1)."""
    return stream.replace("wl:in:", "wl:items:", 1)


def dlq_stream(kind: str, shard: int = 0) -> str:
    return f"wl:dlq:{_tag(kind, shard)}"


def idempotency_key(kind: str, shard: int, project_id: int, client_key: str) -> str:
    """Where a client's Idempotency-Key is remembered: beside its stream (same hash tag,
    so the check and the append are one script on one node), hashed so any text is a
    valid, bounded key name."""
    import hashlib

    digest = hashlib.sha256(client_key.encode()).hexdigest()[:40]
    return f"wl:idem:{_tag(kind, shard)}:{project_id}:{digest}"


def in_streams(kind: str, shards: int = 1) -> list[str]:
    return [in_stream(kind, s) for s in range(shards)]


def dlq_streams(kind: str, shards: int = 1) -> list[str]:
    return [dlq_stream(kind, s) for s in range(shards)]


def shard_for(key: str | bytes | None, shards: int, fallback: int = 0) -> int:
    """The shard of a session / trace id: one session's entries share a stream, so they
    stay in order. Without a key, `fallback` (the caller spreads those)."""
    if shards <= 1:
        return 0
    if not key:
        return fallback % shards
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % shards


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


def retired_outcomes_key() -> str:
    """Per kind, the outcome balance of processes that stopped cleanly (their final
    snapshot), so it still counts once their snapshots leave the counters stream."""
    return "wl:{alerts}:retired"
