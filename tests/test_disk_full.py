"""A real full file system under `weftline up`: every 2xx is stored exactly once.

The data folder is a small tmpfs (mounting needs root, as in CI; skipped otherwise). A
filler file takes the free space, the test sends known events, frees the space and counts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.up_process import UpProcess, outcome_totals, stored_tasks, task_events, unaccounted

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mnt)], capture_output=True
    )
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Take all free space on `fs` but `leave` bytes."""
    filler = fs / "filler"
    with open(filler, "ab") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * MiB)
                f.flush()
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - max(0, leave - free)))
    return filler


def free_bytes(fs: Path) -> int:
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize


def test_full_disk_without_reserve_every_2xx_stored_once(small_fs, tmp_path):
    """The reserve off: Valkey still takes small appends, chDB's inserts fail with
    NOT_ENOUGH_SPACE. The workers must see that, keep the entries, and store them once the
    space is back."""
    up = UpProcess(
        small_fs / "data",
        tmp_path / "up.log",
        WEFTLINE_DISK_RESERVE_BYTES="0",
        WEFTLINE_DISK_RESERVE_PERCENT="0",
    ).start()
    accepted = 0
    try:
        with httpx.Client(timeout=10) as client:
            filler = fill(small_fs, leave=400 * 1024)
            codes: dict[int, int] = {}
            for i in range(200):
                r = up.post_events(client, task_events("disk", i, 1))
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                accepted += r.status_code == 202
            assert accepted > 0, codes
            failures = "weftline_storage_insert_failures_total"
            wait_for(lambda: up.metric(client, failures) > 0, 20)
            totals = outcome_totals(client.get(f"{up.url}/metrics").text, "agent")
            assert totals["accepted"] == accepted and totals["in_stream"] > 0
            assert unaccounted(totals) == 0, totals
            filler.unlink()
            wait_for(
                lambda: up.metric(client, "weftline_stream_backlog_entries", kind="agent") == 0,
                40,
            )
            totals = outcome_totals(client.get(f"{up.url}/metrics").text, "agent")
            assert totals["stored"] == accepted and unaccounted(totals) == 0, totals
    finally:
        up.ctrl_c()
    stored = stored_tasks(up, "disk")
    print(f"full disk, no reserve: answers {codes}, stored (rows, distinct) {stored}")
    assert stored == (accepted, accepted)
    assert "NOT_ENOUGH_SPACE" in up.text()


def test_disk_reserve_refuses_up_front_then_stores_every_2xx_once(small_fs, tmp_path):
    up = UpProcess(
        small_fs / "data",
        tmp_path / "up.log",
        WEFTLINE_DISK_RESERVE_BYTES=str(16 * MiB),
        WEFTLINE_DISK_RESERVE_PERCENT="0",
        WEFTLINE_DISK_CHECK_INTERVAL_SECONDS="0.1",
    ).start()
    accepted = 0
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(50):
                accepted += up.post_events(client, task_events("reserve", i, 1)).status_code == 202
            assert accepted == 50
            filler = fill(small_fs, leave=8 * MiB)
            wait_for(lambda: client.get(f"{up.url}/readyz").status_code == 503, 5)
            ready = client.get(f"{up.url}/readyz").json()
            assert ready["checks"]["disk_valkey"].startswith("low: ")
            assert str(small_fs / "data" / "valkey") in ready["checks"]["disk_valkey"]
            free = up.metric(client, "weftline_disk_free_bytes", folder="clickhouse")
            assert 0 < free < 16 * MiB
            refused = []
            for i in range(50, 100):
                r = up.post_events(client, task_events("reserve", i, 1))
                refused.append(r.status_code)
                accepted += r.status_code == 202
            assert set(refused) == {503}
            assert r.json()["error"] == "disk_reserve" and r.headers["retry-after"]
            # A Sentry SDK gets 429 with its rate-limit header, as for a full buffer.
            s = client.post(
                f"{up.url}/api/1/envelope/",
                content=b'{"event_id":"' + b"a" * 32 + b'"}\n{"type":"event"}\n{}\n',
                headers={"x-sentry-auth": f"Sentry sentry_key={up.key}, sentry_version=7"},
            )
            assert s.status_code == 429 and "disk_reserve" in s.headers["x-sentry-rate-limits"]
            filler.unlink()
            wait_for(lambda: client.get(f"{up.url}/readyz").status_code == 200, 5)
            for i in range(100, 150):
                accepted += up.post_events(client, task_events("reserve", i, 1)).status_code == 202
            wait_for(
                lambda: up.metric(client, "weftline_stream_backlog_entries", kind="agent") == 0,
                20,
            )
            totals = outcome_totals(client.get(f"{up.url}/metrics").text, "agent")
            assert totals["stored"] == 100 and totals["rejected"] == 50
            assert unaccounted(totals) == 0, totals
    finally:
        up.ctrl_c()
    assert accepted == 100
    assert stored_tasks(up, "reserve") == (100, 100)
    log = up.text()
    # One line per transition, not one per request.
    assert log.count("refusing new data") == 2  # both folders share the file system
    assert log.count("accepting data") == 2
    assert free_bytes(small_fs) > 16 * MiB
