"""What a new user does: `weftline up`, send events, Ctrl-C, start again, data still there."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, run_weftline, wait_for, weftline_cmd, weftline_env
from weftline.embedded import free_port

pytestmark = pytest.mark.slow


def start_up(data: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        weftline_cmd("up", "--data-dir", str(data), "--port", str(port)),
        env=weftline_env(),
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: "Ctrl-C stops" in log.read_text() or proc.poll() is not None, 60)
    assert proc.poll() is None, log.read_text()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(40) == 0


def valkey_running(data: Path) -> bool:
    pidfile = data / "valkey" / "valkey.pid"
    if not pidfile.exists():
        return False
    return Path(f"/proc/{pidfile.read_text().strip()}").exists()


def test_up_prints_keys_serves_and_keeps_data_across_restart(tmp_path):
    data, port = tmp_path / "data", free_port()
    log = tmp_path / "up.log"
    proc = start_up(data, port, log)
    text = log.read_text()
    assert f"listening on http://127.0.0.1:{port}" in text
    key = re.search(r"ingest key\s+([0-9a-f]{32})\b", text).group(1)
    token = re.search(r"query token\s+(\S+)", text).group(1)
    url = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {token}"}
    try:
        r = httpx.post(
            f"{url}/api/v1/events",
            headers={"x-weftline-key": key},
            json=[{"type": "agent_state", "agent_id": "cli", "status": "busy"}],
        )
        assert r.status_code == 202
        wait_for(
            lambda: httpx.get(f"{url}/api/v1/agents/cli/events", headers=auth).json()["events"]
        )
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
    finally:
        stop(proc)
    assert "stopping embedded Valkey" in log.read_text()
    time.sleep(0.2)
    assert not valkey_running(data)
    out = run_weftline(
        "query", "--data-dir", str(data), "SELECT count() AS n FROM weftline.agent_events FINAL"
    )
    assert '"n": 1' in out

    log2 = tmp_path / "up2.log"
    proc = start_up(data, port, log2)
    try:
        assert key in log2.read_text()  # same demo project: same keys
        events = httpx.get(f"{url}/api/v1/agents/cli/events", headers=auth).json()["events"]
        assert [e["status"] for e in events] == ["busy"]
        agents = httpx.get(f"{url}/api/v1/agents", headers=auth).json()["agents"]
        assert agents[0]["agent_id"] == "cli"  # Valkey state came back from the AOF
    finally:
        stop(proc)


def test_second_process_on_same_data_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = start_up(data, port, tmp_path / "up.log")
    try:
        out = subprocess.run(
            weftline_cmd("migrate", "--data-dir", str(data)),
            env=weftline_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert "in use by pid" in out.stderr
    finally:
        stop(proc)


def test_help_and_version():
    assert run_weftline("version").startswith("weftline ")
    for cmd in ("up", "api", "worker", "migrate", "query"):
        assert "usage: weftline " + cmd in run_weftline(cmd, "--help")


@pytest.mark.skipif(
    not (REPO / ".venv" / "bin" / "python").exists(),
    reason="scripts/up builds .venv; scripts/test (and so CI) creates it",
)
@pytest.mark.timeout(400)  # the first call may pip-install the plain extras into .venv
def test_scripts_up_passes_its_options_to_weftline_up(tmp_path):
    """The README's first command, as a user types it, with options."""
    data, port = tmp_path / "data", free_port()
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "up"), "--port", str(port), "--data-dir", str(data)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "Ctrl-C stops" in log.read_text() or proc.poll() is not None, 300)
        assert proc.poll() is None, log.read_text()
        assert f"listening on http://127.0.0.1:{port}" in log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
    finally:
        stop(proc)
    assert (data / "demo-project.toml").exists()
