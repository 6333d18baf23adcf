"""Sentry envelopes: bytes → headers and items. Pure, no I/O; fuzzed in tests.

Grammar (Sentry develop docs, Relay `Item::parse`):

    Envelope = Headers { "\\n" Item } [ "\\n" ]
    Item     = Headers "\\n" Payload

Lenient where the real SDKs differ: an item header with `length` takes exactly that
many bytes (the next byte must be `\\n` or the end); without `length` the payload runs
to the next `\\n` (the browser SDK omits `length` and the final newline). Blank lines
between items are skipped, as Relay's stream reader skips whitespace.

Every malformed input raises `EnvelopeError` (a `DecodeError`, so a worker sends it to
the DLQ and the edge answers 400 with the reason).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from weftline.ground.errors import DecodeError

MAX_ITEMS = 10_000


def skip_blank(data: bytes, pos: int) -> int:
    """The first non-whitespace position from `pos`. Blank lines are skipped 64 KiB at a
    time at C speed: a body of 20 M newlines is a few hundred steps, not 20 M turns of
    the item loop, and never one long step (the parser runs in a thread of the edge,
    which must leave the GIL to the event loop now and then)."""
    end = len(data)
    while pos < end:
        chunk = data[pos : pos + 65536]
        rest = chunk.lstrip()
        pos += len(chunk) - len(rest)
        if rest:
            return pos
    return end


MAX_HEADER_BYTES = 64 * 1024


class EnvelopeError(DecodeError):
    """The bytes are not a Sentry envelope (or an item payload is not what its type says)."""


# The data category of each item type: what X-Sentry-Rate-Limits and client reports name
# (sentry_sdk/envelope.py `data_category`, @sentry/core DATA_CATEGORY_OVERRIDES).
CATEGORY_OF_TYPE = {
    "event": "error",
    "transaction": "transaction",
    "span": "span",
    "log": "log_item",
    "trace_metric": "trace_metric",
    "metric": "trace_metric",
    "attachment": "attachment",
    "session": "session",
    "sessions": "session",
    "client_report": "internal",
    "user_report": "default",
    "feedback": "feedback",
    "profile": "profile",
    "profile_chunk": "profile_chunk",
    "replay_event": "replay",
    "replay_recording": "replay",
    "replay_video": "replay",
    "check_in": "monitor",
    "raw_security": "security",
    "statsd": "metric_bucket",
    "metric_buckets": "metric_bucket",
}

# Types whose payload is one JSON document the worker reads.
JSON_TYPES = frozenset(
    {
        "event",
        "transaction",
        "span",
        "log",
        "trace_metric",
        "session",
        "sessions",
        "client_report",
        "user_report",
        "feedback",
        "check_in",
        "replay_event",
    }
)
# Container items: `{"version":2,"items":[…]}` with `item_count` in the header.
CONTAINER_TYPES = frozenset({"span", "log", "trace_metric"})


@dataclass(frozen=True)
class Item:
    headers: Mapping[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    @property
    def category(self) -> str:
        return CATEGORY_OF_TYPE.get(self.type, self.type or "default")


@dataclass(frozen=True)
class Envelope:
    headers: Mapping[str, Any]
    items: tuple[Item, ...]

    @property
    def event_id(self) -> str | None:
        return normalize_event_id(self.headers.get("event_id"))


def normalize_event_id(raw: Any) -> str | None:
    """32 lowercase hex (a dashed UUID is accepted and undashed); anything else is None."""
    if not isinstance(raw, str):
        return None
    s = raw.replace("-", "").lower()
    if len(s) != 32 or any(c not in "0123456789abcdef" for c in s):
        return None
    return s


def _header(line: bytes, what: str) -> dict[str, Any]:
    if len(line) > MAX_HEADER_BYTES:
        raise EnvelopeError(f"{what} is longer than {MAX_HEADER_BYTES} bytes")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise EnvelopeError(f"{what} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError(f"{what} is not a JSON object")
    return obj


def parse_envelope(data: bytes) -> Envelope:
    """Split an envelope into its headers and items (item payloads stay bytes)."""
    end = len(data)
    if skip_blank(data, 0) >= end:
        raise EnvelopeError("empty envelope")
    nl = data.find(b"\n")
    first = data if nl < 0 else data[:nl]
    headers = _header(first.strip(), "envelope header")
    pos = end if nl < 0 else nl + 1
    items: list[Item] = []
    while pos < end:
        pos = skip_blank(data, pos)
        if pos >= end:
            break
        nl = data.find(b"\n", pos)
        line_end = end if nl < 0 else nl
        line = data[pos:line_end]
        ih = _header(line.strip(), f"header of item {len(items)}")
        itype = ih.get("type")
        if not isinstance(itype, str) or not itype:
            raise EnvelopeError(f"item {len(items)} has no type")
        pos = line_end + 1  # past the header's newline (or past the end)
        length = ih.get("length")
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise EnvelopeError(f"item {len(items)} has a bad length {length!r}")
            if pos + length > end:
                raise EnvelopeError(
                    f"item {len(items)} ({itype}): unexpected end of envelope, "
                    f"{length} bytes announced, {max(0, end - pos)} present"
                )
            payload = data[pos : pos + length]
            pos += length
            if pos < end:
                if data[pos : pos + 1] != b"\n":
                    raise EnvelopeError(
                        f"item {len(items)} ({itype}): missing newline after payload"
                    )
                pos += 1
        else:
            nl = data.find(b"\n", pos) if pos < end else -1
            stop = end if nl < 0 else nl
            payload = data[pos:stop] if pos < end else b""
            pos = stop + 1
        items.append(Item(ih, payload))
        if len(items) > MAX_ITEMS:
            raise EnvelopeError(f"more than {MAX_ITEMS} items")
    return Envelope(headers, tuple(items))


def _no_nan(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def loads_json(payload: bytes, what: str) -> Any:
    """JSON, tolerating the NaN/Infinity literals Python clients can emit (they become null)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    try:
        return _no_nan(json.loads(payload))
    except (ValueError, RecursionError) as e:
        raise EnvelopeError(f"{what} is not JSON: {str(e)[:200]}") from None


def item_json(item: Item, index: int = 0) -> dict[str, Any]:
    """The payload of a JSON item as an object."""
    obj = loads_json(item.payload, f"item {index} ({item.type}) payload")
    if not isinstance(obj, dict):
        raise EnvelopeError(f"item {index} ({item.type}) payload is not a JSON object")
    return obj


def container_items(item: Item, index: int = 0) -> list[dict[str, Any]]:
    """Entries of a v2 container (`span`, `log`, `trace_metric`); a legacy single-span
    `span` item is one entry. `item_count`, when given, must match (Relay rejects a
    mismatch as an invalid envelope)."""
    obj = item_json(item, index)
    entries = obj.get("items") if "items" in obj else None
    if entries is None:
        if item.type == "span":
            entries = [obj]
        else:
            raise EnvelopeError(f"item {index} ({item.type}) has no items list")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EnvelopeError(f"item {index} ({item.type}) items is not a list of objects")
    count = item.headers.get("item_count")
    if count is not None and count != len(entries):
        raise EnvelopeError(
            f"item {index} ({item.type}): item_count {count!r} but {len(entries)} entries"
        )
    return entries


def serialize_envelope(headers: Mapping[str, Any], items: list[tuple[dict, bytes]]) -> bytes:
    """Envelope bytes with `length` on every item (used to wrap legacy /store/ bodies)."""
    out = [orjson.dumps(dict(headers))]
    for h, payload in items:
        out.append(orjson.dumps({**h, "length": len(payload)}))
        out.append(payload)
    return b"\n".join(out) + b"\n"
