"""Benchmark: OpenReplay tracker batches into `weftline up`, against the bare-Starlette floor.

    .venv/bin/python bench/replay_ingest.py [--seconds 10] [--connections 32] [--cores 1]

The requests are the real tracker's, captured from `@openreplay/tracker` 19.x in headless
Chromium by tests/test_openreplay_browser.py (a React Flow page: DOM snapshot, CSS,
clicks, a drag, an edge connect, typing, a fetch, console, an exception, custom events):
the batches that followed one `POST /v1/web/start`, byte for byte, with their DataType,
`?batch=`/`&split=` and Content-Encoding. Before the load, `--sessions` sessions are
started on `weftline up` (each its own token, so every batch is distinct and must be
stored); wrk (pinned to its own core) then sends every session's batches, round by round
(batch 1 of every session, then batch 2, …: one session's batches arrive in order, as the
tracker keeps one in flight), to the floor (same routes, reads the body) and to
`weftline up` (embedded Valkey + chDB + workers, all on the server core).
Prints batch req/s, tracker messages/s, p50/p99, the ratio to the floor; the time until
the replay stream is drained and the messages decoded and stored per second end to end;
the edge p99 at half the rate; then the stored rows counted with `weftline query`
(exit status 1 if they differ from what was accepted).
"""

from __future__ import annotations

import argparse
import gzip
import json
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    REPO,
    FloorRoute,
    HttpRequest,
    Profile,
    Wrk,
    bench_env,
    cores,
    embedded,
    header,
    rounds,
    rounds_report,
)
from weftline.enrich.openreplay import event_rows  # noqa: E402
from weftline.enrich.openreplay_decode import decode_batches  # noqa: E402

CAPTURE = REPO / "tests" / "data" / "openreplay" / "reactflow_session.jsonl"


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


def start_sessions(base: str, key: str, start: dict, n: int) -> list[str]:
    """Session tokens from the real /start route (a few ms each, before the load)."""
    tokens = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(n):
            doc = {**start, "projectKey": key, "timestamp": int(time.time() * 1000)}
            r = client.post("/ingest/v1/web/start", content=orjson.dumps(doc))
            r.raise_for_status()
            tokens.append(r.json()["token"])
    return tokens


def batch_requests(tokens: list[str], batches: list[TrackerBatch]) -> list[HttpRequest]:
    return [
        HttpRequest(
            "POST",
            f"/ingest/v1/web/i?{b.query}",
            b.body,
            {"Authorization": f"Bearer {t}", **b.headers},
        )
        for b in batches
        for t in tokens
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--sessions", type=int, default=3000, help="sessions started before the load")
    ap.add_argument("--cores", type=int, default=1, help="CPUs for the server (wrk: the last)")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the max-rate run")
    ap.add_argument("--capture", type=Path, default=CAPTURE, help="captured tracker requests")
    args = ap.parse_args()
    cpus = cores(args.cores)
    start, batches = load_capture(args.capture)
    per_batch = sum(b.messages for b in batches) / len(batches)
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp_:
        tmp = Path(tmp_)
        key = secrets.token_hex(16)
        routes = [FloorRoute("/ingest/v1/web/i", 200, b"", "text/plain")]
        with embedded(tmp, cpus, "replay", retention_days=3650, key=key) as wl:
            tokens = start_sessions(wl.base, key, start, args.sessions)
            wrk = Wrk(batch_requests(tokens, batches), tmp, cpus)
            out.append(
                header(
                    f"OpenReplay tracker batches ({len(batches)} per session, "
                    f"{per_batch:.0f} messages per batch on average)",
                    wrk,
                    args.seconds,
                    args.connections,
                )
            )
            starts, _ = wl.accepted("replay")
            prof = Profile(args.profile, cpus)
            prof.start(wl.proc.pid, 2 * args.seconds)
            r = rounds(wrk, routes, tmp, wl, "replay", args.seconds, args.connections)
            out.extend(rounds_report(r, 1, "batches"))
            decoded = wl.metric("weftline_replay_messages_decoded_total")
            busy = sum(w.seconds for w in r.weftline) + sum(r.drains)
            out.append(
                f"{'':<36} {decoded:,.0f} tracker messages decoded and stored: "
                f"{decoded / busy:,.0f} messages/s end to end"
            )
            edge = r.weftline_total
            half = wrk.run(
                wl.base, args.seconds, args.connections, rate=edge.rps / 2, offset=r.next_offset
            )
            wl.drain("replay")
            out.append(half.line("weftline at half the rate"))
            sent = wl.accepted("replay")[0] - starts
        stored = count_stored(bench_env(), wl.data)
    # the half-rate run goes on after the last batch sent, unless every batch was sent
    distinct = int(min(sent, wrk.count))
    out.append(
        f"{'stored (FINAL)':<36} {stored['batches']:,} raw batches of {distinct:,}"
        f" distinct accepted, {stored['messages']:,} messages,"
        f" {stored['events']:,} replay_events rows, {stored['sessions']:,} sessions"
    )
    print("\n".join(out))
    if args.profile:
        print(prof.summary())
    return 0 if stored["batches"] == distinct else 1


if __name__ == "__main__":
    raise SystemExit(main())
