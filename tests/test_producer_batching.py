"""The edge's pipelined appends and the workers' load-sized batches, on a real valkey-server."""

from __future__ import annotations

import asyncio

import pytest
import redis

from weftline.embedded import EmbeddedValkey
from weftline.enrich.stream_consumer import ConsumerOptions, Entry, StreamConsumer
from weftline.storage.keys import GROUP, in_stream
from weftline.storage.valkey import BacklogFull, StreamProducer, connect, ensure_group


class _Kind:
    kind = "agent"

    def decode(self, entry: Entry) -> list:
        return []

    async def store(self, rows: list, token: str) -> None:
        return None

    async def after_store(self, rows: list) -> None:
        return None


def test_appends_of_one_loop_turn_share_a_pipeline_and_keep_their_own_outcome(
    valkey: EmbeddedValkey, vk: redis.Redis
) -> None:
    stream = in_stream("agent")

    async def go() -> tuple[list[object], int]:
        client = connect(valkey.url)
        producer = StreamProducer(client)
        results = await asyncio.gather(
            *(producer.add(stream, {"p": f"e{i}", "n": 1}, 30) for i in range(40)),
            return_exceptions=True,
        )
        pool = client.connection_pool
        created = len(pool._available_connections) + len(pool._in_use_connections)
        await client.aclose()
        return results, created

    results, connections = asyncio.run(go())
    ids = [r for r in results if isinstance(r, str)]
    full = [r for r in results if isinstance(r, BacklogFull)]
    # The budget holds inside one pipeline: exactly 30 appended, the rest told so.
    assert len(ids) == 30 and len(set(ids)) == 30 and len(full) == 10
    assert [e[0].decode() for e in vk.xrange(stream)] == ids  # in the callers' order
    assert [f[b"p"] for _, f in vk.xrange(stream)] == [f"e{i}".encode() for i in range(30)]
    # 40 concurrent appends travelled on one connection (a round trip each would take 40)
    assert connections <= 2


def test_an_unreachable_valkey_fails_every_caller_of_the_group(tmp_path) -> None:
    server = EmbeddedValkey(tmp_path / "vk")
    url = server.start()
    server.stop()

    async def go() -> list[object]:
        client = connect(url, connect_timeout=0.5)
        producer = StreamProducer(client)
        got = await asyncio.gather(
            *(producer.add(in_stream("agent"), {"p": "x"}, 10) for _ in range(5)),
            return_exceptions=True,
        )
        await client.aclose()
        return got

    got = asyncio.run(go())
    assert len(got) == 5 and all(isinstance(r, (redis.RedisError, OSError)) for r in got)


@pytest.mark.parametrize(("max_items", "want"), [(300, 3), (20_000, 10)])
def test_a_batch_stops_at_its_item_budget(
    valkey: EmbeddedValkey, vk: redis.Redis, max_items: int, want: int
) -> None:
    """Entries count by the items the edge saw in them (`n`): once a batch has shown ~100
    items per entry, 10 such entries make batches of 3 under a 300-item budget, one batch
    of 10 otherwise (the first batch, knowing no size yet, reads by entries only)."""
    stream = in_stream("agent")
    vk.xadd(stream, {"p": "first", "n": 100})

    async def go() -> list[int]:
        client = connect(valkey.url)
        await ensure_group(client, stream)
        opts = ConsumerOptions(batch_max_items=max_items, idle_block_ms=50)
        consumer = StreamConsumer(client, _Kind(), "t", opts)
        stop = asyncio.Event()
        assert len(await consumer._next_batch(stop)) == 1  # learns ~100 items per entry
        for i in range(10):
            await client.xadd(stream, {"p": f"e{i}", "n": 100})
        sizes: list[int] = []
        while sum(sizes) < 10:
            sizes.append(len(await consumer._next_batch(stop)))
        await client.aclose()
        return sizes

    sizes = asyncio.run(go())
    assert sizes[0] == want and sum(sizes) == 10
    assert vk.xpending(stream, GROUP)["pending"] == 11  # read, not yet acknowledged
