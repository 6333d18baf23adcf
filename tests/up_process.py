"""`weftline up` as a real process for the fault tests: started on a data folder with
settings from the environment, sent countable agent events, stopped with Ctrl-C (SIGINT to
its process group, as a terminal does), and counted with `weftline query` afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import REPO, run_weftline, wait_for, weftline_cmd, weftline_env
from weftline.embedded import free_port


class UpProcess:
    def __init__(self, data: Path, log: Path, port: int | None = None, **env: str) -> None:
        self.data = data
        self.log = log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = weftline_env(WEFTLINE_BATCH_MAX_AGE_MS="50", **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.key = ""

    def start(self, timeout: float = 60) -> UpProcess:
        self.proc = subprocess.Popen(
            weftline_cmd("up", "--data-dir", str(self.data), "--port", str(self.port)),
            env=self.env,
            cwd=REPO,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal
        )
        wait_for(lambda: "Ctrl-C stops" in self.text() or self.proc.poll() is not None, timeout)
        assert self.proc.poll() is None, self.text()
        self.key = re.search(r"ingest key\s+([0-9a-f]{32})\b", self.text()).group(1)
        return self

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ctrl_c(self, timeout: float = 40) -> float:
        """SIGINT to the whole process group (what a terminal's Ctrl-C does); returns how
        long the stop took."""
        assert self.proc is not None
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        assert self.proc.wait(timeout) == 0, self.text()
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def post_events(
        self, client: httpx.Client, events: list[dict], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return client.post(
            f"{self.url}/api/v1/events",
            content=orjson.dumps(events),
            headers={
                "x-weftline-key": self.key,
                "content-type": "application/json",
                **(headers or {}),
            },
        )

    def metric(self, client: httpx.Client, name: str, **labels: str) -> float:
        text = client.get(f"{self.url}/metrics").text
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(want if labels else name + " ") or (
                not labels and line.startswith(name + "{")
            ):
                total += float(line.split()[-1])
        return total

    def query(self, sql: str) -> list[dict]:
        """Once stopped: chDB allows one process per data folder."""
        out = run_weftline("query", "--data-dir", str(self.data), sql, env=self.env)
        return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def task_events(agent: str, first: int, n: int) -> list[dict]:
    return [
        {"type": "task_update", "agent_id": agent, "task_id": f"t{i}", "state": "done"}
        for i in range(first, first + n)
    ]


def stored_tasks(up: UpProcess, agent: str) -> tuple[int, int]:
    """(rows, distinct task ids) of an agent, read without FINAL: a duplicate shows."""
    row = up.query(
        "SELECT count() AS n, uniqExact(task_id) AS u FROM weftline.agent_events "
        f"WHERE agent_id = '{agent}'"
    )[0]
    return int(row["n"]), int(row["u"])


def outcome_totals(metrics_text: str, kind: str) -> dict[str, float]:
    """Items of one kind by outcome (weftline_items_total), plus `in_stream`
    (weftline_stream_backlog_items), from a /metrics text."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("weftline_items_total{") and f'kind="{kind}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.split()[-1])
        elif line.startswith(f'weftline_stream_backlog_items{{kind="{kind}"}}'):
            out["in_stream"] = float(line.split()[-1])
    return out


def unaccounted(totals: dict[str, float]) -> float:
    """accepted − (stored + deduplicated + dead-lettered + still in the stream): 0 when
    every accepted item has exactly one fate."""
    fates = ("stored", "deduplicated", "dead_lettered", "in_stream")
    return totals.get("accepted", 0.0) - sum(totals.get(f, 0.0) for f in fates)
