"""Valkey stream helpers shared by the edge (producer) and the workers (consumers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from weftline.storage.keys import GROUP, KINDS, backlog_items_key, dlq_stream, in_stream

log = logging.getLogger("weftline.valkey")

# Append only while the stream's backlog is under budget. Entries are deleted
# once acknowledged, so XLEN is exactly what is accepted and not yet stored.
# One script keeps check-and-append atomic and a single round trip.
# KEYS[2] counts the items in the stream's entries (ARGV[2]).
BOUNDED_XADD = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('INCRBY', KEYS[2], ARGV[2])
return id
"""


# The same, remembering the request's Idempotency-Key: a key already seen returns the
# entry id it was appended under (and appends nothing); a new one is set with the entry
# id for the window, in the same script, so no crash can separate the two.
IDEMPOTENT_XADD = """
local prev = redis.call('GET', KEYS[2])
if prev then
  return {prev, 1}
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[2]))
redis.call('INCRBY', KEYS[3], ARGV[3])
return {id, 0}
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


def _items(fields: Mapping[str, bytes | str | int]) -> int:
    try:
        return max(0, int(fields.get("n", 0)))
    except (TypeError, ValueError):
        return 0


class AofDisabled(RedisError):
    """durability = "waitaof" on a Valkey without AOF: nothing could ever be confirmed."""


class StreamProducer:
    """Appends entries for the edge. Appends that arrive in the same turn of the event loop
    travel together: one pipeline of bounded XADDs (and, in waitaof mode, one WAITAOF at
    its end, on the same connection, which covers every write before it) instead of one
    round trip each. Each caller still gets its own entry id or error, and is answered
    only after its entry is in Valkey."""

    def __init__(self, client: aioredis.Redis, *, waitaof: bool = False) -> None:
        self.client = client
        self.waitaof = waitaof
        self._aof_checked = -1e9
        self._xadd = client.register_script(BOUNDED_XADD)
        self._xadd_once = client.register_script(IDEMPOTENT_XADD)
        # A cluster pipeline would split by slot anyway, and refuses EVALSHA: one by one.
        self._coalesce = not is_cluster(client)
        self._script_loaded = False
        self._pending: list[tuple[str, list[bytes | str | int], asyncio.Future[str]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs

    async def add(self, stream: str, fields: Mapping[str, bytes | str | int], budget: int) -> str:
        """Append one entry; returns its id. Raises BacklogFull, or redis errors when
        Valkey is unreachable (the edge turns both into 503)."""
        await self._check_aof()
        args: list[bytes | str | int] = [budget, _items(fields)]
        for k, v in fields.items():
            args.extend((k, v))
        if self._coalesce:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[str] = loop.create_future()
            self._pending.append((stream, args, fut))
            if len(self._pending) == 1:
                loop.call_soon(self._flush)
            return await fut
        entry_id = await self._xadd(keys=[stream, backlog_items_key(stream)], args=args)
        if entry_id is None:
            raise BacklogFull(stream)
        await self._wait_fsync()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, group: list[tuple[str, list[bytes | str | int], asyncio.Future[str]]]
    ) -> None:
        try:
            replies = await self._pipeline(group)
        except Exception as e:  # nothing came back: every caller in the group sees it
            for *_, fut in group:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (stream, _, fut), reply in zip(group, replies, strict=True):
            if fut.done():
                continue  # the caller went away (client disconnected)
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            elif reply is None:
                fut.set_exception(BacklogFull(stream))
            else:
                fut.set_result(reply.decode() if isinstance(reply, bytes) else str(reply))

    async def _pipeline(
        self, group: list[tuple[str, list[bytes | str | int], asyncio.Future[str]]]
    ) -> list[object]:
        """One reply per entry: its id, None when the backlog is full, or its error. A
        missing script (Valkey restarted) is loaded and the group sent again: an EVALSHA
        that found no script appended nothing."""
        if not self._script_loaded:  # first use: load it rather than fail a first pipeline
            self._xadd.sha = await self.client.script_load(BOUNDED_XADD)
            self._script_loaded = True
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for stream, args, _ in group:
                pipe.evalsha(self._xadd.sha, 2, stream, backlog_items_key(stream), *args)
            if self.waitaof:
                pipe.execute_command("WAITAOF", 1, 0, 1000)
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                self._xadd.sha = await self.client.script_load(BOUNDED_XADD)
                continue
            break
        if self.waitaof:
            fsync = replies.pop()
            # the entries are in Valkey either way: a late fsync never fails the request
            if isinstance(fsync, Exception):
                log.warning("WAITAOF failed after an append: %s", fsync)
            elif int(fsync[0]) < 1:  # type: ignore[index]
                await self._wait_fsync()
        return replies

    async def add_once(
        self,
        stream: str,
        fields: Mapping[str, bytes | str | int],
        budget: int,
        idem_key: str,
        window_seconds: int,
    ) -> tuple[str, bool]:
        """`add`, unless `idem_key` was seen within the window: then (the original entry
        id, True) and nothing is appended."""
        await self._check_aof()
        args: list[bytes | str | int] = [budget, window_seconds, _items(fields)]
        for k, v in fields.items():
            args.extend((k, v))
        res = await self._xadd_once(keys=[stream, idem_key, backlog_items_key(stream)], args=args)
        if res is None:
            raise BacklogFull(stream)
        entry_id, seen = res
        await self._wait_fsync()
        return (entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)), bool(seen)

    async def _check_aof(self) -> None:
        """In waitaof mode, refuse before appending when Valkey has no AOF (checked every
        few seconds): every failure of the edge must come before the XADD, since a 503
        after it would make the client resend an entry that is already there."""
        if not self.waitaof or time.monotonic() - self._aof_checked < 5:
            return
        try:
            conf = await self.client.config_get("appendonly")
        except ResponseError:  # CONFIG not allowed (a managed Valkey): WAITAOF will tell
            self._aof_checked = time.monotonic()
            return
        value = next(iter(conf.values()), b"")
        if (value.decode() if isinstance(value, bytes) else str(value)) != "yes":
            raise AofDisabled("durability is waitaof but Valkey runs without appendonly")
        self._aof_checked = time.monotonic()

    async def _wait_fsync(self) -> None:
        """After the append: wait for the local fsync (1 local, 0 replicas), a few seconds
        at most. The entry is in Valkey either way, so this never fails the request."""
        if not self.waitaof:
            return
        for _ in range(5):
            try:
                local, _ = await self.client.execute_command("WAITAOF", 1, 0, 1000)
            except ResponseError as e:
                log.warning("WAITAOF failed after an append: %s", e)
                return
            if int(local) >= 1:
                return
        log.warning("WAITAOF: an accepted entry was not fsynced within 5 s")


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
    client: aioredis.Redis, stream: str, ids: Sequence[str], group: str = GROUP, items: int = 0
) -> None:
    """Acknowledge and trim in one transaction: an entry leaves the buffer only once
    it is stored (or dead-lettered); `items` (theirs) leave the stream's item count."""
    if not ids:
        return
    pipe = client.pipeline(transaction=True)
    pipe.xack(stream, group, *ids)
    pipe.xdel(stream, *ids)
    if items:
        pipe.decrby(backlog_items_key(stream), items)
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
            pipe.get(backlog_items_key(in_stream(kind, shard)))
    raw = await pipe.execute()
    out: dict[str, dict[str, float]] = {}
    now_ms = time.time() * 1000
    for i, kind in enumerate(KINDS):
        length = dlq = oldest = pending = lag = items = 0.0
        for shard in range(shards):
            base = 4 * (i * shards + shard)
            s_len, s_dlq, first, s_items = raw[base : base + 4]
            length += s_len
            items += float(s_items or 0)
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
            "items": items,
            "dlq": dlq,
            "oldest_age_seconds": oldest,
            "pending": pending,
            "lag": lag,
        }
    return out
