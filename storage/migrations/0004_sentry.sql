-- Sentry errors (event items that are not transactions), one row per event.
-- ReplacingMergeTree keyed by the event id (the SDK's own id; the envelope header wins):
-- a redelivered batch, or an SDK resending the same event, collapses under FINAL.
-- Issue groups are not a table of counters: count, first/last seen and users affected
-- are aggregated from these rows (uniqExact over event_id), so redelivery cannot
-- double-count them. group_id is a pure function of the event (enrich/sentry_grouping.py).
CREATE TABLE IF NOT EXISTS ${db}.sentry_errors
(
    project_id             UInt32,
    event_id               String,
    group_id               String,
    timestamp              DateTime64(3, 'UTC'),
    received_at            DateTime64(3, 'UTC'),
    level                  LowCardinality(String),
    platform               LowCardinality(String),
    event_type             LowCardinality(String),              -- error | default | feedback
    title                  String,
    culprit                String,
    message                String,
    exception_types        Array(String),
    exception_values       Array(String),
    exceptions             String CODEC(ZSTD(3)),               -- JSON: chain with frames, oldest first
    handled                Int8,                                -- 1 | 0 | -1 unknown
    logger                 String,
    transaction            String,
    release                LowCardinality(String),
    dist                   String,
    environment            LowCardinality(String),
    server_name            String,
    user_id                String,
    user_email             String,
    user_username          String,
    user_ip                String,
    user_key               String,                              -- for "users affected"
    tags                   Map(String, String),
    contexts               String CODEC(ZSTD(3)),
    request_url            String,
    request_method         LowCardinality(String),
    request                String CODEC(ZSTD(3)),
    breadcrumbs            String CODEC(ZSTD(3)),
    sdk_name               LowCardinality(String),
    sdk_version            LowCardinality(String),
    trace_id               String,
    span_id                String,
    replay_id              String,
    openreplay_session_id  String,
    openreplay_session_url String,
    openreplay_session_token String,
    fingerprint            Array(String),
    grouping_variant       LowCardinality(String),
    grouping_config        LowCardinality(String),
    payload                String CODEC(ZSTD(3)),               -- the scrubbed event JSON
    retention_days         UInt16 DEFAULT 30,
    INDEX idx_event event_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_or_session openreplay_session_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, group_id, timestamp, event_id)
TTL toDateTime(timestamp) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- Issue status set through the API. The newest `version` wins; "regressed" is derived
-- at read time (a resolved group with an event received after it was resolved).
CREATE TABLE IF NOT EXISTS ${db}.sentry_issue_status
(
    project_id  UInt32,
    group_id    String,
    status      LowCardinality(String),                         -- unresolved | resolved | ignored
    updated_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project_id, group_id);

-- Release health: `session` updates and `sessions` aggregates. row_uid = stream entry id
-- + item position, so a redelivered entry collapses.
CREATE TABLE IF NOT EXISTS ${db}.sentry_sessions
(
    project_id   UInt32,
    row_uid      String,
    kind         LowCardinality(String),                        -- session | aggregate
    session_id   String,
    distinct_id  String,
    status       LowCardinality(String),
    init         UInt8,
    errors       UInt32,
    started      DateTime64(3, 'UTC'),
    timestamp    DateTime64(3, 'UTC'),
    duration     Nullable(Float64),
    release      LowCardinality(String),
    environment  LowCardinality(String),
    exited       UInt32,
    errored      UInt32,
    crashed      UInt32,
    abnormal     UInt32,
    received_at  DateTime64(3, 'UTC'),
    retention_days UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started)
ORDER BY (project_id, started, row_uid)
TTL toDateTime(started) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- What the SDKs dropped before sending (client_report items): data lost at the client.
CREATE TABLE IF NOT EXISTS ${db}.sentry_client_outcomes
(
    project_id   UInt32,
    row_uid      String,
    timestamp    DateTime64(3, 'UTC'),
    reason       LowCardinality(String),
    category     LowCardinality(String),
    quantity     UInt64,
    sdk          LowCardinality(String),
    received_at  DateTime64(3, 'UTC'),
    retention_days UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, timestamp, row_uid)
TTL toDateTime(timestamp) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- Items kept as sent: attachments, replays, profiles, check-ins, feedback, logs,
-- trace metrics and types this version does not know. Binary payloads are base64.
CREATE TABLE IF NOT EXISTS ${db}.sentry_items
(
    project_id      UInt32,
    row_uid         String,
    item_type       LowCardinality(String),
    event_id        String,
    trace_id        String,
    received_at     DateTime64(3, 'UTC'),
    content_type    LowCardinality(String),
    filename        String,
    attachment_type LowCardinality(String),
    size            UInt64,
    encoding        LowCardinality(String),                     -- utf8 | base64
    headers         String,
    payload         String CODEC(ZSTD(3)),
    retention_days  UInt16 DEFAULT 30,
    INDEX idx_event event_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (project_id, item_type, received_at, row_uid)
TTL toDateTime(received_at) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
