-- Agent, task, human-in-the-loop and React Flow canvas events.
-- ReplacingMergeTree keyed by event_uid (stream entry id + position in the request):
-- a batch redelivered after a crash collapses to one row under FINAL, whatever
-- batch it lands in. The dedup window makes the common retry (same batch, same
-- token) a no-op at insert time too.
CREATE TABLE IF NOT EXISTS ${db}.agent_events
(
    project_id       UInt32,
    event_uid        String,
    type             LowCardinality(String),
    ts               DateTime64(3, 'UTC'),
    received_at      DateTime64(3, 'UTC'),
    agent_id         String,
    session_id       String,
    trace_id         String,
    user_id          String,
    status           LowCardinality(String),
    task_id          String,
    current_task     String,
    action           LowCardinality(String),
    node_id          String,
    node_type        String,
    edge_source      String,
    edge_target      String,
    hitl_kind        LowCardinality(String),
    duration_ms      Nullable(Float64),
    response_time_ms Nullable(Float64),
    error            String,
    metrics          Map(String, Float64),
    payload          String CODEC(ZSTD(3)),
    retention_days   UInt16 DEFAULT 30,
    INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_trace trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (project_id, agent_id, ts, event_uid)
TTL toDateTime(ts) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
