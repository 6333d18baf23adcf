"""What every ingest route does before answering: reject clearly, or enqueue and answer
only once Valkey holds the entry."""

from __future__ import annotations

import itertools
import time
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from weftline.ground.config import ProjectConfig, Settings
from weftline.ground.metrics import ACCEPTED, ACCEPTED_ITEMS, DEDUPLICATED, REJECTED
from weftline.ground.outcomes import Outcome, count
from weftline.ground.projects import Projects
from weftline.ground.rejections import Reason, Rejected
from weftline.ingest.disk import DiskReserve
from weftline.ingest.limits import RateLimiter
from weftline.storage.keys import idempotency_key as idempotency_key_name
from weftline.storage.keys import in_stream, shard_for
from weftline.storage.valkey import BacklogFull, StreamProducer


def rejection_response(kind: str, err: Rejected) -> Response:
    REJECTED.labels(kind, err.reason).inc()
    count(kind, Outcome.REJECTED, 1, err.reason)
    body: dict[str, Any] = {"error": err.reason, "detail": err.message}
    if err.details is not None:
        body["problems"] = err.details
    return JSONResponse(body, status_code=err.status, headers=err.headers)


class Edge:
    def __init__(
        self,
        settings: Settings,
        projects: Projects,
        producer: StreamProducer,
        disk: DiskReserve | None = None,
    ) -> None:
        self.settings = settings
        self.projects = projects
        self.producer = producer
        self.disk = disk if disk is not None else DiskReserve.from_settings(settings)
        self.rates = RateLimiter()
        self._spread = itertools.count()
        # Shutdown: once `accepting` is off, new data gets 503 + Retry-After; appends already
        # sent to Valkey (`in_flight`) are answered before the server closes.
        self.accepting = True
        self.in_flight = 0

    def check_rate(self, project: ProjectConfig) -> None:
        wait = self.rates.check(project.id, project.rate_limit)
        if wait > 0:
            secs = max(1, int(wait + 0.999))
            raise Rejected(
                Reason.RATE_LIMITED,
                f"project {project.id} is over its rate limit of {project.rate_limit}/s",
                headers={"retry-after": str(secs)},
            )

    def unavailable(self, reason: Reason, message: str) -> Rejected:
        return Rejected(
            reason,
            message,
            headers={"retry-after": str(self.settings.retry_after_seconds)},
        )

    async def enqueue(
        self,
        kind: str,
        project: ProjectConfig,
        request: Request,
        payload: bytes,
        items: int,
        extra: dict[str, str | bytes | int] | None = None,
        shard_key: str | None = None,
    ) -> str:
        entry_id, _ = await self.enqueue_once(
            kind, project, request, payload, items, extra, shard_key
        )
        return entry_id

    async def enqueue_once(
        self,
        kind: str,
        project: ProjectConfig,
        request: Request,
        payload: bytes,
        items: int,
        extra: dict[str, str | bytes | int] | None = None,
        shard_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[str, bool]:
        """(entry id, whether it is a resend). `shard_key` (a session or trace id) keeps
        one session's entries in one stream when the kind is sharded; without it, entries
        are spread over the shards. With `idempotency_key`, a key seen within the window
        returns the original entry id and appends nothing."""
        fields: dict[str, str | bytes | int] = {
            "p": payload,
            "project": project.id,
            "received_at": int(time.time() * 1000),
            # store_ip = false: the client's address is not even buffered.
            "ip": request.client.host if request.client and project.store_ip else "",
            "ua": request.headers.get("user-agent", ""),
            "n": items,
        }
        if extra:
            fields.update(extra)
        if not self.accepting:
            raise self.unavailable(Reason.SHUTTING_DOWN, "shutting down; retry shortly")
        low = self.disk.low()
        if low is not None:
            raise self.unavailable(
                Reason.DISK_RESERVE,
                f"the data folder is nearly full ({low.free} bytes free, reserve "
                f"{low.reserve}); retry later",
            )
        budget = getattr(self.settings.backlog_budget, kind)
        shards = self.settings.stream_shards
        # A resend must meet its key on the same shard: shard by the key when nothing else.
        shard_key = shard_key or idempotency_key
        shard = shard_for(shard_key, shards, next(self._spread)) if shards > 1 else 0
        stream, per_shard = in_stream(kind, shard), -(-budget // shards)
        self.in_flight += 1
        try:
            if idempotency_key is None:
                entry_id, seen = await self.producer.add(stream, fields, per_shard), False
            else:
                entry_id, seen = await self.producer.add_once(
                    stream,
                    fields,
                    per_shard,
                    idempotency_key_name(kind, shard, project.id, idempotency_key),
                    self.settings.idempotency_window_seconds,
                )
        except BacklogFull:
            raise self.unavailable(
                Reason.BACKLOG_FULL,
                f"the {kind} buffer holds its budget of {budget} unprocessed entries; retry later",
            ) from None
        except (RedisError, OSError, TimeoutError) as e:
            raise self.unavailable(Reason.BUFFER_UNAVAILABLE, f"buffer unavailable: {e}") from None
        finally:
            self.in_flight -= 1
        count(kind, Outcome.ACCEPTED, items)
        if seen:
            DEDUPLICATED.labels(kind).inc()
            count(kind, Outcome.DEDUPLICATED, items)
            return entry_id, True
        ACCEPTED.labels(kind).inc()
        ACCEPTED_ITEMS.labels(kind).inc(items)
        return entry_id, False
