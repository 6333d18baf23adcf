"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from weftline.ground.config import Settings
from weftline.ground.metrics import (
    DLQ_LENGTH,
    REGISTRY,
    STREAM_ITEMS,
    STREAM_LAG,
    STREAM_LENGTH,
    STREAM_OLDEST_AGE,
    STREAM_PENDING,
    STREAM_STALLED,
)
from weftline.ingest.disk import DiskReserve
from weftline.ingest.edge import Edge
from weftline.storage.clickhouse import ClickHouse
from weftline.storage.keys import KINDS, in_stream
from weftline.storage.valkey import stream_stats


class Ops:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        ch: ClickHouse | None,
        disk: DiskReserve | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.ch = ch
        self.disk = disk if disk is not None else DiskReserve.from_settings(settings)
        self.edge: Edge | None = None  # set by the app: a stopping edge is not ready
        # stream → (its oldest entry id, when this process first saw it oldest)
        self._oldest: dict[str, tuple[str, float]] = {}

    async def stalled(self) -> dict[str, float]:
        """Seconds each kind's oldest entry has stayed the oldest, as seen by this process
        (the longest over the kind's shards): a worker retrying one batch forever shows
        here, however young the rest of the stream is."""
        shards = self.settings.stream_shards
        streams = [(k, in_stream(k, n)) for k in KINDS for n in range(shards)]
        pipe = self.client.pipeline(transaction=False)
        for _, stream in streams:
            pipe.xrange(stream, count=1)
        firsts = await pipe.execute()
        now = time.monotonic()
        out = dict.fromkeys(KINDS, 0.0)
        for (kind, stream), first in zip(streams, firsts, strict=True):
            if not first:
                self._oldest.pop(stream, None)
                continue
            eid = first[0][0].decode() if isinstance(first[0][0], bytes) else str(first[0][0])
            seen = self._oldest.get(stream)
            if seen is None or seen[0] != eid:
                self._oldest[stream] = seen = (eid, now)
            out[kind] = max(out[kind], now - seen[1])
        return out

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
            limit = self.settings.stream_stall_seconds
            for kind, secs in (await self.stalled()).items():
                if secs >= limit:
                    ok = False
                    checks[f"stalled_{kind}"] = (
                        f"the oldest entry has not moved for {int(secs)} s (limit {limit:g} s)"
                    )
        except (RedisError, OSError) as e:
            ok = False
            checks["valkey"] = f"unreachable: {e}"
        if self.edge is not None and not self.edge.accepting:
            ok = False
            checks["accepting"] = "shutting down: new data gets 503"
        for space in self.disk.measure():
            state = f"{space.free} bytes free in {space.path}, reserve {space.reserve}"
            if space.low and self.disk.enabled:
                ok = False
                checks[f"disk_{space.name}"] = "low: " + state
            else:
                checks[f"disk_{space.name}"] = "ok: " + state
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
        self.disk.measure()
        try:
            shards = self.settings.stream_shards
            for kind, s in (await stream_stats(self.client, shards)).items():
                STREAM_LENGTH.labels(kind).set(s["backlog"])
                STREAM_ITEMS.labels(kind).set(s["items"])
                STREAM_PENDING.labels(kind).set(s["pending"])
                STREAM_LAG.labels(kind).set(s["lag"])
                STREAM_OLDEST_AGE.labels(kind).set(s["oldest_age_seconds"])
                DLQ_LENGTH.labels(kind).set(s["dlq"])
            for kind, secs in (await self.stalled()).items():
                STREAM_STALLED.labels(kind).set(secs)
        except (RedisError, OSError):
            pass  # the counters are still worth serving when Valkey is down
        return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
