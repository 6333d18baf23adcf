"""A real worker process killed with SIGKILL before and after its insert: the next
worker claims the pending entries and queries still count every event exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_weftline, wait_for, weftline_cmd, weftline_env
from tests.test_agent_ingest import post, state
from weftline.storage.keys import GROUP, in_stream

pytestmark = pytest.mark.slow


def write_config(path: Path, settings) -> Path:
    lines = []
    for p in settings.projects:
        lines += [
            "[[projects]]",
            f"id = {p.id}",
            f'name = "{p.name}"',
            f'public_key = "{p.public_key}"',
            f'query_token = "{p.query_token}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def workers():
    """Every worker process a test starts is killed at its end, pass or fail."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def start_worker(cfg: Path, data: Path, valkey_url: str, **env: str) -> subprocess.Popen:
    log = data.parent / f"worker-{len(list(data.parent.glob('worker-*.log')))}.log"
    proc = subprocess.Popen(
        weftline_cmd("worker", "--config", str(cfg), "--data-dir", str(data)),
        env=weftline_env(
            VALKEY_URL=valkey_url,
            WEFTLINE_CLAIM_IDLE_MS="1000",
            WEFTLINE_BATCH_MAX_AGE_MS="50",
            **env,
        ),
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    proc.log = log  # type: ignore[attr-defined]
    wait_for(lambda: "weftline worker:" in log.read_text() or proc.poll() is not None, 30)
    assert proc.poll() is None, log.read_text()
    return proc


def count(data: Path, final: bool = True) -> int:
    sql = "SELECT count() AS n FROM weftline.agent_events" + (" FINAL" if final else "")
    out = run_weftline("query", "--data-dir", str(data), sql)
    return int(json.loads(out)["n"])


@pytest.mark.parametrize("point", ["before_insert", "after_insert"])
def test_sigkill_worker_counts_stay_exact(
    point, settings, valkey, vk, ch, serve, http, tmp_path, workers
):
    cfg = write_config(tmp_path / "weftline.toml", settings)
    data = tmp_path / "worker-data"
    marker = tmp_path / "paused"
    ingest = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]

    doomed = start_worker(
        cfg, data, valkey.url, WEFTLINE_TEST_PAUSE=point, WEFTLINE_TEST_PAUSE_FILE=str(marker)
    )
    workers.append(doomed)
    for i in range(10):
        r = post(http, ingest, p1, [state(f"agent-{i}-{j}") for j in range(5)])
        assert r.status_code == 202
    wait_for(marker.exists, timeout=30)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    assert doomed.returncode == -signal.SIGKILL
    # Nothing was acknowledged: every accepted request is still in the stream.
    assert vk.xlen(in_stream("agent")) == 10
    assert vk.xpending(in_stream("agent"), GROUP)["pending"] >= 1

    survivor = start_worker(cfg, data, valkey.url)
    workers.append(survivor)
    try:
        wait_for(lambda: vk.xlen(in_stream("agent")) == 0, timeout=30)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(30)
    out = survivor.log.read_text()
    assert survivor.returncode == 0, out
    assert "claimed" in out  # the survivor took over the dead worker's entries
    assert vk.xpending(in_stream("agent"), GROUP)["pending"] == 0
    assert count(data) == 50
    raw = count(data, final=False)
    # after_insert: the batch was written twice; the dedup token (same batch) or the
    # ReplacingMergeTree key (different batch) makes it count once.
    assert raw in (50, 100) if point == "after_insert" else raw == 50
