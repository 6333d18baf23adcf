-- OpenReplay tracker sessions (reference: shared/reference/openreplay.md).
-- Every table is a ReplacingMergeTree keyed by ids that do not change when a stream
-- entry is redelivered or the tracker resends identical bytes, so queries with FINAL
-- see each thing once.

-- One row per session; the newest `version` wins. Start entries write version =
-- their received_at, the session ender writes a later one with the totals, so a
-- redelivered start cannot roll a closed session back.
CREATE TABLE IF NOT EXISTS ${db}.replay_sessions
(
    project_id        UInt32,
    session_id        String,
    started_at        DateTime64(3, 'UTC'),
    user_uuid         String,
    user_id           String,
    user_anonymous_id String,
    tracker_version   LowCardinality(String),
    rev_id            String,
    user_agent        String,
    browser           LowCardinality(String),
    browser_version   String,
    os                LowCardinality(String),
    os_version        String,
    device_type       LowCardinality(String),                -- desktop|mobile|tablet|bot|other
    device            String,
    country           LowCardinality(String),                -- ISO 3166 alpha-2 when GeoIP is set up
    timezone          String,
    screen_width      UInt16,
    screen_height     UInt16,
    referrer          String,
    metadata          Map(String, String),
    ended             UInt8,
    last_event_at     DateTime64(3, 'UTC'),
    duration_ms       UInt64,
    pages_count       UInt32,
    events_count      UInt32,
    errors_count      UInt32,
    version           UInt64,
    retention_days    UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (project_id, session_id)
TTL toDateTime(started_at) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- Semantic events for timelines and dashboards, one row per tracker message that
-- means something to a person (DOM mutations stay in replay_batches).
-- event_uid = page_no:tab:batch version:first_index:ordinal, which the tracker
-- keeps identical when it retries a batch.
CREATE TABLE IF NOT EXISTS ${db}.replay_events
(
    project_id       UInt32,
    session_id       String,
    event_uid        String,
    ts               DateTime64(3, 'UTC'),                   -- server-aligned message time
    kind             LowCardinality(String),                 -- page|click|input|network|console|exception|custom|issue|incident|performance|web_vital|resource|viewport|tab|user_id|anonymous_id|metadata|graphql|state|websocket
    page_no          UInt32,
    tab_id           String,
    page_url         String,
    name             String,                                 -- label / event name / level / vital / error name
    selector         String,
    url              String,
    method           LowCardinality(String),
    status           UInt16,
    duration_ms      Float64,
    value            String,                                 -- message / payload / typed value
    x                Int32,
    y                Int32,
    request_headers  Map(String, String),
    response_headers Map(String, String),
    request_body     String CODEC(ZSTD(3)),
    response_body    String CODEC(ZSTD(3)),
    request_size     UInt64,
    response_size    UInt64,
    trace_id         String,                                 -- from a traceparent request header
    span_id          String,
    stack            String CODEC(ZSTD(3)),
    details          String CODEC(ZSTD(3)),                  -- JSON: the other fields
    retention_days   UInt16 DEFAULT 30,
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_kind kind TYPE set(64) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (project_id, session_id, ts, event_uid)
TTL toDateTime(ts) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- The raw request bodies (gunzipped), base64 text compressed with ZSTD: what a DOM
-- replay player needs later. batch_uid = page_no:tab:data type:first_index.
CREATE TABLE IF NOT EXISTS ${db}.replay_batches
(
    project_id     UInt32,
    session_id     String,
    batch_uid      String,
    ts             DateTime64(3, 'UTC'),
    received_at    DateTime64(3, 'UTC'),
    page_no        UInt32,
    tab_id         String,
    data_type      LowCardinality(String),
    first_index    UInt64,
    messages       UInt32,
    size           UInt32,
    body_base64    String CODEC(ZSTD(6)),
    retention_days UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (project_id, session_id, batch_uid)
TTL toDateTime(ts) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
