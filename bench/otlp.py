"""Benchmark: OTLP/HTTP span exports into `weftline up`, against the bare-Starlette floor.

    .venv/bin/python bench/otlp.py [--seconds 10] [--connections 32] [--spans 100]
                                   [--attributes 20] [--encoding protobuf|json] [--cores 1]

Bodies are real SDK spans (`--spans` per export, `--attributes` attributes each, one
trace per body, 50 bodies) encoded by the OpenTelemetry exporters' own encoders. wrk,
pinned to its own core, posts them to the floor (a bare Starlette `/v1/traces` reading
the body, same uvicorn flags) and to `weftline up` (embedded Valkey + chDB + workers, all
on the server core). Prints req/s, spans/s, p50/p99, the ratio to the floor, the stored
end-to-end rate (until the otlp stream is drained), and the edge p99 at half the rate.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    FloorRoute,
    HttpRequest,
    Profile,
    Wrk,
    cores,
    embedded,
    header,
    rounds,
    rounds_report,
)


def bodies(n_bodies: int, spans: int, attributes: int, encoding: str) -> list[bytes]:
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
                attrs: dict = {"db.system": "postgresql", "i": i}
                attrs.update({f"app.attr_{k}": f"value-{k}-{i % 7}" for k in range(attributes - 2)})
                with tracer.start_as_current_span(f"step {i % 10}", attributes=attrs) as s:
                    s.add_event("tick", {"n": i})
        finished = mem.get_finished_spans()
        if encoding == "json":
            from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans

            out.append(encode_spans(finished).to_json().encode())
        else:
            from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

            out.append(encode_spans(finished).SerializeToString())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--spans", type=int, default=100, help="spans per request")
    ap.add_argument("--attributes", type=int, default=20, help="attributes per span")
    ap.add_argument("--encoding", choices=["protobuf", "json"], default="protobuf")
    ap.add_argument("--cores", type=int, default=1, help="CPUs for the server (wrk: the last)")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the max-rate run")
    args = ap.parse_args()
    cpus = cores(args.cores)
    n = args.spans
    ctype = "application/json" if args.encoding == "json" else "application/x-protobuf"
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="weftline-bench-otlp-") as tmp_:
        tmp = Path(tmp_)
        key = secrets.token_hex(16)
        headers = {"X-Weftline-Key": key, "Content-Type": ctype}
        wrk = Wrk(
            [
                HttpRequest("POST", "/v1/traces", b, headers)
                for b in bodies(50, n, args.attributes, args.encoding)
            ],
            tmp,
            cpus,
        )
        title = f"OTLP/HTTP {args.encoding}, {n} spans × {args.attributes} attributes per request"
        out.append(header(title, wrk, args.seconds, args.connections))
        route = FloorRoute("/v1/traces", 200, b"", "application/x-protobuf")
        with embedded(tmp, cpus, "otlp", key=key) as wl:
            prof = Profile(args.profile, cpus)
            prof.start(wl.proc.pid, 2 * args.seconds)
            r = rounds(wrk, [route], tmp, wl, "otlp", args.seconds, args.connections)
            out.extend(rounds_report(r, n, "spans"))
            edge = r.weftline_total
            half = wrk.run(wl.base, args.seconds, args.connections, rate=edge.rps / 2)
            wl.drain("otlp")
            out.append(half.line("weftline at half the rate", n, "spans"))
    print("\n".join(out))
    if args.profile:
        print(prof.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
