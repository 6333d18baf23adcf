"""The live feed's one subscriber per process, fanned out to every SSE reader in it.

A pub/sub subscription holds a Valkey connection for as long as it lives; one per reader
took the connections the edge needs to answer ingest (200 readers: ingest 503, /readyz
503). Here one subscription (a pattern over every project's channel) serves all readers
of the process, and readers have their own budget: at most `live_max_streams_per_token`
per query token (429 beyond) and `live_max_streams` in all (503 beyond), each closed
after `live_idle_seconds` without an event (EventSource reconnects by itself) or when it
falls `QUEUE` batches behind. The subscription is dropped with its last reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from weftline.ground.projects import ApiError
from weftline.ground.rejections import Reason

log = logging.getLogger("weftline.live")

PATTERN = "wl:live:*"  # storage.keys.live_channel(project_id) for every project
QUEUE = 256  # batches a reader may be behind before it is closed as too slow


@dataclass
class Reader:
    project_id: int
    token: str
    queue: asyncio.Queue[list[dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE)
    )
    overflowed: bool = False


class LiveHub:
    def __init__(
        self,
        client: aioredis.Redis,
        max_streams: int = 100,
        max_per_token: int = 5,
        idle_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.max_streams = max_streams
        self.max_per_token = max_per_token
        self.idle_seconds = idle_seconds
        self.readers: list[Reader] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.closing = False

    def close_all(self) -> None:
        """Shutdown: end every stream now (an open SSE response would hold the server's
        graceful stop for its whole timeout); EventSource reconnects once we are back."""
        self.closing = True
        for r in self.readers:
            with contextlib.suppress(asyncio.QueueFull):
                r.queue.put_nowait(None)  # wakes the reader's loop

    def _admit(self, project_id: int, token: str) -> Reader:
        if len(self.readers) >= self.max_streams:
            raise ApiError(
                Reason.LIVE_STREAMS_FULL,
                f"this server holds its {self.max_streams} live streams; retry later",
                headers={"retry-after": "30"},
            )
        if sum(1 for r in self.readers if r.token == token) >= self.max_per_token:
            raise ApiError(
                Reason.TOO_MANY_LIVE_STREAMS,
                f"this token has {self.max_per_token} live streams open already",
                headers={"retry-after": "30"},
            )
        reader = Reader(project_id, token)
        self.readers.append(reader)
        return reader

    async def join(self, project_id: int, token: str) -> Reader:
        """A reader, once the subscription is live (so nothing published after this
        returns is missed); 429/503 past the caps, 503 when Valkey does not answer."""
        reader = self._admit(project_id, token)
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=5)
        except TimeoutError:
            self.leave(reader)
            raise ApiError(
                Reason.BUFFER_UNAVAILABLE, "the live feed cannot subscribe to Valkey"
            ) from None
        return reader

    def leave(self, reader: Reader) -> None:
        with contextlib.suppress(ValueError):
            self.readers.remove(reader)
        if not self.readers and self._task is not None:
            self._task.cancel()
            self._task = None

    def _fan_out(self, channel: bytes | str, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        try:
            project_id = int(name.rsplit(":", 1)[1])
            items = orjson.loads(data)
        except (ValueError, IndexError, orjson.JSONDecodeError):
            return
        if not isinstance(items, list):
            return
        for r in self.readers:
            if r.project_id != project_id or r.overflowed:
                continue
            try:
                r.queue.put_nowait(items)
            except asyncio.QueueFull:
                r.overflowed = True  # the reader's loop sees it and ends the stream

    async def _run(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.psubscribe(PATTERN)
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "pmessage":
                        self._fan_out(msg["channel"], msg["data"])
            except (RedisError, OSError) as e:
                self._ready.clear()
                log.warning("live feed: %s: %s; subscribing again", type(e).__name__, e)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())

    async def events(
        self, reader: Reader, session_id: str | None, keepalive: float
    ) -> AsyncIterator[bytes]:
        """The SSE body of one reader: its project's items, filtered by session."""
        loop = asyncio.get_running_loop()
        last_event = loop.time()
        try:
            yield b": connected\n\n"
            while not reader.overflowed and not self.closing:
                idle_left = self.idle_seconds - (loop.time() - last_event)
                if idle_left <= 0:
                    yield b": idle, closing (reconnect to continue)\n\n"
                    return
                try:
                    items = await asyncio.wait_for(
                        reader.queue.get(), timeout=min(keepalive, idle_left)
                    )
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                for item in items or []:
                    if not isinstance(item, dict):
                        continue
                    if session_id is not None and item.get("session_id") != session_id:
                        continue
                    kind = str(item.get("type", "message")).encode()
                    yield b"event: " + kind + b"\ndata: " + orjson.dumps(item) + b"\n\n"
                    last_event = loop.time()
            if self.closing:
                yield b": server stopping, closing (reconnect to continue)\n\n"
                return
            yield b": too far behind, closing (reconnect to continue)\n\n"
        finally:
            self.leave(reader)
