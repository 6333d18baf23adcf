-- Per-minute rollups for Grafana panels and alert rules, and the alert history.
--
-- Redelivery: a batch retried with the same insert_deduplication_token is dropped
-- by the source table, but a materialized view re-fires unless its *target* keeps
-- its own dedup window (reference §3.12). Every rollup target below therefore sets
-- non_replicated_deduplication_window. Aggregates that are idempotent by nature
-- (max, argMax, uniq) stay exact even under a redelivery whose batch differs.

CREATE TABLE IF NOT EXISTS ${db}.agent_events_1m
(
    project_id     UInt32,
    minute         DateTime('UTC'),
    type           LowCardinality(String),
    status         LowCardinality(String),
    action         LowCardinality(String),
    hitl_kind      LowCardinality(String),
    events         SimpleAggregateFunction(sum, UInt64),
    agents         AggregateFunction(uniq, String),
    -- "value" is the task duration (task_update) or the HITL response time (hitl), in ms.
    value_count    SimpleAggregateFunction(sum, UInt64),
    value_sum      SimpleAggregateFunction(sum, Float64),
    value_max      SimpleAggregateFunction(max, Float64),
    value_q        AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, type, status, action, hitl_kind, minute)
TTL minute + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.agent_events_1m_mv TO ${db}.agent_events_1m AS
SELECT
    project_id,
    toStartOfMinute(ts) AS minute,
    type,
    status,
    action,
    hitl_kind,
    count() AS events,
    uniqStateIf(agent_id, agent_id != '') AS agents,
    countIf(v IS NOT NULL) AS value_count,
    sumIf(ifNull(v, 0), v IS NOT NULL) AS value_sum,
    maxIf(ifNull(v, 0), v IS NOT NULL) AS value_max,
    quantilesTDigestStateIf(0.5, 0.9, 0.95, 0.99)(ifNull(v, 0), v IS NOT NULL) AS value_q,
    max(retention_days) AS retention_days
FROM
(
    SELECT *, coalesce(duration_ms, response_time_ms) AS v FROM ${db}.agent_events
)
GROUP BY project_id, minute, type, status, action, hitl_kind;

-- Last known state of each agent: max/argMax are idempotent, so duplicates of a
-- heartbeat never change the answer.
CREATE TABLE IF NOT EXISTS ${db}.agent_last_state
(
    project_id     UInt32,
    agent_id       String,
    last_seen      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_heartbeat SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    status         AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    current_task   AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
ORDER BY (project_id, agent_id)
TTL toDateTime(last_seen) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.agent_last_state_mv TO ${db}.agent_last_state AS
SELECT
    project_id,
    agent_id,
    max(ts) AS last_seen,
    max(coalesce(parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'heartbeat'), 3, 'UTC'), ts))
        AS last_heartbeat,
    argMaxState(toString(status), ts) AS status,
    argMaxState(current_task, ts) AS current_task,
    max(retention_days) AS retention_days
FROM ${db}.agent_events
WHERE type = 'agent_state' AND agent_id != ''
GROUP BY project_id, agent_id;

CREATE TABLE IF NOT EXISTS ${db}.spans_1m
(
    project_id      UInt32,
    minute          DateTime('UTC'),
    source          LowCardinality(String),
    service_name    LowCardinality(String),
    kind            LowCardinality(String),
    is_root         UInt8,
    name            String,
    spans           SimpleAggregateFunction(sum, UInt64),
    errors          SimpleAggregateFunction(sum, UInt64),
    duration_ms_sum SimpleAggregateFunction(sum, Float64),
    duration_ms_max SimpleAggregateFunction(max, Float64),
    duration_ms_q   AggregateFunction(quantilesTDigest(0.5, 0.9, 0.95, 0.99), Float64),
    retention_days  SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, service_name, kind, is_root, name, source, minute)
TTL minute + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.spans_1m_mv TO ${db}.spans_1m AS
SELECT
    project_id,
    toStartOfMinute(start_time) AS minute,
    source,
    service_name,
    kind,
    toUInt8(parent_span_id = '') AS is_root,
    name,
    count() AS spans,
    countIf(status_code = 'error') AS errors,
    sum(duration_ns / 1e6) AS duration_ms_sum,
    max(duration_ns / 1e6) AS duration_ms_max,
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(duration_ns / 1e6) AS duration_ms_q,
    max(retention_days) AS retention_days
FROM ${db}.spans
GROUP BY project_id, minute, source, service_name, kind, is_root, name;

-- Backfill what was stored before this migration (views only see new inserts).
-- Migrations run before the workers start, so no insert races this.
INSERT INTO ${db}.agent_events_1m
SELECT
    project_id, toStartOfMinute(ts) AS minute, type, status, action, hitl_kind,
    count() AS events,
    uniqStateIf(agent_id, agent_id != '') AS agents,
    countIf(v IS NOT NULL) AS value_count,
    sumIf(ifNull(v, 0), v IS NOT NULL) AS value_sum,
    maxIf(ifNull(v, 0), v IS NOT NULL) AS value_max,
    quantilesTDigestStateIf(0.5, 0.9, 0.95, 0.99)(ifNull(v, 0), v IS NOT NULL) AS value_q,
    max(retention_days) AS retention_days
FROM (SELECT *, coalesce(duration_ms, response_time_ms) AS v FROM ${db}.agent_events FINAL)
GROUP BY project_id, minute, type, status, action, hitl_kind;

INSERT INTO ${db}.agent_last_state
SELECT
    project_id, agent_id, max(ts) AS last_seen,
    max(coalesce(parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'heartbeat'), 3, 'UTC'), ts))
        AS last_heartbeat,
    argMaxState(toString(status), ts) AS status,
    argMaxState(current_task, ts) AS current_task,
    max(retention_days) AS retention_days
FROM ${db}.agent_events FINAL
WHERE type = 'agent_state' AND agent_id != ''
GROUP BY project_id, agent_id;

INSERT INTO ${db}.spans_1m
SELECT
    project_id, toStartOfMinute(start_time) AS minute, source, service_name, kind,
    toUInt8(parent_span_id = '') AS is_root, name,
    count() AS spans,
    countIf(status_code = 'error') AS errors,
    sum(duration_ns / 1e6) AS duration_ms_sum,
    max(duration_ns / 1e6) AS duration_ms_max,
    quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(duration_ns / 1e6) AS duration_ms_q,
    max(retention_days) AS retention_days
FROM ${db}.spans FINAL
GROUP BY project_id, minute, source, service_name, kind, is_root, name;

-- Alert transitions written by Weftline's own evaluator. The sort key is the
-- transition's identity, so a leader that retries after a failover collapses.
CREATE TABLE IF NOT EXISTS ${db}.alert_history
(
    ts          DateTime64(3, 'UTC'),
    rule        LowCardinality(String),
    title       String,
    fingerprint String,
    state       LowCardinality(String),
    severity    LowCardinality(String),
    labels      Map(String, String),
    value       Nullable(Float64),
    threshold   Float64,
    started_at  DateTime64(3, 'UTC'),
    summary     String,
    runbook     String,
    evaluator   String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (rule, fingerprint, started_at, state)
TTL toDateTime(ts) + toIntervalDay(400)
SETTINGS non_replicated_deduplication_window = 1000;
