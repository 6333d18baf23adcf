-- Uploaded JavaScript artifacts (source maps and the minified files they describe),
-- read by the Sentry worker to symbolicate minified browser frames.
-- Found two ways (see enrich/sourcemaps.py): by release + file URL in the `~/path`
-- form (scheme and host replaced by `~`, as Sentry's release artifacts), or by debug id
-- (the SDK's debug_meta images), which needs no release.
-- ReplacingMergeTree(uploaded_at) on (project, release, url, kind): uploading a file
-- again replaces it. No TTL: a release's maps are needed as long as its events arrive.
CREATE TABLE IF NOT EXISTS ${db}.sentry_artifacts
(
    project_id     UInt32,
    release        String,
    url            String,                       -- '~/static/js/app.min.js(.map)'
    kind           LowCardinality(String),       -- source_map | minified_source
    debug_id       String,                       -- lowercase dashed UUID or ''
    sourcemap_url  String,                       -- minified_source: its sourceMappingURL, resolved to '~/…'
    sha1           String,
    size           UInt32,
    content        String CODEC(ZSTD(3)),
    uploaded_at    DateTime64(3, 'UTC'),
    INDEX idx_debug debug_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(uploaded_at)
ORDER BY (project_id, release, url, kind)
SETTINGS non_replicated_deduplication_window = 1000;
