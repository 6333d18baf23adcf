"""The consumer loop every signal kind shares.

At-least-once from the stream, exactly-once as queries see it:
- read with a consumer group; claim entries a dead consumer left pending (XAUTOCLAIM);
- decode every entry (pure); one that can never be decoded, or that was delivered
  `max_deliveries` times, goes to `wl:dlq:{kind}` with the reason and is acknowledged;
- store the batch, retrying with backoff while storage fails for a reason that can pass
  (ClickHouse away, a full disk: nothing is acknowledged before it is stored); the
  handler's rows carry stable ids so a redelivered batch collapses in ClickHouse;
- an error the same rows will always hit (`is_permanent`: a value out of its column's
  range, a TypeError in the handler) splits the batch in halves until the entry that
  fails alone is found; that entry goes to the DLQ with the error, the rest is stored;
- acknowledge and delete the entries together, so the stream holds exactly what is
  accepted and not yet stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from weftline.enrich.sentry_scrub import scrub_text
from weftline.ground.errors import DecodeError
from weftline.ground.metrics import DEAD_LETTERED, PROCESSED
from weftline.ground.outcomes import DeadReason, Outcome, count, entry_items
from weftline.storage.clickhouse import StorageError
from weftline.storage.keys import GROUP, backlog_items_key, dlq_stream, in_stream
from weftline.storage.valkey import ack_and_delete, ensure_group

log = logging.getLogger("weftline.worker")

DLQ_MAXLEN = 100_000

# Errors of the data: a Python error the handler raised on its own rows. Anything else
# raised outside storage (RuntimeError at shutdown, …) is treated as something that can
# pass.
_DATA_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, UnicodeError, RecursionError)


def is_permanent(e: BaseException) -> bool:
    """Will storing the same rows fail the same way every time? Only then is a batch
    split and an entry dead-lettered; everything else is retried with backoff. Storage
    decides for its own errors (`StorageError.permanent`: a full disk, a missing table,
    a connection are not); a handler's own data error (TypeError, OverflowError, …) is."""
    if isinstance(e, StorageError):
        return e.permanent
    if isinstance(e, RedisError | OSError | TimeoutError):
        return False
    return isinstance(e, _DATA_ERRORS)


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1


class Handler(Protocol):
    kind: str

    def decode(self, entry: Entry) -> list[Any]:
        """Pure: entry → rows. Raises DecodeError for input that can never be stored."""
        ...

    async def store(self, rows: list[Any], token: str) -> None:
        """Write rows idempotently; raises on failure (the batch is retried)."""
        ...

    async def after_store(self, rows: list[Any]) -> None:
        """Side effects once rows are stored (state in Valkey, pub/sub)."""
        ...


@dataclass
class ConsumerOptions:
    batch_size: int = 2000
    batch_max_items: int = 20_000
    batch_max_age_ms: int = 200
    min_flush_interval_ms: int = 100
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    idle_block_ms: int = 1000
    backoff_initial: float = 0.1
    backoff_max: float = 5.0


@dataclass
class ConsumerStats:
    batches: int = 0
    entries: int = 0
    dead: int = 0
    store_retries: int = 0
    splits: int = 0
    side_effect_failures: int = 0
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StreamConsumer:
    def __init__(
        self,
        client: aioredis.Redis,
        handler: Handler,
        consumer_name: str,
        options: ConsumerOptions | None = None,
        shard: int = 0,
    ) -> None:
        self.client = client
        self.handler = handler
        self.kind = handler.kind
        self.shard = shard
        self.stream = in_stream(handler.kind, shard)
        self.dlq = dlq_stream(handler.kind, shard)
        self.name = consumer_name
        self.opts = options or ConsumerOptions()
        self.stats = ConsumerStats()
        self._last_claim = 0.0
        self._last_flush = 0.0
        self._items_per_entry = 1.0  # learnt from each batch, to size the next reads
        self._claim_cursor = "0-0"

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: read, process, acknowledge. The batch in hand is finished
        before returning; what is not yet read stays in the stream for the next worker."""
        backoff = self.opts.backoff_initial
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    await ensure_group(self.client, self.stream)
                    group_ready = True
                batch = await self._next_batch(stop)
                if batch:
                    await self._process(batch, stop)
                backoff = self.opts.backoff_initial
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    group_ready = False
                self._note_error(e)
                await self._sleep(stop, backoff)
                backoff = min(backoff * 2, self.opts.backoff_max)
            except (RedisError, OSError) as e:
                self._note_error(e)
                await self._sleep(stop, backoff)
                backoff = min(backoff * 2, self.opts.backoff_max)

    def _note_error(self, e: BaseException) -> None:
        self.stats.last_error = f"{type(e).__name__}: {e}"
        log.warning("%s worker %s: %s", self.kind, self.name, self.stats.last_error)

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _claim(self) -> list[Entry]:
        now = time.monotonic()
        interval = max(0.5, self.opts.claim_idle_ms / 2000)
        if now - self._last_claim < interval:
            return []
        self._last_claim = now
        cursor, claimed, *_ = await self.client.xautoclaim(
            self.stream,
            GROUP,
            self.name,
            min_idle_time=self.opts.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.opts.batch_size,
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        claimed = [(eid, f) for eid, f in claimed if f]
        if not claimed:
            return []
        ids = [eid.decode() if isinstance(eid, bytes) else eid for eid, _ in claimed]
        # XAUTOCLAIM has already counted this delivery; read the counts to spot poison.
        pending = await self.client.xpending_range(
            self.stream, GROUP, min=ids[0], max=ids[-1], count=len(ids) + 100
        )
        counts = {
            (
                p["message_id"].decode() if isinstance(p["message_id"], bytes) else p["message_id"]
            ): int(p["times_delivered"])
            for p in pending
        }
        log.info("%s worker %s claimed %d stale entries", self.kind, self.name, len(ids))
        return [Entry(i, dict(f), counts.get(i, 2)) for i, (_, f) in zip(ids, claimed, strict=True)]

    async def _next_batch(self, stop: asyncio.Event) -> list[Entry]:
        """The next batch, sized by the load: it is handed on as soon as the stream has
        nothing more to give (an idle stream waits for nobody), but not sooner than
        `min_flush_interval_ms` after the previous one, so a steady trickle does not become
        one insert per entry; under load, entries pile up while a batch is processed and
        the next read takes them all, up to `batch_size` entries or `batch_max_items`
        items (the edge's count of events/spans per entry). `batch_max_age_ms` caps how
        long a batch keeps filling."""
        claimed = await self._claim()
        if claimed:
            return claimed
        batch: list[Entry] = []
        items = 0
        started: float | None = None
        opts = self.opts
        while len(batch) < opts.batch_size and items < opts.batch_max_items:
            if stop.is_set():
                break
            now = time.monotonic()
            block: int | None
            if started is None:
                block = opts.idle_block_ms
            else:
                if now - started >= opts.batch_max_age_ms / 1000:
                    break
                wait = self._last_flush + opts.min_flush_interval_ms / 1000 - now
                wait = min(wait, started + opts.batch_max_age_ms / 1000 - now)
                block = max(1, int(wait * 1000)) if wait > 0 else None
            # Entries read are this consumer's: ask only for what the item budget leaves,
            # at the items per entry seen so far (one entry can hold 100 spans).
            room = (opts.batch_max_items - items) / self._items_per_entry
            count = max(1, min(opts.batch_size - len(batch), int(room)))
            resp = await self.client.xreadgroup(
                GROUP, self.name, {self.stream: ">"}, count=count, block=block
            )
            if not resp:
                break  # idle (or the interval is over): what we have goes now
            for _stream, entries in resp:
                for eid, fields in entries:
                    batch.append(
                        Entry(eid.decode() if isinstance(eid, bytes) else eid, dict(fields))
                    )
                    try:
                        items += int(fields.get(b"n", 1))
                    except ValueError:
                        items += 1
            if started is None:
                started = time.monotonic()
        if batch:
            self._last_flush = time.monotonic()
            self._items_per_entry = max(1.0, items / len(batch))
        return batch

    async def _process(self, batch: Sequence[Entry], stop: asyncio.Event) -> None:
        # Decoding a large batch takes long enough to stall the event loop, which the edge
        # shares in `weftline up` (and a decoder may block, e.g. Sentry reading a source map
        # on a cache miss): in a thread, the edge keeps answering between GIL switches.
        decoded, dead = await asyncio.to_thread(self._decode_batch, batch)
        await self._finish(decoded, dead, stop)

    def _decode_batch(
        self, batch: Sequence[Entry]
    ) -> tuple[list[tuple[Entry, list[Any]]], list[tuple[Entry, str]]]:
        """Each entry's rows (kept per entry, so a batch that fails to store can be split
        down to the entry that fails), and the entries that can never be decoded."""
        decoded: list[tuple[Entry, list[Any]]] = []
        dead: list[tuple[Entry, str]] = []
        for entry in batch:
            if entry.deliveries > self.opts.max_deliveries:
                dead.append((entry, f"delivered {entry.deliveries} times without being stored"))
                continue
            try:
                decoded.append((entry, list(self.handler.decode(entry))))
            except DecodeError as e:
                dead.append((entry, e.reason))
            except Exception as e:  # a decoder bug must not stop the stream
                dead.append((entry, f"decoder failed: {type(e).__name__}: {e}"))
        return decoded, dead

    async def _finish(
        self,
        decoded: list[tuple[Entry, list[Any]]],
        dead: list[tuple[Entry, str]],
        stop: asyncio.Event,
    ) -> None:
        if dead:
            await self._retry(stop, "dead-letter", lambda: self._dead_letter(dead), decoded)
        poison = await self._store(decoded, stop)
        if poison:
            await self._retry(stop, "dead-letter", lambda: self._dead_letter(poison), decoded)
            bad = {e.id for e, _ in poison}
            decoded = [(e, rows) for e, rows in decoded if e.id not in bad]
        good = [e.id for e, _ in decoded]
        items = sum(entry_items(e.fields) for e, _ in decoded)
        await self._after_store(decoded, stop)
        await self._retry(
            stop,
            "ack",
            lambda: ack_and_delete(self.client, self.stream, good, items=items),
            decoded,
        )
        PROCESSED.labels(self.kind).inc(len(good))
        count(self.kind, Outcome.STORED, items)
        self.stats.batches += 1
        self.stats.entries += len(good)

    async def _store(
        self, part: list[tuple[Entry, list[Any]]], stop: asyncio.Event
    ) -> list[tuple[Entry, str]]:
        """Store the rows of `part`; on an error the same rows will always hit, split it in
        halves until the entry that fails alone is found. Returns those entries (for the
        DLQ) with their error; every other entry's rows are stored. Transient errors (a
        full disk, ClickHouse away) are retried here with backoff, never dead-lettered."""
        rows = [r for _, entry_rows in part for r in entry_rows]
        if not rows:
            return []
        ids = [e.id for e, _ in part]
        token = f"{self.kind}:{ids[0]}:{ids[-1]}:{len(ids)}"
        try:
            await self._retry(stop, "store", lambda: self.handler.store(rows, token), part)
            return []
        except _Poison as p:
            if len(part) == 1:
                return [(part[0][0], f"cannot be stored: {p.error}")]
            self.stats.splits += 1
            mid = len(part) // 2
            return await self._store(part[:mid], stop) + await self._store(part[mid:], stop)

    async def _after_store(
        self, decoded: list[tuple[Entry, list[Any]]], stop: asyncio.Event
    ) -> None:
        """Side effects of stored rows. The rows are stored, so an entry whose side effect
        can never succeed is logged and counted, not dead-lettered or retried forever."""
        rows = [r for _, entry_rows in decoded for r in entry_rows]
        if not rows:
            return
        try:
            await self._retry(stop, "after-store", lambda: self.handler.after_store(rows), decoded)
        except _Poison:
            for entry, entry_rows in decoded:
                if not entry_rows:
                    continue
                try:
                    await self._retry(
                        stop,
                        "after-store",
                        lambda r=entry_rows: self.handler.after_store(r),
                        [(entry, entry_rows)],
                    )
                except _Poison as p:
                    self.stats.side_effect_failures += 1
                    log.warning(
                        "%s worker %s: entry %s stored, its side effects failed: %s",
                        self.kind,
                        self.name,
                        entry.id,
                        p.error,
                    )

    async def _retry(
        self,
        stop: asyncio.Event,
        what: str,
        op: Callable[[], Awaitable[Any]],
        holding: Sequence[tuple[Entry, Any]] = (),
    ) -> None:
        """Retry `op` with backoff until it succeeds, while its error is transient.
        A permanent error (`is_permanent`) raises `_Poison` at once for the caller to
        split the batch. Stopping does not skip it: the batch in hand is finished (a hard
        kill leaves it pending instead, which is also safe). While retrying, the entries
        in `holding` are re-claimed now and then so no other worker claims them (which
        would count a delivery each time and, during a long outage, dead-letter them)."""
        backoff = self.opts.backoff_initial
        attempts = 0
        touched = time.monotonic()
        while True:
            try:
                await op()
                return
            except (DecodeError, asyncio.CancelledError):
                raise
            except Exception as e:
                if what in ("store", "after-store") and is_permanent(e):
                    raise _Poison(f"{type(e).__name__}: {e}") from e
                attempts += 1
                self.stats.store_retries += 1
                self._note_error(e)
                if stop.is_set() and attempts >= 3:
                    # Shutting down and still failing: leave the entries pending for
                    # the next worker rather than hanging the shutdown.
                    raise _Abandon(what) from e
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.opts.backoff_max)
                if holding and time.monotonic() - touched > self.opts.claim_idle_ms / 3000:
                    touched = time.monotonic()
                    await self._keep([e.id for e, _ in holding])

    async def _keep(self, ids: list[str]) -> None:
        """XCLAIM … JUSTID resets the entries' idle time without counting a delivery."""
        try:
            await self.client.xclaim(self.stream, GROUP, self.name, 0, ids, justid=True)
        except (RedisError, OSError) as e:
            self._note_error(e)

    async def _dead_letter(self, dead: list[tuple[Entry, str]]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for entry, reason in dead:
            fields = dlq_fields(entry.fields)
            fields.update(
                {
                    b"reason": scrub_text(reason).encode()[:2000],  # may quote the input
                    b"source_id": entry.id,
                    b"deliveries": entry.deliveries,
                    b"dead_at": int(time.time() * 1000),
                }
            )
            pipe.xadd(self.dlq, fields, maxlen=DLQ_MAXLEN, approximate=True)
        ids = [e.id for e, _ in dead]
        pipe.xack(self.stream, GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        items = sum(entry_items(e.fields) for e, _ in dead)
        if items:
            pipe.decrby(backlog_items_key(self.stream), items)
        await pipe.execute()
        for entry, reason in dead:  # counted once the move is done, not per attempt
            DEAD_LETTERED.labels(self.kind, dlq_label(reason)).inc()
            count(self.kind, Outcome.DEAD_LETTERED, entry_items(entry.fields), dlq_label(reason))
        self.stats.dead += len(dead)
        log.warning("%s worker %s: %d entries dead-lettered", self.kind, self.name, len(dead))


def dlq_fields(fields: dict[bytes, bytes]) -> dict[Any, Any]:
    """An entry as the DLQ keeps it: PII scrubbed like stored rows. Text payloads are
    scrubbed by pattern (keys, card numbers, credentials, secret query parameters); a
    binary one (protobuf, tracker batches) cannot be scrubbed without decoding it, so
    only its size and digest are kept. The client address is not kept."""
    out: dict[Any, Any] = {k: v for k, v in fields.items() if k not in (b"ip", b"p")}
    payload = fields.get(b"p")
    if payload is not None:
        try:
            out[b"p"] = scrub_text(payload.decode("utf-8")).encode()
        except UnicodeDecodeError:
            out[b"p"] = b""
            out[b"p_dropped"] = f"{len(payload)} bytes of binary, not kept (not scrubbable)"
            out[b"p_sha256"] = hashlib.sha256(payload).hexdigest()
    return out


def dlq_label(reason: str) -> DeadReason:
    """The metric label of a DLQ reason: a fixed set, never text a client could choose."""
    if reason.startswith("delivered "):
        return DeadReason.DELIVERIES
    if reason.startswith("cannot be stored"):
        return DeadReason.STORE
    if reason.startswith("decoder failed"):
        return DeadReason.DECODER_BUG
    return DeadReason.DECODE


class _Poison(Exception):
    """The rows in hand hit a permanent error (`is_permanent`)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class _Abandon(RedisError):
    """Raised during shutdown when the batch in hand cannot be finished; the loop
    treats it like a Valkey error and exits because stop is set."""
