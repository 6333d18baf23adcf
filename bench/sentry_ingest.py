"""Benchmark: Sentry envelope ingest against the bare-Starlette floor, in the same run.

    python bench/sentry_ingest.py [--seconds 8] [--concurrency 16]

Every request is one gzip'd envelope holding one ~3.5 KB Python error event (a new
event id each time, as the SDK sends: one request per event). Loopback only, bounded
in time. Prints events/s and p50/p99 for:
1. the floor: a bare Starlette endpoint that reads the body and answers 200 {"id"};
2. `weftline up` (embedded Valkey + chDB + workers) on /api/1/envelope/;
then how long the workers take to drain what was accepted (stored events/s).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
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

    async def envelope(request):
        body = await request.body()
        return JSONResponse({"id": str(len(body))})

    app = Starlette(routes=[Route("/api/{pid}/envelope/", envelope, methods=["POST"])])
    """
)


def event(n: int) -> dict:
    frames = [
        {
            "filename": f"app/module_{i}.py",
            "abs_path": f"/srv/app/module_{i}.py",
            "module": f"app.module_{i}",
            "function": f"handler_{i}",
            "lineno": 10 + i,
            "context_line": f"    result = process_{i}(payload, options)",
            "pre_context": ["    # prepare", "    options = load()"],
            "post_context": ["    return result"],
            "vars": {"payload": "{'id': 42}", "options": "{...}"},
            "in_app": True,
        }
        for i in range(8)
    ]
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": time.time(),
        "platform": "python",
        "level": "error",
        "release": "bench@1.0.0",
        "environment": "bench",
        "server_name": "bench-host",
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"invalid order {n % 50}",
                    "stacktrace": {"frames": frames},
                    "mechanism": {"type": "generic", "handled": True},
                }
            ]
        },
        "user": {"id": str(n % 100)},
        "tags": {"openReplaySession.id": str(7700000 + n % 20)},
        "contexts": {
            "trace": {"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16]},
            "runtime": {"name": "CPython", "version": "3.11.9"},
        },
        "breadcrumbs": {
            "values": [
                {"timestamp": time.time(), "category": "http", "message": f"GET /x/{i}"}
                for i in range(5)
            ]
        },
        "sdk": {"name": "sentry.python", "version": "2.75.0"},
    }


def envelope(n: int) -> bytes:
    ev = orjson.dumps(event(n))
    head = orjson.dumps({"event_id": uuid.uuid4().hex, "sent_at": time.time()})
    item = orjson.dumps({"type": "event", "length": len(ev)})
    return gzip.compress(head + b"\n" + item + b"\n" + ev + b"\n")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def load(url: str, headers: dict, seconds: float, concurrency: int) -> dict:
    bodies = [envelope(n) for n in range(4000)]
    sent: set[int] = set()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(w: int) -> None:
            n = w
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.post(url, content=bodies[n % len(bodies)], headers=headers)
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    sent.add(n % len(bodies))
                n += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    ok = statuses.get(200, 0)
    return {
        "ok": ok,
        "statuses": statuses,
        "eps": ok / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "body_bytes": sum(map(len, bodies)) / len(bodies),
        "raw_bytes": sum(len(gzip.decompress(b)) for b in bodies[:50]) / 50,
        # a body sent twice is the same event (same id): stored once, by design
        "distinct": len(sent),
    }


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


def line(name: str, r: dict, floor: dict | None = None) -> str:
    out = (
        f"{name:<22} {r['eps']:>7.0f} events/s  p50 {r['p50_ms']:6.1f} ms"
        f"  p99 {r['p99_ms']:6.1f} ms  statuses {r['statuses']}"
    )
    if floor:
        out += (
            f"\n{'':<22} {r['eps'] / floor['eps']:.2f}x floor throughput,"
            f" p99 {r['p99_ms'] / floor['p99_ms']:.2f}x floor"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VALKEY_URL", None)
    env.pop("CLICKHOUSE_URL", None)
    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp:
        port = free_port()
        (Path(tmp) / "floor_app.py").write_text(FLOOR_APP)
        floor = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port)]
            + ["--log-level", "warning", "--no-access-log"],
            cwd=tmp,
            env={**env, "PYTHONPATH": tmp},
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/", floor)
            floor_r = asyncio.run(
                load(f"http://127.0.0.1:{port}/api/1/envelope/", {}, args.seconds, args.concurrency)
            )
        finally:
            floor.terminate()
            floor.wait()

        port = free_port()
        key, token = secrets.token_hex(16), secrets.token_urlsafe(24)
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "demo-project.toml").write_text(
            f'id = 1\nname = "bench"\npublic_key = "{key}"\nquery_token = "{token}"\n'
            "rate_limit = 1000000.0\n"
        )
        env["WEFTLINE_BACKLOG_BUDGET__SENTRY"] = "10000000"
        up = subprocess.Popen(
            [sys.executable, "-m", "weftline.cli", "up", "--port", str(port)]
            + ["--data-dir", str(data), "--log-level", "warning"],
            env=env,
            stdout=(Path(tmp) / "up.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", up)
            headers = {
                "x-sentry-auth": f"Sentry sentry_key={key}, sentry_version=7",
                "content-type": "application/x-sentry-envelope",
                "content-encoding": "gzip",
            }
            t0 = time.perf_counter()
            wl = asyncio.run(
                load(f"{base}/api/1/envelope/", headers, args.seconds, args.concurrency)
            )
            while time.perf_counter() - t0 < args.seconds + 300:
                m = httpx.get(f"{base}/metrics").text
                b = re.search(r'weftline_stream_backlog_entries\{kind="sentry"\} (\S+)', m)
                if b and float(b.group(1)) == 0:
                    break
                time.sleep(0.2)
            stored_in = time.perf_counter() - t0
            n = httpx.get(
                f"{base}/api/v1/issues", headers={"authorization": f"Bearer {token}"}
            ).json()["issues"]
            stored = sum(i["count"] for i in n)
        finally:
            up.terminate()
            up.wait(60)
    print(
        f"one event per request: envelope of {floor_r['raw_bytes']:.0f} bytes,"
        f" {floor_r['body_bytes']:.0f} gzip'd"
    )
    print(line("floor (bare Starlette)", floor_r))
    print(line("weftline up", wl, floor_r))
    print(
        f"{'stored':<22} {stored} of {wl['distinct']} distinct accepted events queryable"
        f" {stored_in:.1f} s after the load started"
        f" ({stored / stored_in:.0f} events/s end to end), {len(n)} issues"
    )
    return 0 if stored == wl["distinct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
