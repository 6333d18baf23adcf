"""Server mode: API and workers as separate processes on one real valkey-server, ClickHouse
over HTTP (the chDB HTTP test endpoint standing in for the server)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, wait_for, weftline_cmd, weftline_env
from weftline.storage.clickhouse import ClickHouseConnect
from weftline.storage.keys import GROUP, in_stream
from weftline.storage.queries import count_agent_events


def events(n: int, tag: str) -> list[dict]:
    return [
        {"type": "task_update", "agent_id": f"a-{tag}", "task_id": f"{tag}-{i}", "state": "done"}
        for i in range(n)
    ]


def write_config(path: Path, projects: list, **extra: object) -> Path:
    lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in extra.items()]
    for p in projects:
        lines += [
            "[[projects]]",
            f"id = {p.id}",
            f'name = "{p.name}"',
            f'public_key = "{p.public_key}"',
            f'query_token = "{p.query_token}"',
            "rate_limit = 100000.0",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Cluster:
    """Weftline processes started by a test; every one is stopped at the end."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{args[0]}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            weftline_cmd(*args),
            env=weftline_env(**self.env, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        i = self.procs.index(proc)
        name = next(self.tmp.glob(f"*-{i}.log"))
        return name.read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def server_env(tmp_path, valkey, ch_http_server, settings):
    database = f"t_{uuid.uuid4().hex[:12]}"
    config = write_config(
        tmp_path / "weftline.toml",
        settings.projects,
        batch_max_age_ms=50,
        claim_idle_ms=1500,
        batch_size=200,
        alerts_interval_seconds=1,  # counter snapshots (the outcome balance) every second
    )
    env = {
        "VALKEY_URL": valkey.url,
        "CLICKHOUSE_URL": ch_http_server.url,
        "WEFTLINE_CLICKHOUSE_DATABASE": database,
        "WEFTLINE_CONFIG": str(config),
        "WEFTLINE_DATA_DIR": str(tmp_path / "data"),
    }
    cluster = Cluster(tmp_path, env)
    ch = ClickHouseConnect(ch_http_server.url, database)
    yield cluster, ch
    cluster.stop_all()
    ch_http_server.faults(insert_delay=0, insert_marker=None, fail_next=0)
    ch.close()


def start_apis(cluster: Cluster, n: int) -> list[str]:
    from weftline.embedded import free_port

    urls = []
    for _ in range(n):
        port = free_port()
        cluster.start("api", "--port", str(port))
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        wait_for(lambda u=url: _ok(u + "/readyz"), timeout=40)
    return urls


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def post(url: str, key: str, batch: list[dict]) -> int:
    for _ in range(50):
        r = httpx.post(
            url + "/api/v1/events", json=batch, headers={"X-Weftline-Key": key}, timeout=15
        )
        if r.status_code == 202:
            return len(batch)
        assert r.status_code in (429, 503), r.text
        time.sleep(0.2)
    raise AssertionError("not accepted after 50 tries")


def unaccounted_agent_items(url: str) -> float | None:
    """The alert `items_unaccounted`'s metric for agent events, over every process's
    published counters (the APIs' accepted, the workers' stored)."""
    from weftline.dashboards.alerting.metrics import NAMED_METRICS
    from weftline.storage.valkey import connect

    async def read() -> float | None:
        client = connect(url)
        try:
            samples = await NAMED_METRICS["unaccounted_items"].read(client, 60)
        finally:
            await client.aclose()
        return next((v for lb, v in samples if lb["kind"] == "agent"), None)

    return asyncio.run(read())


@pytest.mark.slow
def test_two_apis_three_workers_one_killed_counts_exact(server_env, settings, valkey, vk, tmp_path):
    cluster, ch = server_env
    apis = start_apis(cluster, 2)
    marker = tmp_path / "paused"
    workers = [cluster.start("worker") for _ in range(2)]
    # The third worker freezes after its first insert, before acknowledging: killed there,
    # its batch is stored but still pending, and another worker must claim it.
    doomed = cluster.start(
        "worker", WEFTLINE_TEST_PAUSE="after_insert", WEFTLINE_TEST_PAUSE_FILE=str(marker)
    )
    key = settings.projects[0].public_key
    requests, per_request = 200, 5
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(post, apis[i % 2], key, events(per_request, f"r{i}"))
            for i in range(requests)
        ]
        wait_for(marker.exists, timeout=60)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        sent = sum(f.result() for f in futures)
    assert sent == requests * per_request
    wait_for(lambda: count_agent_events(ch) == sent, timeout=60, interval=0.3)
    wait_for(lambda: vk.xlen(in_stream("agent")) == 0, timeout=30)
    assert vk.xpending(in_stream("agent"), GROUP)["pending"] == 0
    uniq = ch.query(
        f"SELECT uniqExact(event_uid) AS u, count() AS raw FROM {ch.database}.agent_events"
    )[0]
    assert uniq["u"] == sent
    assert all(w.poll() is None for w in workers)
    time.sleep(1)  # nothing more arrives late
    assert count_agent_events(ch) == sent
    print(f"\nrows stored {uniq['raw']} for {sent} events (redelivered copies collapse)")


@pytest.mark.slow
def test_sigterm_finishes_the_batch_in_hand(
    server_env, settings, valkey, vk, ch_http_server, tmp_path
):
    cluster, ch = server_env
    apis = start_apis(cluster, 1)
    marker = tmp_path / "inserting"
    ch.command(f"CREATE DATABASE IF NOT EXISTS {ch.database}")
    worker = cluster.start("worker")
    wait_for(lambda: "consumers" in cluster.log(worker), timeout=40)
    ch_http_server.faults(insert_delay=1.5, insert_marker=str(marker))
    key = settings.projects[0].public_key
    post(apis[0], key, events(20, "first"))
    wait_for(marker.exists, timeout=30)  # the worker's INSERT is in flight
    worker.send_signal(signal.SIGTERM)
    post(apis[0], key, events(7, "late"))  # arrives after SIGTERM: must stay in the stream
    assert worker.wait(30) == 0, cluster.log(worker)
    assert "stopped after finishing its batch" in cluster.log(worker)
    ch_http_server.faults(insert_delay=0, insert_marker=None)
    assert count_agent_events(ch) == 20
    assert vk.xpending(in_stream("agent"), GROUP)["pending"] == 0
    assert vk.xlen(in_stream("agent")) == 1  # the late request, not read by a stopping worker
    cluster.start("worker")
    wait_for(lambda: count_agent_events(ch) == 27, timeout=40, interval=0.3)
    # Every process publishes its counters (the stopped worker a final time, after its
    # batch): what the API accepted is what the two workers stored.
    wait_for(lambda: unaccounted_agent_items(valkey.url) == 0, timeout=20, interval=0.5)


def test_api_and_worker_need_server_urls(tmp_path):
    env = weftline_env(WEFTLINE_DATA_DIR=str(tmp_path))
    env.pop("VALKEY_URL", None)
    out = subprocess.run(
        weftline_cmd("worker"), env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.returncode == 2 and "VALKEY_URL" in out.stderr
