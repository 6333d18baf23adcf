"""Valkey stream helpers shared by the edge (producer) and the workers (consumers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from weftline.storage.keys import GROUP, KINDS, dlq_stream, in_stream

# Append only while the stream's backlog is under budget. Entries are deleted
# once acknowledged, so XLEN is exactly what is accepted and not yet stored.
# One script keeps check-and-append atomic and a single round trip.
BOUNDED_XADD = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""


class BacklogFull(Exception):
    """The stream holds its whole budget of unprocessed entries."""


def connect(
    url: str, *, timeout: float = 5.0, connect_timeout: float = 2.0, cluster: bool = False
) -> aioredis.Redis:
    """A client for `url`; with `cluster`, a cluster client that finds every master from
    that one node and routes each command to its slot. A Valkey that is down fails within
    `connect_timeout` (the edge answers 503 at once); a merely slow one gets `timeout`,
    so a loaded machine does not turn accepted traffic into 503s."""
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(  # type: ignore[return-value]
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            health_check_interval=15,
        )
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        health_check_interval=15,
        retry_on_timeout=False,
    )


class StreamProducer:
    def __init__(self, client: aioredis.Redis, *, waitaof: bool = False) -> None:
        self.client = client
        self.waitaof = waitaof
        self._xadd = client.register_script(BOUNDED_XADD)

    async def add(self, stream: str, fields: Mapping[str, bytes | str | int], budget: int) -> str:
        """Append one entry; returns its id. Raises BacklogFull, or redis errors when
        Valkey is unreachable (the edge turns both into 503)."""
        args: list[bytes | str | int] = [budget]
        for k, v in fields.items():
            args.extend((k, v))
        entry_id = await self._xadd(keys=[stream], args=args)
        if entry_id is None:
            raise BacklogFull(stream)
        if self.waitaof:
            # 1 local fsync, 0 replicas: answer only once the entry is on disk.
            local, _ = await self.client.execute_command("WAITAOF", 1, 0, 1000)
            if int(local) < 1:
                raise TimeoutError("WAITAOF: entry not fsynced within 1 s")
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def is_cluster(client: aioredis.Redis) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


async def publish_many(client: aioredis.Redis, messages: Sequence[tuple[str, bytes]]) -> None:
    """PUBLISH each (channel, message): pipelined on one server; on a cluster (whose
    pipelines refuse PUBLISH, a cluster-wide broadcast) as concurrent calls."""
    if not messages:
        return
    if is_cluster(client):
        await asyncio.gather(*(client.publish(ch, m) for ch, m in messages))
        return
    pipe = client.pipeline(transaction=False)
    for ch, m in messages:
        pipe.publish(ch, m)
    await pipe.execute()


async def ensure_group(client: aioredis.Redis, stream: str, group: str = GROUP) -> None:
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


async def ack_and_delete(
    client: aioredis.Redis, stream: str, ids: Sequence[str], group: str = GROUP
) -> None:
    """Acknowledge and trim in one transaction: an entry leaves the buffer only once
    it is stored (or dead-lettered)."""
    if not ids:
        return
    pipe = client.pipeline(transaction=True)
    pipe.xack(stream, group, *ids)
    pipe.xdel(stream, *ids)
    await pipe.execute()


async def stream_stats(client: aioredis.Redis, shards: int = 1) -> dict[str, dict[str, float]]:
    """Backlog, pending, lag, oldest-entry age and DLQ size of each kind (summed over its
    shards; the age is the oldest shard's)."""
    pipe = client.pipeline(transaction=False)
    for kind in KINDS:
        for shard in range(shards):
            pipe.xlen(in_stream(kind, shard))
            pipe.xlen(dlq_stream(kind, shard))
            pipe.xrange(in_stream(kind, shard), count=1)
    raw = await pipe.execute()
    out: dict[str, dict[str, float]] = {}
    now_ms = time.time() * 1000
    for i, kind in enumerate(KINDS):
        length = dlq = oldest = pending = lag = 0.0
        for shard in range(shards):
            base = 3 * (i * shards + shard)
            s_len, s_dlq, first = raw[base : base + 3]
            length += s_len
            dlq += s_dlq
            if first:
                first_id = first[0][0].decode() if isinstance(first[0][0], bytes) else first[0][0]
                oldest = max(oldest, (now_ms - int(first_id.split("-")[0])) / 1000)
            if s_len or s_dlq:
                try:
                    for g in await client.xinfo_groups(in_stream(kind, shard)):
                        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                        if name == GROUP:
                            pending += float(g.get("pending") or 0)
                            lag += float(g.get("lag") or 0)
                except RedisError:
                    pass
        out[kind] = {
            "backlog": length,
            "dlq": dlq,
            "oldest_age_seconds": oldest,
            "pending": pending,
            "lag": lag,
        }
    return out
