"""Request limits: body size, decompressed size, per-project rate.

`read_decoded_body` is the one way an ingest route gets its body: read with a limit,
then decompressed with a bound on the output. A route calls it only once the caller's
key has been checked."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import orjson
from starlette.requests import Request

from weftline.ground.rejections import Reason, Rejected

T = TypeVar("T")


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; a larger body is refused before it is all read."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Rejected(Reason.BODY_TOO_LARGE, f"body of {length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    seconds = body_timeout(request)
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Rejected(Reason.BODY_TOO_LARGE, f"body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        # A body trickling in holds a connection and its buffer: it has a deadline too.
        raise Rejected(
            Reason.BODY_TIMEOUT, f"the body did not arrive within {seconds:g} s"
        ) from None
    return b"".join(chunks)


DEFAULT_BODY_TIMEOUT = 60.0


def body_timeout(request: Request) -> float:
    """`http_body_timeout_seconds` of the app serving the request."""
    runtime = getattr(getattr(request.scope.get("app"), "state", None), "runtime", None)
    settings = getattr(runtime, "settings", None)
    return float(getattr(settings, "http_body_timeout_seconds", DEFAULT_BODY_TIMEOUT))


async def read_decoded_body(
    request: Request, max_body: int, max_decompressed: int, encoding: str | None = None
) -> bytes:
    """The body, at most `max_body` bytes on the wire and `max_decompressed` once its
    Content-Encoding (or `encoding`, when the route normalised it) is undone."""
    raw = await read_body(request, max_body)
    if encoding is None:
        encoding = request.headers.get("content-encoding")
    return await decompress_off_loop(raw, encoding, max_decompressed)


# Below this many compressed bytes, decompressing on the event loop costs less than the
# hop to a thread; above it a bomb could expand to the whole output bound (~50 ms of
# inflate for 20 MiB on a shared core), so it runs in a thread, which zlib and brotli
# leave for the loop (both release the GIL while they inflate).
INLINE_COMPRESSED_BYTES = 1024


async def decompress_off_loop(body: bytes, encoding: str | None, limit: int) -> bytes:
    if _identity(encoding) or len(body) <= INLINE_COMPRESSED_BYTES:
        return decompress(body, encoding, limit)
    return await off_loop(decompress, body, encoding, limit)


# Inflating and parsing request bodies get threads of their own, and only this many: a
# burst of bombs queues here instead of taking every core from the event loop (or the
# default executor's threads from the workers' ClickHouse calls).
BODY_THREADS = 2
_BODY_EXECUTOR = ThreadPoolExecutor(BODY_THREADS, thread_name_prefix="weftline-body")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a body thread (for work that leaves the GIL now and then)."""
    return await asyncio.get_running_loop().run_in_executor(_BODY_EXECUTOR, fn, *args)


def _identity(encoding: str | None) -> bool:
    return (encoding or "identity").strip().lower() in ("", "identity")


def _too_large(limit: int) -> Rejected:
    return Rejected(Reason.DECOMPRESSED_TOO_LARGE, f"decompressed body exceeds {limit} bytes")


class Inflater:
    """Undoes one Content-Encoding with a bound on the output: past `limit` bytes, 413.
    Every encoding has the bound (a 1.6 KB brotli body can expand to 1 GB)."""

    def __init__(self, encoding: str | None, limit: int) -> None:
        self.enc = (encoding or "identity").strip().lower()
        self.limit = limit
        self._br: Any = None
        if self.enc in ("", "identity", "gzip", "x-gzip", "deflate"):
            return
        if self.enc != "br":
            raise Rejected(
                Reason.UNSUPPORTED_ENCODING, f"unsupported Content-Encoding {self.enc!r}"
            )
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError as e:
            raise Rejected(Reason.UNSUPPORTED_ENCODING, "br bodies need the brotli package") from e
        self._br = brotli

    def _zlib(self, body: bytes, bound: int, strict: bool) -> bytes:
        wbits = 15 if self.enc == "deflate" else 47  # 47: gzip or zlib header, auto-detected
        for attempt in (wbits, -15):
            d = zlib.decompressobj(attempt)
            try:
                out = d.decompress(body, bound + 1)
                if strict and (len(out) > bound or d.unconsumed_tail):
                    raise _too_large(bound)
                if strict:
                    out += d.flush()
                    if len(out) > bound:
                        raise _too_large(bound)
                return out[: bound + 1]
            except zlib.error as e:
                if self.enc != "deflate" or attempt == -15:
                    raise Rejected(
                        Reason.BAD_ENCODING, f"cannot decompress {self.enc} body: {e}"
                    ) from e
                # some clients send raw deflate without a zlib header: try that next
        raise AssertionError("unreachable")

    def _brotli(self, body: bytes, bound: int, strict: bool) -> bytes:
        d = self._br.Decompressor()
        out = bytearray()
        try:
            # Slices of the input, the output buffer capped at what is left of the bound:
            # the decompressor never holds much more than the bound.
            for i in range(0, len(body), 4096):
                out += d.process(body[i : i + 4096], output_buffer_limit=bound - len(out) + 1)
                while len(out) <= bound and not d.can_accept_more_data():
                    out += d.process(b"", output_buffer_limit=bound - len(out) + 1)
                if len(out) > bound:
                    if strict:
                        raise _too_large(bound)
                    break
        except self._br.error as e:
            raise Rejected(Reason.BAD_ENCODING, f"cannot decompress br body: {e}") from e
        if strict and not d.is_finished():
            raise Rejected(Reason.BAD_ENCODING, "cannot decompress br body: it is truncated")
        return bytes(out)

    def all(self, body: bytes) -> bytes:
        """The whole decoded body; 413 past the bound, 400 when it does not decode."""
        if self.enc in ("", "identity"):
            if len(body) > self.limit:
                raise _too_large(self.limit)
            return body
        if self._br is not None:
            return self._brotli(body, self.limit, strict=True)
        return self._zlib(body, self.limit, strict=True)

    def head(self, body: bytes) -> bytes:
        """About the first `limit` decoded bytes (no error for a longer body)."""
        if self.enc in ("", "identity"):
            return body[: self.limit]
        if self._br is not None:
            return self._brotli(body, self.limit, strict=False)
        return self._zlib(body, self.limit, strict=False)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding with a bound on the output, so a small bomb stays small."""
    return Inflater(encoding, limit).all(body)


def first_line(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The first line of the decoded body, inflating about `limit` bytes at most: the
    Sentry edge reads an envelope's header line (which may hold its key) before it
    undoes the rest. No newline within `limit`: what was inflated, cut at `limit`."""
    head = Inflater(encoding, limit).head(body)
    nl = head.find(b"\n")
    return head[: nl if nl >= 0 else limit]


# A parse that holds the GIL (protobuf's C parser) blocks the event loop even in a thread:
# 5 MB of empty OTLP spans is 1.3 s of it. Large bodies of that kind are parsed in a
# separate process instead; spawned, not forked, since chDB and threads live in this one.
_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _lower_priority() -> None:
    # The parse process yields the CPU to the edge: a body of millions of empty spans
    # costs seconds of parsing, which must not take the core the event loop needs.
    with contextlib.suppress(OSError):
        os.nice(10)


def _pool() -> ProcessPoolExecutor:
    """One process: on a 2-core machine a second one would leave the loop no core while
    two large bodies are parsed (large bodies queue behind each other instead)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
            )
        return _POOL


async def run_isolated(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the parse process pool (`fn` importable, arguments picklable). A
    pool whose process died (killed for memory) is replaced and the request gets 503."""
    global _POOL
    pool = _pool()
    try:
        return await asyncio.wrap_future(pool.submit(fn, *args))
    except BrokenProcessPool:
        with _POOL_LOCK:
            if _POOL is pool:
                _POOL = None
        raise Rejected(
            Reason.PARSER_UNAVAILABLE,
            "the parser process stopped on this request; retry later",
            headers={"retry-after": "5"},
        ) from None


class RateLimiter:
    """Token bucket per project, in this process. With N API replicas the effective
    limit is N times the configured rate; a shared limit would cost a Valkey round trip
    per request."""

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}

    def check(self, project_id: int, rate: float, burst: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else seconds until a token is free."""
        cap = burst if burst is not None else max(rate, 1.0)
        now = time.monotonic()
        tokens, last = self._buckets.get(project_id, (cap, now))
        tokens = min(cap, tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[project_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[project_id] = (tokens, now)
        return (1.0 - tokens) / rate


# Routes that read their body themselves, each with its own bound (read_body,
# read_decoded_body, the source map upload): the middleware leaves them alone.
OWN_BODY_ROUTES = re.compile(
    r"^/(?:ingest/|v1/|api/v1/events$|api/v1/sourcemaps$|api/\d+/(?:envelope|store)/?$)"
)


class BodyLimit:
    """ASGI middleware: a bound on the body of every other route (API PATCHes, UI forms,
    admin queries): read up to `limit` bytes, replayed to the route, 413 beyond."""

    def __init__(self, app: Any, limit: int = 1024 * 1024) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or OWN_BODY_ROUTES.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _refuse(self, send: Any) -> None:
        payload = orjson.dumps(
            {"error": Reason.BODY_TOO_LARGE, "detail": f"body exceeds {self.limit} bytes"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Any], then: Any = None) -> Any:
    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()  # after the body: a disconnect, when it comes
        return {"type": "http.disconnect"}

    return receive
