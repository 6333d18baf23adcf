"""Benchmark: POST batches of agent events against the embedded stack, against a floor.

    .venv/bin/python bench/agent_events.py [--seconds 10] [--concurrency 16] [--batch 50]

Runs, in one go on this machine (loopback only, bounded in time):
1. the floor: a bare Starlette endpoint that reads the body and answers 202, served by the
   same uvicorn settings as Weftline;
2. `weftline up` (embedded Valkey + chDB + workers) with the same load on /api/v1/events;
3. freshness: accepted (202) → queryable, timed by the live feed, which publishes an event
   only after its insert into ClickHouse returned.
Prints req/s, events/s, p50/p99 latency and the ratios to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from weftline.embedded import free_port  # noqa: E402

FLOOR_APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def events(request):
        body = await request.body()
        return JSONResponse({"accepted": len(body)}, status_code=202)

    app = Starlette(routes=[Route("/api/v1/events", events, methods=["POST"])])
    """
)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def batch_body(n: int, tag: str) -> bytes:
    return orjson.dumps(
        [
            {
                "type": "agent_state",
                "agent_id": f"{tag}-{i % 10}",
                "status": "busy",
                "current_task": f"task-{i}",
                "metrics": {"total_tasks": i, "completed_tasks": i, "cpu_usage": 12.5},
            }
            if i % 2 == 0
            else {
                "type": "task_update",
                "task_id": f"t-{i}",
                "agent_id": f"{tag}-{i % 10}",
                "state": "running",
                "duration_ms": 3.5,
            }
            for i in range(n)
        ]
    )


async def load(url: str, headers: dict, seconds: float, concurrency: int, batch: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    body = batch_body(batch, "bench")
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    return {
        "requests": len(latencies),
        "ok": ok,
        "statuses": statuses,
        "rps": ok / elapsed,
        "eps": ok * batch / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
    }


async def freshness(base: str, key: str, token: str, samples: int, batch: int) -> list[float]:
    """Send one request at a time and wait for its last event on the live feed."""
    out: list[float] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "GET", f"{base}/api/v1/live", headers={"authorization": f"Bearer {token}"}
        ) as live,
    ):
        lines = live.aiter_lines()
        await lines.__anext__()  # ": connected"
        for n in range(samples):
            tag = f"fresh{n}"
            r = await client.post(
                f"{base}/api/v1/events",
                content=batch_body(batch, tag),
                headers={"x-weftline-key": key},
            )
            accepted = time.perf_counter()
            assert r.status_code == 202, r.text
            want = f'"event_uid":"{r.json()["id"]}:{batch - 1}"'
            async for line in lines:
                if want in line:
                    out.append(time.perf_counter() - accepted)
                    break
            await asyncio.sleep(0.02)
    return out


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def start_embedded(
    tmp: str, env: dict[str, str], kind: str, retention_days: int | None = None
) -> tuple[subprocess.Popen, str, str, str, Path]:
    """`weftline up` (embedded) in `tmp`, with a bench project whose rate limit is lifted
    and the `kind` stream's backlog budget raised, so neither caps the run. Waits until it
    answers; returns (process, base URL, ingest key, query token, data folder)."""
    port = free_port()
    key, token = secrets.token_hex(16), secrets.token_hex(20)
    data = Path(tmp) / "data"
    data.mkdir()
    (data / "demo-project.toml").write_text(
        f'id = 1\nname = "bench"\npublic_key = "{key}"\nquery_token = "{token}"\n'
        "rate_limit = 1000000.0\n"
        + (f"retention_days = {retention_days}\n" if retention_days else "")
    )
    env = {**env, f"WEFTLINE_BACKLOG_BUDGET__{kind.upper()}": "10000000"}
    up = subprocess.Popen(
        [sys.executable, "-m", "weftline.cli", "up", "--port", str(port)]
        + ["--data-dir", str(data), "--log-level", "warning"],
        env=env,
        stdout=(Path(tmp) / "up.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", up)
    except RuntimeError:
        up.terminate()
        raise
    return up, base, key, token, data


def report(name: str, r: dict, floor: dict | None = None, unit: str = "events") -> None:
    line = (
        f"{name:<34} {r['rps']:>8.0f} req/s {r['eps']:>9.0f} {unit}/s"
        f"  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  statuses {r['statuses']}"
    )
    print(line)
    if floor:
        print(
            f"{'':<34} throughput {r['rps'] / floor['rps']:.2f}× floor, "
            f"p50 {r['p50_ms'] / floor['p50_ms']:.2f}× floor, "
            f"p99 {r['p99_ms'] / floor['p99_ms']:.2f}× floor"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--fresh-samples", type=int, default=100)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VALKEY_URL", None)
    env.pop("CLICKHOUSE_URL", None)

    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp:
        floor_port = free_port()
        (Path(tmp) / "floor_app.py").write_text(FLOOR_APP)
        floor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "floor_app:app",
                "--port",
                str(floor_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=tmp,
            env={**env, "PYTHONPATH": tmp},
        )
        try:
            wait_http(f"http://127.0.0.1:{floor_port}/", floor)
            floor_r = asyncio.run(
                load(
                    f"http://127.0.0.1:{floor_port}/api/v1/events",
                    {},
                    args.seconds,
                    args.concurrency,
                    args.batch,
                )
            )
        finally:
            floor.terminate()
            floor.wait()

        up, base, key, token, _data = start_embedded(tmp, env, "agent")
        try:
            headers = {"x-weftline-key": key, "content-type": "application/json"}
            wl = asyncio.run(
                load(f"{base}/api/v1/events", headers, args.seconds, args.concurrency, args.batch)
            )
            drain_start = time.perf_counter()
            while True:
                m = httpx.get(f"{base}/metrics").text
                backlog = re.search(r'weftline_stream_backlog_entries\{kind="agent"\} (\S+)', m)
                if backlog and float(backlog.group(1)) == 0:
                    break
                if time.perf_counter() - drain_start > 120:
                    break
                time.sleep(0.2)
            drain = time.perf_counter() - drain_start
            fresh = asyncio.run(freshness(base, key, token, args.fresh_samples, args.batch))
        finally:
            up.terminate()
            up.wait(60)

    print(
        f"\nWeftline agent-events benchmark: {args.concurrency} concurrent clients, "
        f"{args.batch} events per request, {args.seconds:.0f} s per run, "
        f"{os.cpu_count()} CPUs (client and server share them)\n"
    )
    report("floor: bare Starlette endpoint", floor_r)
    report("weftline POST /api/v1/events", wl, floor_r)
    print(f"{'':<34} backlog drained {drain:.1f} s after the load stopped")
    print(
        f"freshness accepted → queryable     p50 {pct(fresh, 0.5) * 1000:6.1f} ms  "
        f"p99 {pct(fresh, 0.99) * 1000:6.1f} ms  (n={len(fresh)}, "
        f"mean {statistics.mean(fresh) * 1000:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
