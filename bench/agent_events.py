"""Benchmark: batches of agent events into `weftline up`, against the bare-Starlette floor.

    .venv/bin/python bench/agent_events.py [--seconds 10] [--connections 32] [--batch 50]
                                           [--cores 1]

wrk (pinned to its own core) posts the same JSON array of `--batch` events per request to
the floor (a bare Starlette endpoint reading the body, same uvicorn flags) and to
`weftline up` (embedded Valkey + chDB + workers, all on the server core). Prints req/s,
events/s, p50/p99 and the ratio to the floor; the stored end-to-end rate (until the agent
stream is drained); then, at half the edge's maximum rate, the edge p99 and the freshness:
accepted (202) → queryable, timed on the live feed, which publishes an event only after
its insert into ClickHouse returned.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    FloorRoute,
    HttpRequest,
    Profile,
    Wrk,
    cores,
    embedded,
    header,
    loadavg,
    pct,
    rounds,
    rounds_report,
)


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


async def freshness(base: str, key: str, token: str, samples: int, batch: int) -> list[float]:
    """One request at a time; the time until its last event is on the live feed."""
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
            r = await client.post(
                f"{base}/api/v1/events",
                content=batch_body(batch, f"fresh{n}"),
                headers={"x-weftline-key": key},
            )
            accepted = time.perf_counter()
            assert r.status_code == 202, r.text
            want = f'"event_uid":"{r.json()["id"]}:{batch - 1}"'
            async for line in lines:
                if want in line:
                    out.append(time.perf_counter() - accepted)
                    break
            await asyncio.sleep(0.05)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--cores", type=int, default=1, help="CPUs for the server (wrk: the last)")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the max-rate run")
    ap.add_argument("--fresh-samples", type=int, default=100)
    args = ap.parse_args()
    cpus = cores(args.cores)
    out: list[str] = []
    n = args.batch
    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp_:
        tmp = Path(tmp_)
        key = secrets.token_hex(16)
        headers = {"X-Weftline-Key": key, "Content-Type": "application/json"}
        wrk = Wrk(
            [HttpRequest("POST", "/api/v1/events", batch_body(n, "bench"), headers)], tmp, cpus
        )
        out.append(header(f"agent events, {n} per request", wrk, args.seconds, args.connections))
        route = FloorRoute("/api/v1/events", 202, b'{"accepted":50,"id":"0-0"}')
        with embedded(tmp, cpus, "agent", key=key) as wl:
            prof = Profile(args.profile, cpus)
            prof.start(wl.proc.pid, 2 * args.seconds)
            r = rounds(wrk, [route], tmp, wl, "agent", args.seconds, args.connections)
            out.extend(rounds_report(r, n, "events"))
            edge = r.weftline_total
            idle = asyncio.run(freshness(wl.base, wl.key, wl.token, args.fresh_samples, n))
            out.append(
                f"{'freshness, no other load':<36} accepted → on the live feed p50 "
                f"{pct(idle, 0.5) * 1000:.1f} ms, p99 {pct(idle, 0.99) * 1000:.1f} ms "
                f"(n={len(idle)})"
            )
            # half the maximum rate in the background while the freshness probe runs
            half: list = []
            bg = threading.Thread(
                target=lambda: half.append(
                    wrk.run(wl.base, args.seconds, args.connections, rate=edge.rps / 2)
                )
            )
            bg.start()
            fresh = asyncio.run(freshness(wl.base, wl.key, wl.token, args.fresh_samples, n))
            bg.join()
            wl.drain("agent")
            out.append(half[0].line("weftline at half the rate", n, "events"))
            out.append(
                f"{'freshness at half the rate':<36} accepted → on the live feed p50 "
                f"{pct(fresh, 0.5) * 1000:.1f} ms, p99 {pct(fresh, 0.99) * 1000:.1f} ms "
                f"(n={len(fresh)}); load avg {loadavg()}"
            )
    print("\n".join(out))
    if args.profile:
        print(prof.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
