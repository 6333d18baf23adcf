"""OTLP worker: a stream entry (one export request, protobuf) → `spans` (plus the GenAI
tables, weftline.enrich.genai), `logs` or metric rows (weftline.enrich.otlp_metrics).

Spans keep their protocol ids, logs get a content-derived id (see `logs_of`), so both a
redelivered entry and an exporter retrying the same request collapse under FINAL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from weftline.enrich import live
from weftline.enrich import otlp_decode as od
from weftline.enrich.genai import genai_rows
from weftline.enrich.links import with_links
from weftline.enrich.otlp_metrics import decode_metrics
from weftline.enrich.stream_consumer import DecodeError, Entry
from weftline.ground.times import ch_ms
from weftline.storage.clickhouse import ClickHouse
from weftline.storage.writer import write_tables

Row = tuple[str, dict[str, Any]]  # (table, columns)


def span_row(
    s: od.SpanRecord, project_id: int, received: str, retention_days: int
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "source": "otlp",
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "name": s.name,
        "kind": s.kind,
        "op": "",
        "status_code": s.status_code,
        "status_message": s.status_message,
        "service_name": s.service_name,
        "start_time": od.ns_text(s.start_ns),
        "duration_ns": s.duration_ns,
        "resource_attributes": s.resource_attributes,
        "attributes": s.attributes,
        "event_times": [od.ns_text(t) for t in s.event_times_ns],
        "event_names": s.event_names,
        "event_attributes": s.event_attributes,
        "link_trace_ids": s.link_trace_ids,
        "link_span_ids": s.link_span_ids,
        "link_attributes": s.link_attributes,
        "session_id": s.session_id,
        "received_at": received,
        "retention_days": retention_days,
    }


def log_row(r: od.LogRow, project_id: int, received: str, retention_days: int) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "log_uid": r.log_uid,
        "timestamp": od.ns_text(r.time_ns),
        "observed_timestamp": od.ns_text(r.observed_ns),
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": r.body,
        "trace_id": r.trace_id,
        "span_id": r.span_id,
        "flags": r.flags,
        "service_name": r.service_name,
        "scope_name": r.scope_name,
        "scope_version": r.scope_version,
        "event_name": r.event_name,
        "resource_attributes": r.resource_attributes,
        "attributes": r.attributes,
        "session_id": r.session_id,
        "received_at": received,
        "retention_days": retention_days,
    }


def decode_otlp_entry(fields: Mapping[bytes, bytes], retention_days: int = 30) -> list[Row]:
    """Pure: one stream entry → rows for `spans` or `logs`."""
    try:
        project_id = int(fields[b"project"])
        received_ms = int(fields[b"received_at"])
        signal = fields[b"sig"].decode()
        payload = fields[b"p"]
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        raise DecodeError(f"bad entry metadata: {type(e).__name__}: {e}") from None
    received = ch_ms(received_ms)
    try:
        if signal == "traces":
            spans = od.decode_traces(payload, "protobuf")
            rows: list[Row] = [
                ("spans", span_row(s, project_id, received, retention_days)) for s in spans.records
            ]
            # GenAI agent runs, model and tool calls: their own tables, for the agents reads.
            return rows + genai_rows(spans.records, project_id, received, retention_days)
        if signal == "logs":
            logs = od.decode_logs(payload, "protobuf", received_ms * 1_000_000)
            return [
                ("logs", log_row(r, project_id, received, retention_days)) for r in logs.records
            ]
        if signal == "metrics":
            return decode_metrics(payload, project_id, received, retention_days).records
    except od.OtlpDecodeError as e:
        raise DecodeError(e.reason) from None
    raise DecodeError(f"unknown OTLP signal {signal!r}")


class OtlpHandler:
    kind = "otlp"

    def __init__(
        self,
        ch: ClickHouse,
        retention_of: Callable[[int], int],
        client: aioredis.Redis | None = None,
    ) -> None:
        self.ch = ch
        self.retention_of = retention_of
        self.client = client

    def decode(self, entry: Entry) -> list[Row]:
        try:
            project_id = int(entry.fields.get(b"project", b"0"))
        except ValueError:
            project_id = 0
        return decode_otlp_entry(entry.fields, self.retention_of(project_id))

    async def store(self, rows: list[Row], token: str) -> None:
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, data in rows:
            by_table.setdefault(table, []).append(data)
        await write_tables(self.ch, with_links(by_table), token)

    async def after_store(self, rows: list[Row]) -> None:
        if self.client is not None:
            await live.publish(
                self.client,
                ((r["project_id"], live.span_item(r)) for t, r in rows if t == "spans"),
            )
