-- GenAI agent runs from OpenTelemetry spans with gen_ai.* attributes (the spans
-- themselves stay in `spans`). Written by the OTLP worker from each decoded request
-- (weftline.enrich.genai); a run's totals and tree are assembled when read, from the
-- parent links, so spans of one run may arrive in any order and in any request.
--
-- genai_spans: one row per GenAI operation (model call, tool call, agent run, handoff,
-- workflow, ...). The sort key holds only what the span itself says, so a span stored
-- twice (redelivery, exporter retry) has one key and collapses under FINAL.
CREATE TABLE IF NOT EXISTS ${db}.genai_spans
(
    project_id            UInt32,
    trace_id              String,
    span_id               String,
    parent_span_id        String,
    operation             LowCardinality(String),  -- invoke_agent | chat | execute_tool | handoff | ...
    name                  String,
    service_name          LowCardinality(String),
    start_time            DateTime64(9, 'UTC'),
    duration_ns           UInt64,
    status                LowCardinality(String),  -- ok | error
    error_type            String,
    error_message         String,
    agent_name            String,                  -- the span's own, else its agent's within the same request
    agent_id              String,
    run_span_id           String,                  -- the enclosing invoke_agent span when it came in the same request
    conversation_id       String,
    provider              LowCardinality(String),
    request_model         LowCardinality(String),
    response_model        LowCardinality(String),
    input_tokens          UInt64,
    output_tokens         UInt64,
    cache_read_tokens     UInt64,
    cache_creation_tokens UInt64,
    finish_reasons        Array(LowCardinality(String)),
    tool_name             String,
    tool_call_id          String,
    tool_type             LowCardinality(String),
    tool_arguments        String CODEC(ZSTD(3)),  -- scrubbed, bounded; empty unless the app sends content
    tool_result           String CODEC(ZSTD(3)),
    handoff_from          String,
    handoff_to            String,
    decision              LowCardinality(String),  -- gen_ai.tool.call.decision outcome (allow | deny | require_approval)
    session_id            String,
    received_at           DateTime64(3, 'UTC'),
    retention_days        UInt16 DEFAULT 30,
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(start_time)
ORDER BY (project_id, operation, toStartOfHour(start_time), trace_id, span_id)
TTL toDateTime(start_time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- agent_runs: the invoke_agent spans again, sorted by agent and time for "the runs of
-- one agent" and the per-agent panels; `span_id` is the run id.
CREATE TABLE IF NOT EXISTS ${db}.agent_runs
(
    project_id         UInt32,
    agent_name         String,
    agent_id           String,
    trace_id           String,
    span_id            String,
    parent_span_id     String,
    name               String,
    service_name       LowCardinality(String),
    start_time         DateTime64(9, 'UTC'),
    duration_ns        UInt64,
    status             LowCardinality(String),
    error_type         String,
    error_message      String,
    conversation_id    String,
    provider           LowCardinality(String),
    request_model      LowCardinality(String),
    reported_input_tokens  UInt64,   -- the framework's own run totals (gen_ai.aggregated_usage.*), when sent
    reported_output_tokens UInt64,
    session_id         String,
    received_at        DateTime64(3, 'UTC'),
    retention_days     UInt16 DEFAULT 30,
    INDEX idx_run span_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_trace trace_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(start_time)
ORDER BY (project_id, agent_name, start_time, trace_id, span_id)
TTL toDateTime(start_time) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
