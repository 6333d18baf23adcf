"""Prometheus metrics shared by the edge, the workers and the writer."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)

ACCEPTED = Counter(
    "weftline_ingest_accepted_requests",
    "Requests accepted into the buffer",
    ["kind"],
    registry=REGISTRY,
)
ACCEPTED_ITEMS = Counter(
    "weftline_ingest_accepted_items",
    "Items (events, spans, messages) in accepted requests",
    ["kind"],
    registry=REGISTRY,
)
ITEMS = Counter(
    "weftline_items",
    "Items by kind and outcome (weftline.ground.outcomes): accepted = stored +"
    " deduplicated + dead_lettered + still in the stream; rejected counts requests",
    ["kind", "outcome", "reason"],
    registry=REGISTRY,
)
STREAM_ITEMS = Gauge(
    "weftline_stream_backlog_items",
    "Items in the entries still in the stream (accepted, not yet stored or dead-lettered)",
    ["kind"],
    registry=REGISTRY,
)
DEDUPLICATED = Counter(
    "weftline_ingest_deduplicated_requests",
    "Requests resent with an Idempotency-Key already seen: answered with the original"
    " entry id, not appended again",
    ["kind"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "weftline_ingest_rejected_requests",
    "Requests answered with 4xx/5xx, by reason",
    ["kind", "reason"],
    registry=REGISTRY,
)
PROCESSED = Counter(
    "weftline_worker_processed_entries",
    "Stream entries stored and acknowledged",
    ["kind"],
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "weftline_worker_dead_lettered_entries",
    "Stream entries moved to the DLQ",
    ["kind", "reason"],
    registry=REGISTRY,
)
STORE_FAILURES = Counter(
    "weftline_storage_insert_failures",
    "Failed inserts (retried with backoff)",
    ["table"],
    registry=REGISTRY,
)
INSERT_ROWS = Histogram(
    "weftline_storage_insert_batch_rows",
    "Rows per ClickHouse insert",
    ["table"],
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
    registry=REGISTRY,
)
INSERT_SECONDS = Histogram(
    "weftline_storage_insert_seconds",
    "ClickHouse insert latency",
    ["table"],
    registry=REGISTRY,
)
STREAM_LENGTH = Gauge(
    "weftline_stream_backlog_entries",
    "Entries in the stream not yet stored (accepted, un-acknowledged)",
    ["kind"],
    registry=REGISTRY,
)
STREAM_PENDING = Gauge(
    "weftline_stream_pending_entries",
    "Entries delivered to a worker and not yet acknowledged",
    ["kind"],
    registry=REGISTRY,
)
STREAM_LAG = Gauge(
    "weftline_stream_lag_entries",
    "Entries not yet delivered to the consumer group",
    ["kind"],
    registry=REGISTRY,
)
STREAM_OLDEST_AGE = Gauge(
    "weftline_stream_oldest_entry_age_seconds",
    "Age of the oldest entry still in the stream",
    ["kind"],
    registry=REGISTRY,
)
STREAM_STALLED = Gauge(
    "weftline_stream_stalled_seconds",
    "How long the stream's oldest entry has stayed the oldest (a worker stuck on a batch);"
    " /readyz fails past stream_stall_seconds",
    ["kind"],
    registry=REGISTRY,
)
DLQ_LENGTH = Gauge(
    "weftline_dlq_entries",
    "Entries in the dead-letter stream",
    ["kind"],
    registry=REGISTRY,
)
DISK_FREE = Gauge(
    "weftline_disk_free_bytes",
    "Free bytes on the file system of each embedded data folder (valkey, clickhouse)",
    ["folder"],
    registry=REGISTRY,
)
DISK_RESERVE = Gauge(
    "weftline_disk_reserve_bytes",
    "Free bytes each data folder must keep; below it the edge refuses new data (503)",
    ["folder"],
    registry=REGISTRY,
)
REPLAY_SESSIONS_STARTED = Counter(
    "weftline_replay_sessions_started",
    "OpenReplay tracker starts answered, new sessions or continued ones",
    ["mode"],
    registry=REGISTRY,
)
REPLAY_MESSAGES = Counter(
    "weftline_replay_messages_decoded",
    "Tracker messages decoded by the replay worker",
    registry=REGISTRY,
)
REPLAY_SESSIONS_ENDED = Counter(
    "weftline_replay_sessions_ended",
    "Sessions closed by the session ender after inactivity",
    registry=REGISTRY,
)
ALERT_EVALUATIONS = Counter(
    "weftline_alert_evaluations",
    "Alert rule evaluations by outcome (ok, error, skipped: its tables do not exist)",
    ["rule", "outcome"],
    registry=REGISTRY,
)
ALERT_NOTIFICATIONS = Counter(
    "weftline_alert_notifications",
    "Webhook notifications sent by the alert loop, by receiver and outcome",
    ["receiver", "outcome"],
    registry=REGISTRY,
)
ALERTS_FIRING = Gauge(
    "weftline_alerts_firing",
    "Alert instances firing, per rule (as seen by the leader)",
    ["rule"],
    registry=REGISTRY,
)
ALERT_LEADER = Gauge(
    "weftline_alert_leader",
    "1 while this process holds the alert loop's leader lock",
    registry=REGISTRY,
)
OTLP_REJECTED_RECORDS = Counter(
    "weftline_otlp_rejected_records",
    "OTLP spans, log records and metric data points answered in partial_success, by reason",
    ["signal", "reason"],
    registry=REGISTRY,
)
SENTRY_ITEMS = Counter(
    "weftline_sentry_items",
    "Sentry envelope items processed, by item type and what was done with them"
    " (stored | raw | unknown | invalid)",
    ["type", "outcome"],
    registry=REGISTRY,
)
SENTRY_CLIENT_DISCARDED = Counter(
    "weftline_sentry_client_discarded",
    "Items the Sentry SDKs report they dropped (client_report items), by reason and category",
    ["reason", "category"],
    registry=REGISTRY,
)
SENTRY_ENCODINGS = Counter(
    "weftline_sentry_request_encodings",
    "Accepted Sentry requests by Content-Encoding (identity, gzip, br, deflate)",
    ["encoding"],
    registry=REGISTRY,
)
SOURCEMAP_UPLOADS = Counter(
    "weftline_sourcemap_uploads",
    "Source map / minified file uploads by outcome (stored, or the 4xx reason)",
    ["outcome"],
    registry=REGISTRY,
)
SOURCEMAP_FRAMES = Counter(
    "weftline_sourcemap_frames",
    "Minified JavaScript frames seen by the Sentry worker, by outcome"
    " (symbolicated | no_map | no_token | bad_map | lookup_error)",
    ["outcome"],
    registry=REGISTRY,
)
SOURCEMAP_CACHE = Counter(
    "weftline_sourcemap_cache",
    "Source map cache lookups in the Sentry worker (hit | miss)",
    ["result"],
    registry=REGISTRY,
)

# The process itself (process_cpu_seconds_total, process_resident_memory_bytes,
# process_open_fds, …, python_info), as every Prometheus client exposes by default; our
# registry is our own, so they are registered here.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

HTTP_REQUEST_SECONDS = Histogram(
    "weftline_http_request_duration_seconds",
    "HTTP requests by route template (`/api/v1/issues/{group_id}`, `unmatched` for no route),"
    " method and status code",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
