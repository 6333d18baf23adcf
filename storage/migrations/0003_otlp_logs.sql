-- OTLP log records. log_uid is a hash of the record's content (with its resource and
-- scope) and its occurrence number in the request, so a redelivered stream entry and an
-- exporter retrying the same request both collapse to one row under FINAL.
CREATE TABLE IF NOT EXISTS ${db}.logs
(
    project_id          UInt32,
    log_uid             UInt64,
    timestamp           DateTime64(9, 'UTC'),
    observed_timestamp  DateTime64(9, 'UTC'),
    severity_number     UInt8,
    severity_text       LowCardinality(String),
    body                String CODEC(ZSTD(1)),
    trace_id            String,
    span_id             String,
    flags               UInt32,
    service_name        LowCardinality(String),
    scope_name          String,
    scope_version       LowCardinality(String),
    event_name          String,
    resource_attributes Map(LowCardinality(String), String),
    attributes          Map(LowCardinality(String), String),
    session_id          String,
    received_at         DateTime64(3, 'UTC'),
    retention_days      UInt16 DEFAULT 30,
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_body lower(body) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (project_id, service_name, toStartOfFiveMinutes(timestamp), timestamp, log_uid)
TTL toDateTime(timestamp) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- Trace id → time range. `spans` is sorted by service and name, so a trace cannot be
-- found by id without this: read min(start)/max(end) here, then read `spans` within
-- that range (the bloom filter on spans.trace_id prunes the rest). The view fires per
-- inserted block, so one trace may have several rows until merged; always aggregate.
-- Its own dedup window: a retried insert dropped in `spans` must not re-fire here.
CREATE TABLE IF NOT EXISTS ${db}.trace_times
(
    project_id     UInt32,
    trace_id       String,
    day            Date,
    start_time     SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    end_time       SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, trace_id, day)
TTL day + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.trace_times_mv TO ${db}.trace_times AS
SELECT
    project_id,
    trace_id,
    toDate(s) AS day,
    min(s) AS start_time,
    max(e) AS end_time,
    max(r) AS retention_days
FROM
(
    SELECT
        project_id,
        trace_id,
        start_time AS s,
        fromUnixTimestamp64Nano(toInt64(toUnixTimestamp64Nano(start_time) + duration_ns), 'UTC') AS e,
        retention_days AS r
    FROM ${db}.spans
    WHERE trace_id != ''
)
GROUP BY project_id, trace_id, day;

-- Session → traces: every trace with at least one span tied to a session (session.id
-- or an OpenReplay session attribute). Reading a session's traces then loads every
-- span of those traces, tied or not (a backend span rarely knows the session).
CREATE TABLE IF NOT EXISTS ${db}.session_traces
(
    project_id     UInt32,
    session_id     String,
    trace_id       String,
    day            Date,
    start_time     SimpleAggregateFunction(min, DateTime64(9, 'UTC')),
    end_time       SimpleAggregateFunction(max, DateTime64(9, 'UTC')),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, session_id, trace_id, day)
TTL day + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.session_traces_mv TO ${db}.session_traces AS
SELECT
    project_id,
    session_id,
    trace_id,
    toDate(s) AS day,
    min(s) AS start_time,
    max(e) AS end_time,
    max(r) AS retention_days
FROM
(
    SELECT
        project_id,
        session_id,
        trace_id,
        start_time AS s,
        fromUnixTimestamp64Nano(toInt64(toUnixTimestamp64Nano(start_time) + duration_ns), 'UTC') AS e,
        retention_days AS r
    FROM ${db}.spans
    WHERE session_id != '' AND trace_id != ''
)
GROUP BY project_id, session_id, trace_id, day;
