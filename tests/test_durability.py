"""`durability = "waitaof"`: the edge answers 2xx only after Valkey confirms the entry is
fsynced to its AOF (WAITAOF 1 0), on a real valkey-server."""

from __future__ import annotations

import asyncio

import httpx
import redis

from weftline.embedded import EmbeddedValkey
from weftline.storage.keys import in_stream
from weftline.storage.valkey import StreamProducer, connect


def waitaof_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_waitaof", {}).get("calls", 0))


def test_waitaof_producer_waits_for_fsync_and_survives_kill(tmp_path):
    valkey = EmbeddedValkey(tmp_path / "vk")
    valkey.start()
    sync = redis.Redis.from_url(valkey.url)
    try:

        async def add(n: int) -> list[str]:
            client = connect(valkey.url)
            producer = StreamProducer(client, waitaof=True)
            ids = [await producer.add(in_stream("agent"), {"p": f"e{i}"}, 1000) for i in range(n)]
            await client.aclose()
            return ids

        ids = asyncio.run(add(25))
        assert len(set(ids)) == 25
        assert waitaof_calls(sync) == 25  # one WAITAOF per accepted entry
        assert sync.info("persistence")["aof_last_write_status"] == "ok"
        # Every acknowledged entry is in the AOF: SIGKILL and reload from it.
        valkey.kill()
        valkey.start()
        reloaded = redis.Redis.from_url(valkey.url)
        got = [e[0].decode() for e in reloaded.xrange(in_stream("agent"))]
        reloaded.close()
        assert got == ids
    finally:
        sync.close()
        valkey.stop()


def test_waitaof_without_aof_is_refused_not_faked(tmp_path, settings, serve):
    """With appendonly off, WAITAOF cannot confirm anything: the edge says 503 rather than
    claiming durability it does not have."""
    valkey = EmbeddedValkey(tmp_path / "vk", extra_args=["--appendonly", "no"])
    valkey.start()
    try:
        settings.durability = "waitaof"
        srv = serve(settings, valkey.url, run_workers=False, open_storage=False)
        r = httpx.post(
            srv.url + "/api/v1/events",
            json=[{"type": "task_update", "agent_id": "a", "task_id": "t", "state": "done"}],
            headers={"X-Weftline-Key": settings.projects[0].public_key},
        )
        assert r.status_code == 503 and r.json()["error"] == "buffer_unavailable"
        assert "retry-after" in r.headers
        # Refused before the append: a 503 never stands for an entry that is there.
        probe = redis.Redis.from_url(valkey.url)
        assert probe.xlen(in_stream("agent")) == 0
        probe.close()
    finally:
        valkey.stop()


def test_waitaof_through_the_edge(valkey, vk, settings, serve):
    settings.durability = "waitaof"
    srv = serve(settings, valkey.url, run_workers=False, open_storage=False)
    before = waitaof_calls(vk)
    for _ in range(3):
        r = httpx.post(
            srv.url + "/api/v1/events",
            json=[{"type": "task_update", "agent_id": "a", "task_id": "t", "state": "done"}],
            headers={"X-Weftline-Key": settings.projects[0].public_key},
        )
        assert r.status_code == 202, r.text
    assert waitaof_calls(vk) - before == 3
    assert vk.xlen(in_stream("agent")) == 3


def test_a_stopping_edge_refuses_before_the_append(valkey, vk, settings, serve):
    """Shutdown's first step: new data gets 503 + Retry-After and nothing is appended;
    /readyz says so, for a load balancer to move traffic away."""
    srv = serve(settings, valkey.url, run_workers=False, open_storage=False)
    srv.runtime.edge.accepting = False
    r = httpx.post(
        srv.url + "/api/v1/events",
        json=[{"type": "task_update", "agent_id": "a", "task_id": "t", "state": "done"}],
        headers={"X-Weftline-Key": settings.projects[0].public_key},
    )
    assert r.status_code == 503 and r.json()["error"] == "shutting_down"
    assert r.headers["retry-after"] == str(settings.retry_after_seconds)
    assert vk.xlen(in_stream("agent")) == 0
    ready = httpx.get(srv.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["accepting"].startswith("shutting")
