-- OTLP metrics, one table per point type, for time-series reads (by project, service,
-- metric name and time). The OpenTelemetry ClickHouse exporter's layout was the
-- reference; here every row also has `point_uid`, a hash of the point with its
-- resource, scope and metric plus its occurrence number among identical points of the
-- same request, so a redelivered entry or an exporter retrying the same request
-- collapses under FINAL while identical points sent together stay distinct.
CREATE TABLE IF NOT EXISTS ${db}.metrics_gauge
(
    project_id          UInt32,
    point_uid           UInt64,
    service_name        LowCardinality(String),
    metric_name         LowCardinality(String),
    metric_description  String,
    metric_unit         LowCardinality(String),
    resource_attributes Map(LowCardinality(String), String),
    scope_name          LowCardinality(String),
    scope_version       LowCardinality(String),
    attributes          Map(LowCardinality(String), String),
    start_time          DateTime64(9, 'UTC'),
    time                DateTime64(9, 'UTC'),
    value               Float64,
    flags               UInt32,
    received_at         DateTime64(3, 'UTC'),
    retention_days      UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (project_id, service_name, metric_name, toDateTime(time), point_uid)
TTL toDateTime(time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS ${db}.metrics_sum
(
    project_id          UInt32,
    point_uid           UInt64,
    service_name        LowCardinality(String),
    metric_name         LowCardinality(String),
    metric_description  String,
    metric_unit         LowCardinality(String),
    resource_attributes Map(LowCardinality(String), String),
    scope_name          LowCardinality(String),
    scope_version       LowCardinality(String),
    attributes          Map(LowCardinality(String), String),
    start_time          DateTime64(9, 'UTC'),
    time                DateTime64(9, 'UTC'),
    value               Float64,
    flags               UInt32,
    temporality         LowCardinality(String),   -- delta | cumulative | unspecified
    is_monotonic        UInt8,
    received_at         DateTime64(3, 'UTC'),
    retention_days      UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (project_id, service_name, metric_name, toDateTime(time), point_uid)
TTL toDateTime(time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS ${db}.metrics_histogram
(
    project_id          UInt32,
    point_uid           UInt64,
    service_name        LowCardinality(String),
    metric_name         LowCardinality(String),
    metric_description  String,
    metric_unit         LowCardinality(String),
    resource_attributes Map(LowCardinality(String), String),
    scope_name          LowCardinality(String),
    scope_version       LowCardinality(String),
    attributes          Map(LowCardinality(String), String),
    start_time          DateTime64(9, 'UTC'),
    time                DateTime64(9, 'UTC'),
    count               UInt64,
    sum                 Nullable(Float64),
    min                 Nullable(Float64),
    max                 Nullable(Float64),
    bucket_counts       Array(UInt64),
    explicit_bounds     Array(Float64),
    flags               UInt32,
    temporality         LowCardinality(String),
    received_at         DateTime64(3, 'UTC'),
    retention_days      UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (project_id, service_name, metric_name, toDateTime(time), point_uid)
TTL toDateTime(time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS ${db}.metrics_exp_histogram
(
    project_id             UInt32,
    point_uid              UInt64,
    service_name           LowCardinality(String),
    metric_name            LowCardinality(String),
    metric_description     String,
    metric_unit            LowCardinality(String),
    resource_attributes    Map(LowCardinality(String), String),
    scope_name             LowCardinality(String),
    scope_version          LowCardinality(String),
    attributes             Map(LowCardinality(String), String),
    start_time             DateTime64(9, 'UTC'),
    time                   DateTime64(9, 'UTC'),
    count                  UInt64,
    sum                    Nullable(Float64),
    min                    Nullable(Float64),
    max                    Nullable(Float64),
    scale                  Int32,
    zero_count             UInt64,
    zero_threshold         Float64,
    positive_offset        Int32,
    positive_bucket_counts Array(UInt64),
    negative_offset        Int32,
    negative_bucket_counts Array(UInt64),
    flags                  UInt32,
    temporality            LowCardinality(String),
    received_at            DateTime64(3, 'UTC'),
    retention_days         UInt16 DEFAULT 30
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(time)
ORDER BY (project_id, service_name, metric_name, toDateTime(time), point_uid)
TTL toDateTime(time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
