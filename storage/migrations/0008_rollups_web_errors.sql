-- Per-minute rollups for the Sessions & web vitals and Errors dashboards and their
-- alert rules, so a 30-day panel reads minutes, not raw tracker events or error rows.
--
-- Redelivery (reference §3.12): every target keeps its own dedup window, so a batch
-- retried with the same token does not re-fire the view. Counts that must survive a
-- redelivery under a *different* token (an SDK resending an event, an entry claimed
-- by another worker in another batch) are uniq states over the stable ids
-- (event_id, event_uid), which a duplicate cannot change; min/max/argMax are
-- idempotent by nature. `uniq` is exact below 65536 distinct ids per state
-- (ClickHouse's adaptive sample), far above one minute of one group or page.

-- Tracker events people look at on dashboards: page views, web vitals, page-load
-- timing and the tracker's own heuristics (click_rage, dead_click, mouse_thrashing).
-- `page` is the URL path (no query, no fragment): the page navigated to for `page`
-- events, the page the event happened on otherwise.
CREATE TABLE IF NOT EXISTS ${db}.replay_events_1m
(
    project_id     UInt32,
    minute         DateTime('UTC'),
    kind           LowCardinality(String),
    name           LowCardinality(String),
    page           String,
    events         AggregateFunction(uniq, String),
    sessions       AggregateFunction(uniq, String),
    -- web_vital: the vital's value (ms; CLS unitless); performance: its duration in ms.
    value_q        AggregateFunction(quantilesTDigest(0.5, 0.75, 0.95, 0.99), Float64),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, kind, name, page, minute)
TTL minute + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.replay_events_1m_mv TO ${db}.replay_events_1m AS
SELECT
    project_id,
    toStartOfMinute(ts) AS minute,
    kind,
    name,
    path(if(kind = 'page', url, page_url)) AS page,
    uniqState(concat(session_id, '/', event_uid)) AS events,
    uniqState(session_id) AS sessions,
    quantilesTDigestStateIf(0.5, 0.75, 0.95, 0.99)(duration_ms, kind IN ('web_vital', 'performance'))
        AS value_q,
    max(retention_days) AS retention_days
FROM ${db}.replay_events
WHERE kind IN ('page', 'web_vital', 'performance', 'issue')
GROUP BY project_id, minute, kind, name, page;

-- Sentry errors by minute, issue, release and environment.
CREATE TABLE IF NOT EXISTS ${db}.sentry_errors_1m
(
    project_id     UInt32,
    minute         DateTime('UTC'),
    group_id       String,
    release        LowCardinality(String),
    environment    LowCardinality(String),
    level          LowCardinality(String),
    events         AggregateFunction(uniq, String),
    users          AggregateFunction(uniq, String),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (project_id, environment, release, group_id, level, minute)
TTL minute + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.sentry_errors_1m_mv TO ${db}.sentry_errors_1m AS
SELECT
    project_id,
    toStartOfMinute(timestamp) AS minute,
    group_id,
    release,
    environment,
    level,
    uniqState(event_id) AS events,
    uniqStateIf(user_key, user_key != '') AS users,
    max(retention_days) AS retention_days
FROM ${db}.sentry_errors
GROUP BY project_id, minute, group_id, release, environment, level;

-- One row per issue and environment over all time: first/last seen (so "new issue"
-- needs no 30-day scan), the release it first appeared in, and the newest title.
-- Regressions compare last_received with sentry_issue_status, like the issues API.
CREATE TABLE IF NOT EXISTS ${db}.sentry_groups
(
    project_id     UInt32,
    group_id       String,
    environment    LowCardinality(String),
    first_seen     SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_received  SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    first_release  AggregateFunction(argMin, String, DateTime64(3, 'UTC')),
    title          AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    culprit        AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    level          AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    events         AggregateFunction(uniq, String),
    retention_days SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
ORDER BY (project_id, group_id, environment)
TTL toDateTime(last_seen) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${db}.sentry_groups_mv TO ${db}.sentry_groups AS
SELECT
    project_id,
    group_id,
    environment,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen,
    max(received_at) AS last_received,
    argMinState(toString(release), timestamp) AS first_release,
    argMaxState(title, timestamp) AS title,
    argMaxState(culprit, timestamp) AS culprit,
    argMaxState(toString(level), timestamp) AS level,
    uniqState(event_id) AS events,
    max(retention_days) AS retention_days
FROM ${db}.sentry_errors
GROUP BY project_id, group_id, environment;

-- Backfill what was stored before this migration (views only see new inserts).
-- Migrations run before the workers start, so no insert races this.
INSERT INTO ${db}.replay_events_1m
SELECT
    project_id, toStartOfMinute(ts) AS minute, kind, name,
    path(if(kind = 'page', url, page_url)) AS page,
    uniqState(concat(session_id, '/', event_uid)) AS events,
    uniqState(session_id) AS sessions,
    quantilesTDigestStateIf(0.5, 0.75, 0.95, 0.99)(duration_ms, kind IN ('web_vital', 'performance'))
        AS value_q,
    max(retention_days) AS retention_days
FROM ${db}.replay_events FINAL
WHERE kind IN ('page', 'web_vital', 'performance', 'issue')
GROUP BY project_id, minute, kind, name, page;

INSERT INTO ${db}.sentry_errors_1m
SELECT
    project_id, toStartOfMinute(timestamp) AS minute, group_id, release, environment, level,
    uniqState(event_id) AS events,
    uniqStateIf(user_key, user_key != '') AS users,
    max(retention_days) AS retention_days
FROM ${db}.sentry_errors FINAL
GROUP BY project_id, minute, group_id, release, environment, level;

INSERT INTO ${db}.sentry_groups
SELECT
    project_id, group_id, environment,
    min(timestamp) AS first_seen,
    max(timestamp) AS last_seen,
    max(received_at) AS last_received,
    argMinState(toString(release), timestamp) AS first_release,
    argMaxState(title, timestamp) AS title,
    argMaxState(culprit, timestamp) AS culprit,
    argMaxState(toString(level), timestamp) AS level,
    uniqState(event_id) AS events,
    max(retention_days) AS retention_days
FROM ${db}.sentry_errors FINAL
GROUP BY project_id, group_id, environment;
