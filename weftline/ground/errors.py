"""The error every decoder raises for input that can never become rows.

The edge uses it to answer 400 and the workers to dead-letter the entry, so it lives
below both."""

from __future__ import annotations


class DecodeError(Exception):
    """The entry can never be turned into rows; it goes to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
