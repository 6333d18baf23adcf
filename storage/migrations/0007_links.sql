-- Correlation links: one row per (session, thing it touches, reason). Written by the
-- workers as signals arrive, so queries and dashboards join without re-deriving.
-- ReplacingMergeTree on the whole key: re-delivery and repeated evidence collapse.
CREATE TABLE IF NOT EXISTS ${db}.links
(
    project_id     UInt32,
    session_id     String,
    kind           LowCardinality(String),   -- trace | error | agent_event | replay
    target_id      String,                   -- trace id, event id, ...
    reason         LowCardinality(String),   -- why: session_id field, session.id attribute, traceparent header, ...
    source         LowCardinality(String),   -- the signal that carried the evidence: agent | otlp | sentry | replay
    inferred       UInt8 DEFAULT 0,          -- 1: a guess by user id + time window, not a key
    ts             DateTime64(3, 'UTC'),
    retention_days UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (project_id, session_id, kind, target_id, reason)
TTL toDateTime(ts) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
