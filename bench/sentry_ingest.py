"""Benchmark: Sentry envelopes into `weftline up`, the bare-Starlette floor and Bugsink,
same wrk load, same core, same run.

    .venv/bin/python bench/sentry_ingest.py [--seconds 10] [--connections 32] [--cores 1]

Every request is one envelope (uncompressed) around one ~3.4 KB Python error event with a
fresh `event_id` per request (wrk writes it into the body, as the SDK sends one event per
request). Loopback only, bounded in time. Prints, each with its p50/p99 and wrk's own CPU:
1. what wrk reaches against a static answer, and the floor (a bare Starlette endpoint that
   reads the body), same uvicorn flags;
2. `weftline up` (embedded Valkey + chDB + workers, everything on the server core):
   edge req/s and ratio to the floor, then the time until the sentry stream is drained
   and the stored end-to-end rate (events counted through the issues API);
3. at half that rate: edge p99;
4. Bugsink (pip `bugsink`, a Python Sentry-compatible server) in its production shape —
   the `singleserver` configuration (SQLite), gunicorn and the `snappea` worker that
   digests events — pinned to the same core, same load: accepted req/s and events
   digested per second. From a separate venv (`--bugsink-venv`, default
   /tmp/bugsink-venv: `python3 -m venv /tmp/bugsink-venv &&
   /tmp/bugsink-venv/bin/pip install bugsink`); skipped, with the reason, without it.
Exit status 1 if the stored count differs from what was accepted.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    ID_MARKER,
    Cores,
    FloorRoute,
    HttpRequest,
    Profile,
    Wrk,
    cores,
    embedded,
    header,
    pinned,
    rounds,
    rounds_report,
)
from weftline.embedded import free_port  # noqa: E402


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
        "event_id": ID_MARKER.decode(),
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
    head = orjson.dumps({"event_id": ID_MARKER.decode(), "sent_at": "2026-01-01T00:00:00Z"})
    item = orjson.dumps({"type": "event", "length": len(ev)})
    return head + b"\n" + item + b"\n" + ev + b"\n"


def requests(project_id: str, key: str) -> list[HttpRequest]:
    headers = {
        "X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7, sentry_client=bench/1",
        "Content-Type": "application/x-sentry-envelope",
    }
    return [
        HttpRequest("POST", f"/api/{project_id}/envelope/", envelope(n), headers)
        for n in range(200)
    ]


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


def bugsink_run(args: argparse.Namespace, tmp: Path, cpus: Cores) -> tuple[str, float] | str:
    """Bugsink's lines of the report, or why it did not run."""
    venv = Path(args.bugsink_venv)
    bin_ = venv / "bin"
    if not (bin_ / "bugsink-manage").exists() or not (bin_ / "gunicorn").exists():
        return (
            f"not run: {venv} has no bugsink (python3 -m venv {venv} && "
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
    wrk = Wrk(requests(project_id, key), tmp, cpus)
    snappea = subprocess.Popen(
        ["taskset", "-c", cpus.server, str(bin_ / "bugsink-runsnappea")],
        cwd=base,
        env=env,
        stdout=(base / "snappea.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    gunicorn = [str(bin_ / "gunicorn"), "--bind", f"127.0.0.1:{port}"]
    gunicorn += ["--workers", str(args.bugsink_workers), "bugsink.wsgi"]
    try:
        with pinned(
            gunicorn, cpus, f"http://127.0.0.1:{port}/", cwd=base, env=env, log=base / "g.log"
        ):
            t0 = time.perf_counter()
            r = wrk.run(f"http://127.0.0.1:{port}", args.seconds, args.connections)
        digested, prev, last_change = 0, -1, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds + 300:
            digested = int(re.search(r"EVENTS (\d+)", manage("shell", "-c", BUGSINK_COUNT))[1])
            if digested >= r.ok:
                break
            if digested != prev:
                prev, last_change = digested, time.perf_counter()
            elif time.perf_counter() - last_change > 20:
                break  # stalled: report what was digested
            time.sleep(1)
        took = time.perf_counter() - t0
    finally:
        snappea.terminate()
        snappea.wait(30)
    return (
        r.line(f"bugsink ({args.bugsink_workers} gunicorn workers)")
        + f"\n{'bugsink digested':<36} {digested:,} of {r.ok:,} accepted events in {took:.1f} s"
        f" after the load started: {digested / took:,.1f} events/s end to end",
        digested / took,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--cores", type=int, default=1, help="CPUs for the server (wrk: the last)")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the max-rate run")
    ap.add_argument("--bugsink-venv", default=os.environ.get("BUGSINK_VENV", "/tmp/bugsink-venv"))
    ap.add_argument("--bugsink-workers", type=int, default=4, help="gunicorn workers")
    ap.add_argument("--no-bugsink", action="store_true")
    args = ap.parse_args()
    cpus = cores(args.cores)
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp_:
        tmp = Path(tmp_)
        route = FloorRoute("/api/{pid}/envelope/", 200, b'{"id":"0"}')
        key = secrets.token_hex(16)
        wrk = Wrk(requests("1", key), tmp, cpus)
        title = "Sentry envelopes, one event per request"
        out.append(header(title, wrk, args.seconds, args.connections))
        with embedded(tmp, cpus, "sentry", key=key) as wl:
            prof = Profile(args.profile, cpus)
            prof.start(wl.proc.pid, 2 * args.seconds)
            r = rounds(wrk, [route], tmp, wl, "sentry", args.seconds, args.connections)
            out.extend(rounds_report(r, 1, "events"))
            edge = r.weftline_total
            weftline_e2e = r.stored_rate()
            half = wrk.run(wl.base, args.seconds, args.connections, rate=edge.rps / 2)
            wl.drain("sentry")
            out.append(half.line("weftline at half the rate", 1, "events"))
            got = httpx.get(
                f"{wl.base}/api/v1/issues",
                params={"limit": 1000},
                headers={"authorization": f"Bearer {wl.token}"},
                timeout=60,
            )
            stored = sum(i["count"] for i in got.json()["issues"])
            want, _ = wl.accepted("sentry")
            out.append(f"{'stored (issues API)':<36} {stored:,} events of {want:,.0f} accepted")
        if not args.no_bugsink:
            try:
                peer = bugsink_run(args, tmp, cpus)
            except Exception as e:  # report why, keep the other results
                peer = f"not run: {type(e).__name__}: {e}"
            if isinstance(peer, tuple):
                out.append(peer[0])
                if peer[1] > 0:
                    out.append(f"{'weftline / bugsink, stored':<36} {weftline_e2e / peer[1]:,.0f}×")
            else:
                out.append(f"{'bugsink':<36} {peer}")
    print("\n".join(out))
    if args.profile:
        print(prof.summary())
    return 0 if stored == want else 1


if __name__ == "__main__":
    raise SystemExit(main())
