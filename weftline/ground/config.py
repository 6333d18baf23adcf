"""Configuration: a TOML file plus environment variables.

Precedence, highest first: environment (`WEFTLINE_*`, `VALKEY_URL`,
`CLICKHOUSE_URL`), the TOML file (`--config` or `WEFTLINE_CONFIG`), defaults.
When neither URL is set Weftline runs embedded: it starts its own Valkey and
opens chDB in the data folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PUBLIC_KEY_RE = re.compile(r"^[0-9a-f]{32}$")


class ProjectConfig(BaseModel):
    id: int = Field(ge=1, description="numeric, as Sentry DSNs need it")
    name: str = Field(min_length=1, max_length=200)
    public_key: str = Field(description="ingest key: 32 lowercase hex characters")
    query_token: str = Field(min_length=16)
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])
    retention_days: int = Field(default=30, ge=1, le=3650)
    rate_limit: float = Field(default=200.0, gt=0, description="ingest requests per second")
    store_ip: bool = Field(default=True, description="keep client IP addresses (user.ip_address)")

    @field_validator("public_key")
    @classmethod
    def _key_shape(cls, v: str) -> str:
        if not PUBLIC_KEY_RE.match(v):
            raise ValueError("public_key must be 32 lowercase hex characters")
        return v


class StreamBudget(BaseModel):
    """Un-acknowledged entries a stream may hold before the edge answers 503."""

    agent: int = 100_000
    replay: int = 1_000_000
    sentry: int = 200_000
    otlp: int = 200_000


class OpenReplaySettings(BaseModel):
    """The OpenReplay tracker's ingest (`ingestPoint` = http://HOST:PORT/ingest)."""

    # Signs session tokens (HMAC-SHA256). Unset: generated once and kept in the data
    # folder (`replay-token-secret`); in server mode give every API process the same one.
    token_secret: str | None = Field(default=None, min_length=16)
    # A token (and so a session) lives this long after the session starts; a batch with
    # an older token gets 401 and the tracker starts a new session.
    session_max_seconds: int = Field(default=4 * 3600, ge=1)
    # A session with no batch for this long is closed by the session ender.
    session_inactivity_seconds: int = Field(default=150, ge=1)
    ender_interval_seconds: float = Field(default=15.0, gt=0)
    # 2 = split streams (player/assets/devtools/analytics) and the first DOM snapshot is
    # sent right after start; 1 = one stream, sent every 30 s or on flush.
    protocol_version: Literal[1, 2] = 2
    compression_threshold: int = Field(default=20_000, ge=0)
    beacon_size_limit: int = Field(default=1_000_000, ge=10_000)
    # Bound on one batch after gunzip (the tracker's largest is ~beacon_size_limit).
    max_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=10_000)
    # Network request/response bodies are kept up to this many characters.
    max_body_chars: int = Field(default=4096, ge=0)


class WebhookConfig(BaseModel):
    """A receiver of the alert loop's notifications."""

    model_config = {"extra": "forbid"}

    name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    format: Literal["generic", "alertmanager", "alertmanager_api", "slack"] = Field(
        default="generic",
        description="generic JSON; alertmanager = Alertmanager's webhook payload (version 4); "
        "alertmanager_api = POST alerts to an Alertmanager's /api/v2/alerts; slack = {text}",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEFTLINE_", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = 8700
    data_dir: Path = Path("weftline-data")

    valkey_url: str | None = Field(
        default=None, validation_alias=AliasChoices("VALKEY_URL", "WEFTLINE_VALKEY_URL")
    )
    clickhouse_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLICKHOUSE_URL", "WEFTLINE_CLICKHOUSE_URL"),
    )
    clickhouse_database: str = Field(default="weftline", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # ClickHouse cluster: when set, migrations create Replicated* local tables and
    # Distributed tables ON CLUSTER this name (see storage/cluster_ddl.py).
    clickhouse_cluster: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    # Valkey cluster: talk the cluster protocol (VALKEY_URL is any one node).
    valkey_cluster: bool = Field(
        default=False, validation_alias=AliasChoices("VALKEY_CLUSTER", "WEFTLINE_VALKEY_CLUSTER")
    )
    # Streams per signal kind; >1 spreads a kind over cluster slots (shard 0 keeps the
    # unsharded key names). Entries of one session / trace share a shard.
    stream_shards: int = Field(default=1, ge=1, le=1024)

    # Valkey durability: "aof" = appendfsync everysec (the default); "waitaof" = the edge
    # answers only after WAITAOF confirms the local fsync.
    durability: Literal["aof", "waitaof"] = "aof"

    # Disk reserve (embedded mode): below max(disk_reserve_bytes, disk_reserve_percent of
    # the file system) free under the data folder, the edge refuses new data (503) so
    # Valkey's AOF and ClickHouse (which needs room to merge) never run out; the workers
    # keep draining. 0 and 0 turn the check off.
    disk_reserve_bytes: int = Field(default=1024**3, ge=0)
    disk_reserve_percent: float = Field(default=5.0, ge=0, le=90)
    disk_check_interval_seconds: float = Field(default=1.0, gt=0)

    # How long an Idempotency-Key (POST /api/v1/events) is remembered in Valkey: a resend
    # within it is answered with the original entry id and not appended again.
    idempotency_window_seconds: int = Field(default=24 * 3600, ge=1)

    max_body_bytes: int = 5 * 1024 * 1024
    max_events_per_request: int = 1000
    # OTLP: spans / log records / metrics, and attributes (of records, events, links and
    # resources), per request; beyond either the request gets 413.
    otlp_max_records: int = Field(default=100_000, ge=1)
    otlp_max_attributes: int = Field(default=1_000_000, ge=1)
    # The public port: a request's headers must arrive within this (else the connection
    # is closed), its body within http_body_timeout_seconds (else 408); past
    # http_max_connections open connections and requests, 503 at once.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=60.0, gt=0)
    http_max_connections: int = Field(default=1000, ge=1)
    # Every other route's body (API PATCHes, UI forms, admin queries); 413 beyond.
    max_api_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Source map uploads (POST /api/v1/sourcemaps): the whole request, maps included.
    sourcemap_max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    backlog_budget: StreamBudget = Field(default_factory=StreamBudget)
    retry_after_seconds: int = 5
    # /readyz fails (and weftline_stream_stalled_seconds shows it) when a stream's oldest
    # entry has not moved for this long: a worker retrying one batch, or no worker at all.
    stream_stall_seconds: float = Field(default=300.0, gt=0)

    # Worker batches: handed on when the stream is idle (not more often than every
    # min_flush_interval_ms), else up to batch_size entries / batch_max_items items, or
    # batch_max_age_ms of filling (see enrich/stream_consumer.py).
    batch_size: int = 2000
    batch_max_items: int = 20_000
    batch_max_age_ms: int = 100
    min_flush_interval_ms: int = 100
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    workers_per_stream: int = 1
    agent_state_ttl_seconds: int = 7 * 24 * 3600

    openreplay: OpenReplaySettings = Field(default_factory=OpenReplaySettings)

    # Bearer token of the admin endpoint (read-only SQL over every project, used by
    # `weftline query` and friends). Unset: made once and kept in <data_dir>/admin-token.
    admin_token: str | None = Field(default=None, min_length=16)
    # One log line per HTTP request (logger weftline.access: method, path without the
    # query string, status, duration, request id); `--access-log` turns it on.
    access_log: bool = False

    # Live readers (GET /api/v1/live, SSE): one Valkey subscription per process fanned out
    # to them; at most this many streams in all (503 beyond) and per query token (429),
    # each closed after this long without an event (EventSource reconnects).
    live_max_streams: int = Field(default=100, ge=1)
    live_max_streams_per_token: int = Field(default=5, ge=1)
    live_idle_seconds: float = Field(default=300.0, gt=0)

    projects: list[ProjectConfig] = Field(default_factory=list)

    # Alert loop (dashboards/alerting): one leader among all processes notifies.
    alerts_enabled: bool = True
    alerts_rules_dir: Path | None = Field(
        default=None, description="folder of rule YAML files; default: the bundled rules"
    )
    alerts_interval_seconds: float = Field(default=15.0, gt=0)
    alerts_lock_ttl_ms: int = Field(default=30_000, ge=1000)
    alerts_group_by: list[str] = Field(default_factory=lambda: ["alertname", "project"])
    alerts_repeat_interval_seconds: float = Field(default=4 * 3600, gt=0)
    alert_webhooks: list[WebhookConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @property
    def embedded_valkey(self) -> bool:
        return self.valkey_url is None

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None

    def project_by_id(self, project_id: int) -> ProjectConfig | None:
        for p in self.projects:
            if p.id == project_id:
                return p
        return None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any) and let the environment override it."""
    path = config_file or os.environ.get("WEFTLINE_CONFIG")
    data: dict[str, Any] = {}
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**data)


DEMO_FILE = "demo-project.toml"


def ensure_demo_project(settings: Settings) -> ProjectConfig | None:
    """With no project configured, create one demo project and keep it in the data folder,
    so a restart keeps the same keys (and the data stays reachable)."""
    if settings.projects:
        return None
    path = Path(settings.data_dir) / DEMO_FILE
    if path.exists():
        narrow(path)  # it holds the query token
        with open(path, "rb") as f:
            project = ProjectConfig(**tomllib.load(f))
    else:
        project = ProjectConfig(
            id=1,
            name="demo",
            public_key=secrets.token_hex(16),
            # Hex: a token starting with "-" could not follow --token on a command line.
            query_token=secrets.token_hex(20),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(
            path,
            "# Created by `weftline up` because no project was configured.\n"
            f'id = {project.id}\nname = "{project.name}"\n'
            f'public_key = "{project.public_key}"\nquery_token = "{project.query_token}"\n',
        )
    settings.projects = [project]
    return project


REPLAY_SECRET_FILE = "replay-token-secret"


def kept_secret(data_dir: str | Path, name: str, make: Callable[[], str]) -> str:
    """A secret made once and kept in the data folder (readable by its owner only), so it
    stays the same across restarts."""
    path = Path(data_dir) / name
    if path.exists():
        narrow(path)
        return path.read_text().strip()
    secret = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, secret + "\n")
    return secret


def write_private(path: Path, text: str) -> None:
    """A file only its owner may read (it holds a token): created 0600, never visible
    with wider permissions, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an older file made 0644 is narrowed too


def narrow(path: Path) -> None:
    """An existing token file made by an older version (0644): owner only from now."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)


def ensure_replay_secret(settings: Settings) -> str:
    """The session-token secret: configured, or made once and kept in the data folder so
    tokens stay valid across restarts (like the demo project's keys)."""
    if not settings.openreplay.token_secret:
        settings.openreplay.token_secret = kept_secret(
            settings.data_dir, REPLAY_SECRET_FILE, lambda: secrets.token_urlsafe(32)
        )
    return settings.openreplay.token_secret
