"""Why a request was refused: one enum of reasons, each with the HTTP status it is answered
with, as Sentry Relay types its outcomes. The reason is the `error` field of the JSON
answer and the `reason` label of `weftline_rejected_total`, so every refusal is counted
under a name from this list and never under free text a client could choose."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    status: int

    def __new__(cls, value: str, status: int) -> Reason:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.status = status
        return obj

    # who is calling
    MISSING_KEY = "missing_key", 401
    UNKNOWN_KEY = "unknown_key", 403
    BAD_KEY = "bad_key", 401
    MISSING_AUTH = "missing_auth", 401
    BAD_AUTH = "bad_auth", 401
    MULTIPLE_AUTH = "multiple_auth", 401
    AUTH_MISMATCH = "auth_mismatch", 400
    PROJECT_MISMATCH = "project_mismatch", 403
    BAD_PROJECT_ID = "bad_project_id", 400
    ORIGIN_NOT_ALLOWED = "origin_not_allowed", 403
    UNAUTHORIZED = "unauthorized", 401
    FORBIDDEN = "forbidden", 403
    # OpenReplay session tokens
    TOKEN_MISSING = "token_missing", 401
    TOKEN_MALFORMED = "token_malformed", 401
    TOKEN_BAD_SIGNATURE = "token_bad_signature", 401
    TOKEN_EXPIRED = "token_expired", 401
    TOKEN_UNKNOWN_PROJECT = "token_unknown_project", 401
    # size and rate
    BODY_TOO_LARGE = "body_too_large", 413
    DECOMPRESSED_TOO_LARGE = "decompressed_too_large", 413
    ITEM_TOO_LARGE = "item_too_large", 413
    TOO_MANY_EVENTS = "too_many_events", 413
    TOO_MANY_ATTACHMENTS = "too_many_attachments", 413
    TOO_MANY_SESSIONS = "too_many_sessions", 413
    TOO_MANY_ITEMS = "too_many_items", 413
    TOO_MANY_RECORDS = "too_many_records", 413
    RATE_LIMITED = "rate_limited", 429
    BODY_TIMEOUT = "body_timeout", 408
    # framing and content
    BAD_ENCODING = "bad_encoding", 400
    UNSUPPORTED_ENCODING = "unsupported_encoding", 415
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415
    EMPTY_BODY = "empty_body", 400
    INVALID_JSON = "invalid_json", 400
    INVALID_EVENTS = "invalid_events", 400
    INVALID_EVENT = "invalid_event", 400
    INVALID_ENVELOPE = "invalid_envelope", 400
    INVALID_OTLP = "invalid_otlp", 400
    INTERNAL_ITEM_TYPE = "internal_item_type", 400
    DUPLICATE_EVENT = "duplicate_event", 400
    BAD_VERSION = "bad_version", 400
    UNSUPPORTED_VERSION = "unsupported_version", 400
    BAD_BATCH = "bad_batch", 400
    BAD_SPLIT = "bad_split", 400
    BAD_PARAMETER = "bad_parameter", 400
    BAD_IDEMPOTENCY_KEY = "bad_idempotency_key", 400
    # source map uploads
    BAD_MULTIPART = "bad_multipart", 400
    BAD_FIELD = "bad_field", 400
    BAD_URL = "bad_url", 400
    BAD_FILE = "bad_file", 400
    BAD_SOURCEMAP = "bad_sourcemap", 400
    BAD_DEBUG_ID = "bad_debug_id", 400
    BAD_RELEASE = "bad_release", 400
    NO_RELEASE = "no_release", 400
    NO_FILES = "no_files", 400
    TOO_MANY_FILES = "too_many_files", 413
    UNKNOWN_ENDPOINT = "unknown_endpoint", 404
    NOT_FOUND = "not_found", 404
    # the admin query endpoint (weftline/admin.py)
    NOT_READ_ONLY = "not_read_only", 400
    QUERY_FAILED = "query_failed", 400
    # the buffer and the storage behind it
    BACKLOG_FULL = "backlog_full", 503
    BUFFER_UNAVAILABLE = "buffer_unavailable", 503
    STORAGE_UNAVAILABLE = "storage_unavailable", 503
    PARSER_UNAVAILABLE = "parser_unavailable", 503
    # live readers (SSE) have their own budget
    TOO_MANY_LIVE_STREAMS = "too_many_live_streams", 429
    LIVE_STREAMS_FULL = "live_streams_full", 503
    DISK_RESERVE = "disk_reserve", 503
    SHUTTING_DOWN = "shutting_down", 503


class Rejected(Exception):
    """A request that will not be accepted; answered with the reason's status (or
    `status`, where a protocol wants another, e.g. 429 for a Sentry SDK)."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        status: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status if status is not None else reason.status
        self.message = message
        self.details = details
        self.headers = headers or {}
