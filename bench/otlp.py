"""Benchmark: OTLP/HTTP span exports against the embedded stack, against a floor.

    .venv/bin/python bench/otlp.py [--seconds 10] [--concurrency 16] [--spans 100]
                                   [--encoding protobuf|json]

Runs, in one go on this machine (loopback only, bounded in time):
1. the floor: a bare Starlette `/v1/traces` that reads the body and answers an empty
   protobuf response, served by uvicorn like Weftline;
2. `weftline up` (embedded Valkey + chDB + workers) under the same load: the edge's
   spans/s (accepted into Valkey), then how long the workers take to store the backlog,
   which gives the sustained spans/s through edge + worker + ClickHouse.
Bodies are real SDK spans encoded by the OpenTelemetry encoders (protobuf or OTLP/JSON),
a different trace per body.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.agent_events import start_embedded  # noqa: E402
from weftline.embedded import free_port  # noqa: E402

FLOOR_APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def traces(request):
        await request.body()
        return Response(b"", media_type="application/x-protobuf")

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    """
)


def bodies(n_bodies: int, spans: int, encoding: str) -> list[bytes]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    out = []
    for b in range(n_bodies):
        mem = InMemorySpanExporter()
        tp = TracerProvider(resource=Resource.create({"service.name": f"bench-{b % 4}"}))
        tp.add_span_processor(SimpleSpanProcessor(mem))
        tracer = tp.get_tracer("bench")
        with tracer.start_as_current_span("GET /bench", attributes={"session.id": f"s{b}"}):
            for i in range(spans - 1):
                with tracer.start_as_current_span(
                    f"step {i % 10}", attributes={"i": i, "db.system": "postgresql"}
                ) as s:
                    s.add_event("tick", {"n": i})
        finished = mem.get_finished_spans()
        if encoding == "json":
            from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans

            out.append(encode_spans(finished).to_json().encode())
        else:
            from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

            out.append(encode_spans(finished).SerializeToString())
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def load(url: str, headers: dict, payloads: list[bytes], seconds: float, conc: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cycle = itertools.cycle(payloads)
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.post(url, content=next(cycle), headers=headers)
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - started
    ok = statuses.get(200, 0)
    return {
        "ok": ok,
        "statuses": statuses,
        "elapsed": elapsed,
        "rps": ok / elapsed,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
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


def backlog(base: str) -> float:
    m = httpx.get(f"{base}/metrics", timeout=10).text
    found = re.search(r'weftline_stream_backlog_entries\{kind="otlp"\} (\S+)', m)
    return float(found.group(1)) if found else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--spans", type=int, default=100, help="spans per request")
    ap.add_argument("--encoding", choices=["protobuf", "json"], default="protobuf")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("VALKEY_URL", None)
    env.pop("CLICKHOUSE_URL", None)
    payloads = bodies(50, args.spans, args.encoding)
    ctype = "application/json" if args.encoding == "json" else "application/x-protobuf"

    with tempfile.TemporaryDirectory(prefix="weftline-bench-otlp-") as tmp:
        floor_port = free_port()
        (Path(tmp) / "floor_app.py").write_text(FLOOR_APP)
        floor = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(floor_port)]
            + ["--log-level", "warning", "--no-access-log"],
            cwd=tmp,
            env={**env, "PYTHONPATH": tmp},
        )
        try:
            wait_http(f"http://127.0.0.1:{floor_port}/", floor)
            floor_r = asyncio.run(
                load(
                    f"http://127.0.0.1:{floor_port}/v1/traces",
                    {"content-type": ctype},
                    payloads,
                    args.seconds,
                    args.concurrency,
                )
            )
        finally:
            floor.terminate()
            floor.wait()

        up, base, key, token, data = start_embedded(tmp, env, "otlp")
        try:
            headers = {"x-weftline-key": key, "content-type": ctype}
            wl = asyncio.run(
                load(f"{base}/v1/traces", headers, payloads, args.seconds, args.concurrency)
            )
            drain_start = time.perf_counter()
            while backlog(base) > 0 and time.perf_counter() - drain_start < 300:
                time.sleep(0.2)
            drain = time.perf_counter() - drain_start
            left = backlog(base)
        finally:
            up.terminate()
            up.wait(60)

    spans = args.spans
    print(
        f"\nWeftline OTLP benchmark: {args.encoding}, {spans} spans per request, "
        f"{args.concurrency} concurrent clients, {args.seconds:.0f} s per run, "
        f"{os.cpu_count()} CPUs (client, server and workers share them)\n"
    )
    for name, r in (("floor: bare Starlette /v1/traces", floor_r), ("weftline edge", wl)):
        print(
            f"{name:<34} {r['rps']:>7.0f} req/s {r['rps'] * spans:>9.0f} spans/s"
            f"  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  statuses {r['statuses']}"
        )
    print(
        f"{'':<34} edge throughput {wl['rps'] / floor_r['rps']:.2f}× floor, "
        f"p50 {wl['p50_ms'] / floor_r['p50_ms']:.2f}× floor"
    )
    total = wl["ok"] * spans
    sustained = total / (wl["elapsed"] + drain)
    print(
        f"{'through the workers':<34} {total} spans stored {drain:.1f} s after the load stopped"
        f" (backlog left {left:.0f}): {sustained:.0f} spans/s sustained, "
        f"{sustained / (floor_r['rps'] * spans):.2f}× the floor's spans/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
