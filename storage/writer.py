"""Batched, idempotent inserts of a worker batch into several tables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from weftline.ground.metrics import INSERT_ROWS, INSERT_SECONDS, STORE_FAILURES
from weftline.storage.clickhouse import ClickHouse


async def write_tables(
    ch: ClickHouse,
    by_table: dict[str, list[dict[str, Any]]],
    token: str,
    order: Sequence[str] = (),
) -> None:
    """Insert each table's rows with a per-table dedup token (the batch identity), tables
    in `order` first. Raises on the first failure: the caller retries the whole batch, and
    the tokens (plus each table's ReplacingMergeTree key) make the tables already written
    ignore the retry."""
    tables = [t for t in order if t in by_table] + sorted(t for t in by_table if t not in order)
    for table in tables:
        data = by_table[table]
        if not data:
            continue
        started = time.perf_counter()
        try:
            await asyncio.to_thread(ch.insert, table, data, f"{token}:{table}")
        except Exception:
            STORE_FAILURES.labels(table).inc()
            raise
        INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
        INSERT_ROWS.labels(table).observe(len(data))
