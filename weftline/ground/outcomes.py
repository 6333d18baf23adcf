"""Every item has exactly one fate (Sentry Relay's rule): one enum of outcomes shared by
the edge and the workers, counted per kind in `weftline_items_total`.

- accepted: in a request answered 2xx (appended, or a resend answered with its entry);
- deduplicated: in a resend with a known Idempotency-Key, so not appended again;
- stored: in an entry stored in ClickHouse and acknowledged;
- dead_lettered: in an entry moved to the DLQ, with a `DeadReason`;
- rejected: a request answered 4xx/5xx, with its `Reason` (counted per request: its items
  are not known before it is parsed).

So for every kind, after any fault: accepted = stored + deduplicated + dead_lettered +
still in the stream (`weftline_stream_backlog_items`). Label values come only from these
enums, never from text a client chose.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from weftline.ground.metrics import ITEMS


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DEDUPLICATED = "deduplicated"
    STORED = "stored"
    DEAD_LETTERED = "dead_lettered"
    REJECTED = "rejected"


class DeadReason(StrEnum):
    DECODE = "decode"  # the entry can never be decoded
    DELIVERIES = "deliveries"  # delivered max_deliveries times without being stored
    STORE = "store"  # ClickHouse refuses its rows permanently (a data error)
    DECODER_BUG = "decoder_bug"  # the decoder raised something unexpected


def count(kind: str, outcome: Outcome, n: int, reason: str = "") -> None:
    if n:
        ITEMS.labels(kind, outcome.value, str(reason)).inc(n)


def entry_items(fields: Mapping[bytes, bytes]) -> int:
    """Items in a stream entry, as the edge counted them (`n`); 0 for an entry written
    around the edge, which was never counted as accepted either."""
    try:
        return max(0, int(fields.get(b"n", b"0")))
    except ValueError:
        return 0
