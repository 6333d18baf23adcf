"""Builds the stream consumers for every signal kind that has a handler."""

from __future__ import annotations

import asyncio
import os
import socket

import redis.asyncio as aioredis

from weftline.enrich.agent_events import AgentEventsHandler
from weftline.enrich.openreplay import OpenReplayHandler
from weftline.enrich.otlp import OtlpHandler
from weftline.enrich.sentry import SentryHandler
from weftline.enrich.stream_consumer import ConsumerOptions, Handler, StreamConsumer
from weftline.ground.config import Settings
from weftline.storage.clickhouse import ClickHouse


def handlers(settings: Settings, ch: ClickHouse, client: aioredis.Redis) -> list[Handler]:
    def retention_of(project_id: int) -> int:
        p = settings.project_by_id(project_id)
        return p.retention_days if p else 30

    return [
        AgentEventsHandler(ch, client, retention_of, settings.agent_state_ttl_seconds),
        OpenReplayHandler(ch, client, retention_of, settings.openreplay),
        OtlpHandler(ch, retention_of, client),
        SentryHandler(ch, settings.project_by_id, client),
    ]


def consumer_options(settings: Settings) -> ConsumerOptions:
    return ConsumerOptions(
        batch_size=settings.batch_size,
        batch_max_age_ms=settings.batch_max_age_ms,
        batch_max_items=settings.batch_max_items,
        min_flush_interval_ms=settings.min_flush_interval_ms,
        claim_idle_ms=settings.claim_idle_ms,
        max_deliveries=settings.max_deliveries,
        # An idle worker notices a stop within this time (a blocking read is not cut
        # short, so what it returns is never left pending): Ctrl-C stays under 2 s.
        idle_block_ms=500,
    )


def build_consumers(
    settings: Settings, ch: ClickHouse, client: aioredis.Redis
) -> list[StreamConsumer]:
    base = f"{socket.gethostname()}-{os.getpid()}"
    opts = consumer_options(settings)
    out = []
    for h in handlers(settings, ch, client):
        for shard in range(settings.stream_shards):
            suffix = f"-s{shard}" if settings.stream_shards > 1 else ""
            for n in range(settings.workers_per_stream):
                out.append(
                    StreamConsumer(client, h, f"{base}-{h.kind}{suffix}-{n}", opts, shard=shard)
                )
    return out


async def run_consumers(consumers: list[StreamConsumer], stop: asyncio.Event) -> None:
    # A handler may have a periodic job (e.g. closing idle sessions): one per handler.
    # (Several consumers share a handler when streams are sharded or workers_per_stream > 1.)
    jobs = {}
    for c in consumers:
        if hasattr(c.handler, "background") and id(c.handler) not in jobs:
            jobs[id(c.handler)] = c.handler.background(stop)
    await asyncio.gather(*(c.run(stop) for c in consumers), *jobs.values())


async def run_and_publish(
    consumers: list[StreamConsumer], client: aioredis.Redis, stop: asyncio.Event, interval: float
) -> None:
    """`run_consumers` for a `weftline worker` process, which runs no alert loop: its
    stored and dead-lettered counts are half of the outcome balance the alert
    `items_unaccounted` checks, so it publishes them like an alert loop does, and a last
    time once the batch in hand is finished."""
    from redis.exceptions import RedisError

    from weftline.dashboards.alerting.metrics import publish_counters

    replica = f"worker-{socket.gethostname()}-{os.getpid()}"

    async def publish_until_stopped() -> None:
        while not stop.is_set():
            try:
                await publish_counters(client, replica)
            except (RedisError, OSError):
                pass  # Valkey away: the consumers say so; the next round publishes
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass

    publisher = asyncio.create_task(publish_until_stopped())
    try:
        await run_consumers(consumers, stop)
    finally:
        await publisher
        try:
            await publish_counters(client, replica, final=True)
        except (RedisError, OSError):
            pass
