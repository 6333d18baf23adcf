"""What Valkey durability costs the edge: `aof` (appendfsync everysec, the default) against
`waitaof` (each accepted entry waits for WAITAOF 1 0, i.e. its fsync).

Measures the producer step the edge awaits before answering (the bounded XADD script,
plus WAITAOF in waitaof mode) on a real valkey-server in a temporary folder on this
machine's disk, at a few concurrency levels. `appendfsync always` is shown as a reference
(every write fsynced by Valkey itself). Bounded: N entries per run, loopback only.

    python bench/durability.py [--n 2000] [--concurrency 1,16,64] [--payload 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weftline.embedded import EmbeddedValkey  # noqa: E402
from weftline.storage.valkey import StreamProducer, connect  # noqa: E402


async def run(url: str, waitaof: bool, n: int, concurrency: int, payload: bytes) -> dict:
    client = connect(url, timeout=10)
    producer = StreamProducer(client, waitaof=waitaof)
    stream = f"bench:{time.monotonic_ns()}"
    latencies: list[float] = []
    todo = iter(range(n))

    async def one_worker() -> None:
        for _ in todo:
            t = time.perf_counter()
            await producer.add(stream, {"p": payload, "project": 1}, n + 1)
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(one_worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.delete(stream)
    await client.aclose()
    latencies.sort()
    return {
        "entries_per_s": round(n / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--payload", type=int, default=512, help="bytes per entry")
    p.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    payload = b"x" * args.payload
    results = []
    with tempfile.TemporaryDirectory(prefix="weftline-bench-") as tmp:
        for label, fsync, waitaof in (
            ("aof (everysec)", "everysec", False),
            ("waitaof", "everysec", True),
            ("appendfsync always", "always", False),
        ):
            valkey = EmbeddedValkey(Path(tmp) / fsync, appendfsync=fsync)
            url = valkey.start()
            try:
                for c in levels:
                    asyncio.run(run(url, waitaof, min(200, args.n), c, payload))  # warm-up
                    runs = [
                        asyncio.run(run(url, waitaof, args.n, c, payload))
                        for _ in range(args.repeat)
                    ]
                    # The median run by throughput: this box is shared, single runs are noisy.
                    r = sorted(runs, key=lambda x: x["entries_per_s"])[len(runs) // 2]
                    results.append({"mode": label, "concurrency": c, **r})
            finally:
                valkey.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'mode':<20} {'conc':>5} {'entries/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(
            f"{r['mode']:<20} {r['concurrency']:>5} {r['entries_per_s']:>10} "
            f"{r['p50_ms']:>8} {r['p99_ms']:>8}"
        )
    base = {r["concurrency"]: r["entries_per_s"] for r in results if r["mode"].startswith("aof")}
    for r in results:
        if r["mode"] == "waitaof":
            print(
                f"waitaof at concurrency {r['concurrency']}: "
                f"{r['entries_per_s'] / base[r['concurrency']]:.2f}x the throughput of aof"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
