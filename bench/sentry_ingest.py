"""Benchmark: Sentry envelope ingest against the bare-Starlette floor, in the same run.

    python bench/sentry_ingest.py [--seconds 8] [--concurrency 16]

Every request is one gzip'd envelope holding one ~3.5 KB Python error event (a new
event id each time, as the SDK sends: one request per event). Loopback only, bounded
in time. Prints events/s and p50/p99 for:
1. the floor: a bare Starlette endpoint that reads the body and answers 200 {"id"};
2. `weftline up` (embedded Valkey + chDB + workers) on /api/1/envelope/;
then how long the workers take to drain what was accepted (stored events/s);
3. Bugsink (pip `bugsink`, a Python Sentry-compatible server) in its production shape:
   the `singleserver` configuration (SQLite), gunicorn, and the `snappea` background
   worker that digests events, from a separate venv (`--bugsink-venv`, default
   /tmp/bugsink-venv; make it with `python -m venv /tmp/bugsink-venv &&
   /tmp/bugsink-venv/bin/pip install bugsink`). Skipped, with the reason printed, when
   that venv has no Bugsink.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
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

from bench.agent_events import start_embedded  # noqa: E402
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


BUGSINK_PROJECT = """
from projects.models import Project
from teams.models import Team
team = Team.objects.create(name="bench")
project = Project.objects.create(team=team, name="bench")
print("PROJECT", project.id, project.sentry_key)
"""
BUGSINK_COUNT = """
from events.models import Event
print("EVENTS", Event.objects.count())
"""


def bugsink_run(args: argparse.Namespace, tmp: Path) -> tuple[dict, int, float] | str:
    """(load result, digested events, seconds until digested), or why it did not run."""
    venv = Path(args.bugsink_venv)
    bin_ = venv / "bin"
    if not (bin_ / "bugsink-manage").exists() or not (bin_ / "gunicorn").exists():
        return (
            f"not run: {venv} has no bugsink (python -m venv {venv} && "
            f"{venv}/bin/pip install bugsink)"
        )
    base = tmp / "bugsink"
    (base / "data").mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "bugsink_conf",
        "PYTHONPATH": str(base),
    }
    env.pop("VIRTUAL_ENV", None)

    def manage(*a: str) -> str:
        r = subprocess.run(
            [str(bin_ / "bugsink-manage"), *a],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"bugsink-manage {' '.join(a)}: {r.stderr[-2000:]}")
        return r.stdout

    subprocess.run(
        [str(bin_ / "bugsink-create-conf"), "--template=singleserver", "--host=127.0.0.1"]
        + [f"--port={port}", f"--base-dir={base / 'data'}", "-o", str(base / "bugsink_conf.py")],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    manage("migrate", "-v0")
    manage("migrate", "snappea", "--database=snappea", "-v0")
    m = re.search(r"PROJECT (\d+) (\S+)", manage("shell", "-c", BUGSINK_PROJECT))
    if not m:
        return "not run: could not create a Bugsink project"
    project_id, key = m.group(1), m.group(2)
    log = (base / "server.log").open("w")
    procs = [
        subprocess.Popen(
            [str(bin_ / "gunicorn"), "--bind", f"127.0.0.1:{port}"]
            + ["--workers", str(args.bugsink_workers), "bugsink.wsgi"],
            cwd=base,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [str(bin_ / "bugsink-runsnappea")],
            cwd=base,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/", procs[0])
        headers = {
            "x-sentry-auth": f"Sentry sentry_key={key}, sentry_version=7",
            "content-type": "application/x-sentry-envelope",
            "content-encoding": "gzip",
        }
        t0 = time.perf_counter()
        r = asyncio.run(
            load(f"{url}/api/{project_id}/envelope/", headers, args.seconds, args.concurrency)
        )
        digested, last_change, prev = 0, time.perf_counter(), -1
        while time.perf_counter() - t0 < args.seconds + 300:
            digested = int(re.search(r"EVENTS (\d+)", manage("shell", "-c", BUGSINK_COUNT))[1])
            if digested >= r["distinct"]:
                break
            if digested != prev:
                prev, last_change = digested, time.perf_counter()
            elif time.perf_counter() - last_change > 20:
                break  # stalled: report what was digested
            time.sleep(1)
        return r, digested, time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bugsink-venv", default=os.environ.get("BUGSINK_VENV", "/tmp/bugsink-venv"))
    ap.add_argument("--bugsink-workers", type=int, default=4, help="gunicorn workers")
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

        up, base, key, token, data = start_embedded(tmp, env, "sentry")
        try:
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
        try:
            bugsink = bugsink_run(args, Path(tmp))
        except Exception as e:  # report why, keep the other results
            bugsink = f"not run: {type(e).__name__}: {e}"
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
    if isinstance(bugsink, str):
        print(f"{'bugsink':<22} {bugsink}")
    else:
        bs, digested, took = bugsink
        print(line(f"bugsink {args.bugsink_workers}w gunicorn", bs, floor_r))
        print(
            f"{'bugsink digested':<22} {digested} of {bs['distinct']} distinct accepted events"
            f" {took:.1f} s after the load started ({digested / took:.0f} events/s end to end)"
        )
    return 0 if stored == wl["distinct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
