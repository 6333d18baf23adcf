-- Spans from every source: OTLP (traces) and Sentry (transactions and span items).
-- One row per span. ReplacingMergeTree on the sort key collapses a span stored twice
-- (worker redelivery or an exporter retrying the same request).
CREATE TABLE IF NOT EXISTS ${db}.spans
(
    project_id          UInt32,
    source              LowCardinality(String),            -- otlp | sentry
    trace_id            String,                             -- 32 lowercase hex
    span_id             String,                             -- 16 lowercase hex
    parent_span_id      String,
    name                String,
    kind                LowCardinality(String),            -- server|client|internal|producer|consumer|unspecified
    op                  LowCardinality(String),            -- Sentry op (http.client, db, ...)
    status_code         LowCardinality(String),            -- unset|ok|error
    status_message      String,
    service_name        LowCardinality(String),
    start_time          DateTime64(9, 'UTC'),
    duration_ns         UInt64,
    resource_attributes Map(LowCardinality(String), String),
    attributes          Map(LowCardinality(String), String),
    event_times         Array(DateTime64(9, 'UTC')),
    event_names         Array(String),
    event_attributes    Array(Map(String, String)),
    link_trace_ids      Array(String),
    link_span_ids       Array(String),
    link_attributes     Array(Map(String, String)),
    session_id          String,                             -- OpenReplay / session.id, when known
    received_at         DateTime64(3, 'UTC'),
    retention_days      UInt16 DEFAULT 30,
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(start_time)
ORDER BY (project_id, service_name, name, toDateTime(start_time), trace_id, span_id)
TTL toDateTime(start_time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
