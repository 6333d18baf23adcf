"""Benchmark: OpenReplay tracker sessions replayed against the embedded stack, and a floor.

    python bench/replay_ingest.py [--seconds 10] [--concurrency 16] [--rate 0]

The requests are the real tracker's, captured from `@openreplay/tracker` 19.x in headless
Chromium by tests/test_openreplay_browser.py (a React Flow page: DOM snapshot, CSS,
clicks, a drag, an edge connect, typing, a fetch, console, an exception, custom events):
one `POST /v1/web/start` and the batches that followed it, byte for byte, with their
DataType, `?batch=`/`&split=` and Content-Encoding. Each client plays one browser tab:
it starts a session, sends that session's batches in order, one in flight at a time (as
the tracker does), then starts the next session. Every session gets its own token, so
every accepted batch is distinct and must be stored.

In one go on this machine (loopback only, bounded in time):
1. the floor: a bare Starlette app with the same two routes (reads the body, answers
   200), served by uvicorn like Weftline;
2. `weftline up` (embedded Valkey + chDB + workers) with the same load on /ingest;
3. the workers: from the first post until the replay stream is empty (every batch
   decoded, stored and acknowledged), then the stored rows counted with `weftline query`.
Prints edge req/s and p50/p99 against the floor, and tracker messages/s decoded and
stored. Exit status 1 if a stored count differs from what was accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.agent_events import pct, report, start_embedded, wait_http  # noqa: E402
from weftline.embedded import free_port  # noqa: E402
from weftline.enrich.openreplay import event_rows  # noqa: E402
from weftline.enrich.openreplay_decode import decode_batches  # noqa: E402

CAPTURE = REPO / "tests" / "data" / "openreplay" / "reactflow_session.jsonl"

FLOOR_APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def start(request):
        body = await request.body()
        return JSONResponse({"token": "t", "sessionID": str(len(body))})

    async def batch(request):
        await request.body()
        return Response(status_code=200)

    app = Starlette(routes=[
        Route("/ingest/v1/web/start", start, methods=["POST"]),
        Route("/ingest/v1/web/i", batch, methods=["POST"]),
    ])
    """
)


@dataclass(frozen=True)
class TrackerBatch:
    query: str
    headers: dict[str, str]
    body: bytes
    messages: int  # tracker messages in the batch (all of them, DOM included)
    events: int  # replay_events rows they become
    agent_events: int  # visualization_interaction & co. that also land in agent_events


def load_capture(path: Path) -> tuple[dict, list[TrackerBatch]]:
    """The captured start body and batches; counts come from the repo's own decoder."""
    start: dict | None = None
    batches: list[TrackerBatch] = []
    for line in path.read_text().splitlines():
        req = json.loads(line)
        body = bytes.fromhex(req["body_hex"])
        if req["endpoint"] == "start":
            start = orjson.loads(body)
            continue
        headers = {"datatype": req["datatype"]}
        if req["content_encoding"]:
            headers["content-encoding"] = req["content_encoding"]
        raw = gzip.decompress(body) if req["content_encoding"] == "gzip" else body
        decoded = decode_batches(raw)
        rows = [r for b in decoded for r in event_rows(b, 1, "1", 0, 0, 30, 4096)]
        batches.append(
            TrackerBatch(
                query=req["query"],
                headers=headers,
                body=body,
                messages=sum(len(b.messages) for b in decoded),
                events=len(rows),
                agent_events=sum(
                    r["kind"] == "custom" and r["name"] == "visualization_interaction" for r in rows
                ),
            )
        )
    if start is None or not batches:
        raise SystemExit(f"{path}: needs one start request and at least one batch")
    return start, batches


async def load(
    base: str, key: str, start: dict, batches: list[TrackerBatch], args: argparse.Namespace
) -> dict:
    latencies: list[float] = []
    start_latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted = {"batches": 0, "messages": 0, "events": 0, "agent_events": 0, "sessions": 0}
    deadline = time.perf_counter() + args.seconds
    # --rate paces the batch requests of all tabs together (0: as fast as answered)
    interval = args.concurrency / args.rate if args.rate else 0.0
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def post(url: str, body: bytes, headers: dict, into: list[float]) -> httpx.Response:
            t0 = time.perf_counter()
            r = await client.post(url, content=body, headers=headers)
            into.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            return r

        async def tab(w: int) -> None:
            next_at = time.perf_counter() + interval * w / args.concurrency
            while time.perf_counter() < deadline:
                doc = {**start, "projectKey": key, "timestamp": int(time.time() * 1000)}
                r = await post(
                    f"{base}/ingest/v1/web/start",
                    orjson.dumps(doc),
                    {"content-type": "application/json"},
                    start_latencies,
                )
                if r.status_code != 200:
                    await asyncio.sleep(0.25)
                    continue
                accepted["sessions"] += 1
                auth = {"authorization": f"Bearer {r.json()['token']}"}
                for b in batches:
                    if interval:
                        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                        next_at += interval
                    if time.perf_counter() >= deadline:
                        return
                    r = await post(
                        f"{base}/ingest/v1/web/i?{b.query}",
                        b.body,
                        {**auth, **b.headers},
                        latencies,
                    )
                    if r.status_code == 200:
                        accepted["batches"] += 1
                        accepted["messages"] += b.messages
                        accepted["events"] += b.events
                        accepted["agent_events"] += b.agent_events

        started = time.perf_counter()
        await asyncio.gather(*(tab(w) for w in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return {
        **accepted,
        "statuses": statuses,
        "requests": len(latencies) + len(start_latencies),
        "rps": (len(latencies) + len(start_latencies)) / elapsed,
        "batch_rps": accepted["batches"] / elapsed,
        "eps": accepted["messages"] / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "start_p50_ms": pct(start_latencies, 0.5) * 1000,
        "start_p99_ms": pct(start_latencies, 0.99) * 1000,
    }


def run_floor(tmp: str, env: dict, start: dict, batches: list, args) -> dict:
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
        return asyncio.run(load(f"http://127.0.0.1:{port}", "k", start, batches, args))
    finally:
        floor.terminate()
        floor.wait()


def metric(text: str, pattern: str) -> float:
    m = re.search("^" + pattern + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def count_stored(env: dict, data: Path) -> dict:
    """Counted after `weftline up` exits: chDB lets one process own the data folder."""
    sql = (
        "SELECT (SELECT count() FROM weftline.replay_batches FINAL) AS batches,"
        " (SELECT sum(messages) FROM weftline.replay_batches FINAL) AS messages,"
        " (SELECT count() FROM weftline.replay_events FINAL) AS events,"
        " (SELECT count() FROM weftline.agent_events FINAL WHERE session_id != '') AS agent_events,"
        " (SELECT uniqExact(session_id) FROM weftline.replay_sessions FINAL) AS sessions"
    )
    out = subprocess.run(
        [sys.executable, "-m", "weftline.cli", "query", "--data-dir", str(data), sql],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"weftline query failed: {out.stderr[-2000:]}")
    return {k: int(v) for k, v in json.loads(out.stdout.splitlines()[-1]).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16, help="browser tabs replayed at once")
    ap.add_argument("--rate", type=float, default=0.0, help="batch requests/s in all (0: max)")
    ap.add_argument("--capture", type=Path, default=CAPTURE, help="captured tracker requests")
    args = ap.parse_args()
    start, batches = load_capture(args.capture)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VALKEY_URL", None)
    env.pop("CLICKHOUSE_URL", None)

    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp:
        floor_r = run_floor(tmp, env, start, batches, args)

        up, base, key, token, data = start_embedded(tmp, env, "replay", retention_days=3650)
        try:
            t0 = time.perf_counter()
            wl = asyncio.run(load(base, key, start, batches, args))
            load_s = time.perf_counter() - t0
            m = httpx.get(f"{base}/metrics").text
            # what the workers had not yet stored when the load stopped: if it is large the
            # workers, not the edge, are the bottleneck
            left = metric(m, r'weftline_stream_backlog_entries\{kind="replay"\}')
            backlog = -1.0
            while time.perf_counter() - t0 < args.seconds + 300:
                m = httpx.get(f"{base}/metrics").text
                backlog = metric(m, r'weftline_stream_backlog_entries\{kind="replay"\}')
                if backlog == 0:
                    break
                time.sleep(0.2)
            drained_s = time.perf_counter() - t0
            decoded = metric(m, "weftline_replay_messages_decoded_total")
        finally:
            up.terminate()
            up.wait(60)
        if backlog != 0:
            print((Path(tmp) / "up.log").read_text()[-3000:])
            raise SystemExit("the replay stream did not drain within 300 s")
        stored = count_stored(env, data)

    per_session = sum(b.messages for b in batches)
    size = sum(len(b.body) for b in batches)
    print(
        f"\nWeftline OpenReplay ingest benchmark: {args.concurrency} tabs, "
        f"{args.seconds:.0f} s per run, {os.cpu_count()} CPUs (client and server share them)\n"
        f"session replayed: 1 start + {len(batches)} batches ({size} bytes, "
        f"{per_session} tracker messages), captured from @openreplay/tracker "
        f"{start.get('trackerVersion', '?')} in Chromium\n"
    )
    report("floor: bare Starlette endpoints", floor_r, unit="msgs")
    report("weftline /ingest/v1/web/*", wl, floor_r, unit="msgs")
    print(
        f"{'':<34} (req/s: starts and batches; p50/p99: batches; "
        f"starts p50 {wl['start_p50_ms']:.1f} ms p99 {wl['start_p99_ms']:.1f} ms)"
    )
    print(
        f"{'edge accepted':<34} {wl['sessions']} sessions, {wl['batches']} batches "
        f"({wl['batch_rps']:.0f}/s), {wl['messages']} messages ({wl['eps']:.0f}/s)"
    )
    print(
        f"{'workers':<34} stream drained {drained_s:.1f} s after the first post "
        f"(load ran {load_s:.1f} s; {left:.0f} entries not yet stored then): "
        f"{decoded:.0f} messages decoded, "
        f"{decoded / drained_s:.0f} messages/s decoded and stored end to end"
    )
    print(
        f"{'stored (FINAL)':<34} {stored['batches']} raw batches, {stored['messages']} messages,"
        f" {stored['events']} replay_events rows ({stored['events'] / drained_s:.0f}/s),"
        f" {stored['agent_events']} agent_events, {stored['sessions']} sessions"
    )
    want = {k: wl[k] for k in ("batches", "messages", "events", "agent_events", "sessions")}
    bad = {k: (stored[k], want[k]) for k in want if stored[k] != want[k]}
    if bad:
        print(f"MISMATCH stored vs accepted: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
