"""Request limits: body size, decompressed size, per-project rate.

`read_decoded_body` is the one way an ingest route gets its body: read with a limit,
then decompressed with a bound on the output. A route calls it only once the caller's
key has been checked."""

from __future__ import annotations

import time
import zlib

from starlette.requests import Request

from weftline.ground.rejections import Reason, Rejected


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; a larger body is refused before it is all read."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Rejected(Reason.BODY_TOO_LARGE, f"body of {length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(Reason.BODY_TOO_LARGE, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_decoded_body(
    request: Request, max_body: int, max_decompressed: int, encoding: str | None = None
) -> bytes:
    """The body, at most `max_body` bytes on the wire and `max_decompressed` once its
    Content-Encoding (or `encoding`, when the route normalised it) is undone."""
    raw = await read_body(request, max_body)
    if encoding is None:
        encoding = request.headers.get("content-encoding")
    return decompress(raw, encoding, max_decompressed)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding with a bound on the output, so a small bomb stays small."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if enc != "deflate" else 15  # 47: gzip or zlib header, auto-detected
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, limit + 1)
            if len(out) > limit or d.unconsumed_tail:
                raise Rejected(
                    Reason.DECOMPRESSED_TOO_LARGE, f"decompressed body exceeds {limit} bytes"
                )
            out += d.flush()
        except zlib.error as e:
            if enc == "deflate":  # some clients send raw deflate without a zlib header
                return _raw_deflate(body, limit)
            raise Rejected(Reason.BAD_ENCODING, f"cannot decompress {enc} body: {e}") from e
        if len(out) > limit:
            raise Rejected(
                Reason.DECOMPRESSED_TOO_LARGE, f"decompressed body exceeds {limit} bytes"
            )
        return out
    if enc == "br":
        return _brotli(body, limit)
    raise Rejected(Reason.UNSUPPORTED_ENCODING, f"unsupported Content-Encoding {enc!r}")


def _raw_deflate(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise Rejected(Reason.BAD_ENCODING, f"cannot decompress deflate body: {e}") from e
    if len(out) > limit or d.unconsumed_tail:
        raise Rejected(Reason.DECOMPRESSED_TOO_LARGE, f"decompressed body exceeds {limit} bytes")
    return out


def _brotli(body: bytes, limit: int) -> bytes:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError as e:
        raise Rejected(Reason.UNSUPPORTED_ENCODING, "br bodies need the brotli package") from e
    d = brotli.Decompressor()
    out = bytearray()
    try:
        # Feed in slices so the output bound is checked as it grows.
        for i in range(0, len(body), 4096):
            out += d.process(body[i : i + 4096])
            if len(out) > limit:
                raise Rejected(
                    Reason.DECOMPRESSED_TOO_LARGE, f"decompressed body exceeds {limit} bytes"
                )
    except brotli.error as e:
        raise Rejected(Reason.BAD_ENCODING, f"cannot decompress br body: {e}") from e
    return bytes(out)


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
