"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from storage.clickhouse import ClickHouse
from storage.keys import GROUP, KINDS, dlq_stream, in_stream
from weftline.config import Settings
from weftline.metrics import (
    DLQ_LENGTH,
    REGISTRY,
    STREAM_LAG,
    STREAM_LENGTH,
    STREAM_OLDEST_AGE,
    STREAM_PENDING,
)


async def stream_stats(client: aioredis.Redis, shards: int = 1) -> dict[str, dict[str, float]]:
    """Backlog, pending, lag, oldest-entry age and DLQ size of each kind (summed over its
    shards; the age is the oldest shard's)."""
    pipe = client.pipeline(transaction=False)
    for kind in KINDS:
        for shard in range(shards):
            pipe.xlen(in_stream(kind, shard))
            pipe.xlen(dlq_stream(kind, shard))
            pipe.xrange(in_stream(kind, shard), count=1)
    raw = await pipe.execute()
    out: dict[str, dict[str, float]] = {}
    now_ms = time.time() * 1000
    for i, kind in enumerate(KINDS):
        length = dlq = oldest = pending = lag = 0.0
        for shard in range(shards):
            base = 3 * (i * shards + shard)
            s_len, s_dlq, first = raw[base : base + 3]
            length += s_len
            dlq += s_dlq
            if first:
                first_id = first[0][0].decode() if isinstance(first[0][0], bytes) else first[0][0]
                oldest = max(oldest, (now_ms - int(first_id.split("-")[0])) / 1000)
            if s_len or s_dlq:
                try:
                    for g in await client.xinfo_groups(in_stream(kind, shard)):
                        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                        if name == GROUP:
                            pending += float(g.get("pending") or 0)
                            lag += float(g.get("lag") or 0)
                except RedisError:
                    pass
        out[kind] = {
            "backlog": length,
            "dlq": dlq,
            "oldest_age_seconds": oldest,
            "pending": pending,
            "lag": lag,
        }
    return out


class Ops:
    def __init__(self, settings: Settings, client: aioredis.Redis, ch: ClickHouse | None) -> None:
        self.settings = settings
        self.client = client
        self.ch = ch

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        checks: dict[str, str] = {}
        ok = True
        try:
            await self.client.ping()
            checks["valkey"] = "ok"
            stats = await stream_stats(self.client, self.settings.stream_shards)
            for kind, s in stats.items():
                budget = getattr(self.settings.backlog_budget, kind)
                if s["backlog"] >= budget:
                    ok = False
                    checks[f"backlog_{kind}"] = f"full: {int(s['backlog'])} >= {budget}"
        except (RedisError, OSError) as e:
            ok = False
            checks["valkey"] = f"unreachable: {e}"
        if self.ch is not None:
            if await asyncio.to_thread(self.ch.ping):
                checks["clickhouse"] = "ok"
            else:
                ok = False
                checks["clickhouse"] = "unreachable"
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    async def metrics(self, request: Request) -> Response:
        try:
            shards = self.settings.stream_shards
            for kind, s in (await stream_stats(self.client, shards)).items():
                STREAM_LENGTH.labels(kind).set(s["backlog"])
                STREAM_PENDING.labels(kind).set(s["pending"])
                STREAM_LAG.labels(kind).set(s["lag"])
                STREAM_OLDEST_AGE.labels(kind).set(s["oldest_age_seconds"])
                DLQ_LENGTH.labels(kind).set(s["dlq"])
        except (RedisError, OSError):
            pass  # the counters are still worth serving when Valkey is down
        return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
