-- Session → time range of its tracker events, for the timeline query.
-- `replay_events` is sorted by session but partitioned by day, and a query by session
-- alone has no time condition: every part of every day is searched, and each answers
-- with at least one granule (8192 rows) of other sessions. Reading this range first
-- (one small key lookup) lets that query skip the other days and their parts, with the
-- same rows as a result: min/max are exact, and idempotent under redelivery.
CREATE TABLE IF NOT EXISTS ${db}.replay_session_bounds
(
    project_id     UInt32,
    session_id     String,
    day            Date,
    first_ts       SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts        SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, session_id, day)
-- One day later than the events: an event late on `day` outlives the start of it.
TTL day + toIntervalDay(retention_days + 1)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.replay_session_bounds_mv TO ${db}.replay_session_bounds AS
SELECT
    project_id,
    session_id,
    toDate(ts) AS day,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    max(retention_days) AS retention_days
FROM ${db}.replay_events
GROUP BY project_id, session_id, day;

-- Events stored before this migration (the view above sees only new inserts; an
-- overlap with it is harmless, min/max do not count).
INSERT INTO ${db}.replay_session_bounds
SELECT
    project_id,
    session_id,
    toDate(ts) AS day,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    max(retention_days) AS retention_days
FROM ${db}.replay_events
GROUP BY project_id, session_id, day;

-- The timeline now also bounds its span reads by trace_times (as the trace view does)
-- and reads a session's traces from session_traces. Keep their rows a day past the
-- spans they summarize, for the same reason as above.
ALTER TABLE ${db}.trace_times MODIFY TTL day + toIntervalDay(retention_days + 1);

ALTER TABLE ${db}.session_traces MODIFY TTL day + toIntervalDay(retention_days + 1);

-- Session or trace → the agents and time range of the agent events that name it.
-- `agent_events` is sorted by agent, and a session's events are spread over many agents
-- and days: the bloom filters on session_id/trace_id (4 granules each) let most of the
-- table through, and FINAL then widens the read to every granule that shares key values
-- with those. With these rows the timeline reads only the granules of those agents
-- within that range (the primary key), and keeps its exact condition on top.
CREATE TABLE IF NOT EXISTS ${db}.agent_event_keys
(
    project_id     UInt32,
    key_kind       LowCardinality(String),   -- session | trace
    key            String,
    agent_id       String,
    day            Date,
    first_ts       SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts        SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, key_kind, key, agent_id, day)
TTL day + toIntervalDay(retention_days + 1)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.agent_event_keys_mv TO ${db}.agent_event_keys AS
SELECT
    project_id,
    k.1 AS key_kind,
    k.2 AS key,
    agent_id,
    toDate(ts) AS day,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    max(retention_days) AS retention_days
FROM ${db}.agent_events
ARRAY JOIN [('session', session_id), ('trace', trace_id)] AS k
WHERE k.2 != ''
GROUP BY project_id, key_kind, key, agent_id, day;

INSERT INTO ${db}.agent_event_keys
SELECT
    project_id,
    k.1 AS key_kind,
    k.2 AS key,
    agent_id,
    toDate(ts) AS day,
    min(ts) AS first_ts,
    max(ts) AS last_ts,
    max(retention_days) AS retention_days
FROM ${db}.agent_events
ARRAY JOIN [('session', session_id), ('trace', trace_id)] AS k
WHERE k.2 != ''
GROUP BY project_id, key_kind, key, agent_id, day;
