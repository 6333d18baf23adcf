"""Sentry worker: a stream entry (one envelope) → rows for errors, spans, sessions,
client outcomes and raw items.

Every row's identity is stable under redelivery: errors by their event id, spans by
(trace, span, start), the rest by stream entry id + item position. Issue groups are
derived from the error rows at read time (storage/sentry_queries.py), so there is no
counter to double-increment.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from weftline.enrich import live
from weftline.enrich.links import with_links
from weftline.enrich.sentry_grouping import exceptions_of, group_event, message_text
from weftline.enrich.sentry_scrub import scrub, scrub_text
from weftline.enrich.sourcemaps import Symbolicator
from weftline.enrich.stream_consumer import DecodeError, Entry
from weftline.ground.config import ProjectConfig
from weftline.ground.metrics import (
    SENTRY_CLIENT_DISCARDED,
    SENTRY_ITEMS,
)
from weftline.ground.sentry_envelope import (
    CONTAINER_TYPES,
    Envelope,
    EnvelopeError,
    Item,
    container_items,
    item_json,
    normalize_event_id,
    parse_envelope,
)
from weftline.ground.times import ch_seconds
from weftline.storage import sourcemap_store
from weftline.storage.clickhouse import ClickHouse
from weftline.storage.writer import write_tables

ERRORS = "sentry_errors"
SPANS = "spans"
SESSIONS = "sentry_sessions"
OUTCOMES = "sentry_client_outcomes"
ITEMS = "sentry_items"
METRIC = ""  # not a table: a metric to count once the batch is stored

LEVELS = {"debug", "info", "warning", "error", "fatal"}
LEVEL_ALIASES = {"log": "info", "critical": "fatal", "warn": "warning", "trace": "debug"}
PY_LEVELS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}
PLATFORMS = frozenset(
    "as3 c cfml cocoa csharp elixir go groovy haskell java javascript native node objc "
    "other perl php python ruby".split()
)
# The tables' time columns are DateTime64, but their TTL and partition keys go through
# DateTime (UInt32 seconds, which ends in 2106) and DateTime64(9) ends in 2262: a client
# time outside [1970, 2106) is not a time we can store, and is replaced.
MAX_EPOCH = float(2**32 - 1)
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
MAX_DRIFT_S = 60.0
MAX_FUTURE_S = 60.0
MAX_PAST_S = 30 * 86400.0
OPENREPLAY_TAGS = ("openReplaySession.id", "openReplaySessionURL", "openReplaySessionToken")


Symbolicate = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class Row:
    table: str
    data: dict[str, Any]


# ---------- small normalizers ----------


def epoch(value: Any) -> float | None:
    """Float epoch seconds or an RFC 3339 string (naive = UTC) → epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = float(value)
        return v if 0 < v < MAX_EPOCH else None
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        v = dt.timestamp()
        return v if 0 < v < MAX_EPOCH else None
    return None


def count_of(value: Any, name: str, limit: int = UINT32_MAX) -> int:
    """A client's counter for an unsigned column: clamped to [0, limit] (a UInt32 would
    wrap silently, a UInt64 beyond 2^64 fails the whole insert); not a number → the
    item is rejected with the field's name."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise EnvelopeError(f"{name} must be a number, not {type(value).__name__}")
    if value >= limit:
        return limit
    return max(0, int(value))


def level_of(raw: Any, default: str = "error") -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return PY_LEVELS.get(raw, default)
    if isinstance(raw, str):
        v = raw.strip().lower()
        v = LEVEL_ALIASES.get(v, v)
        if v in LEVELS:
            return v
    return default


def s(v: Any, limit: int = 8192) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v[:limit]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return orjson.dumps(v).decode()[:limit]


def pairs_dict(v: Any) -> dict[str, str]:
    """`{k: v}` or `[[k, v], …]` → `{k: str(v)}`."""
    if isinstance(v, dict):
        return {str(k)[:200]: s(x, 1000) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return {
            str(p[0])[:200]: s(p[1], 1000)
            for p in v
            if isinstance(p, list | tuple) and len(p) == 2 and p[1] is not None
        }
    return {}


def dumps(v: Any) -> str:
    return orjson.dumps(v).decode() if v is not None else ""


def d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def hex_id(v: Any, n: int) -> str:
    if not isinstance(v, str):
        return ""
    x = v.replace("-", "").lower()
    return x if len(x) == n and all(c in "0123456789abcdef" for c in x) else ""


@dataclass(frozen=True)
class Context:
    """What every item of one entry shares."""

    project_id: int
    entry_id: str
    received: float
    ip: str
    client: str
    drift: float  # seconds to add to client timestamps (received_at - sent_at)
    envelope: Envelope
    retention: int
    store_ip: bool
    # Rewrites minified JS frames (enrich/sourcemaps.py); None: frames stay as sent.
    symbolicate: Symbolicate | None = None

    def uid(self, index: int, sub: int | None = None) -> str:
        return f"{self.entry_id}:{index}" + ("" if sub is None else f":{sub}")

    def ts(self, raw: Any, *, clamp: bool = True) -> float:
        t = epoch(raw)
        if t is None:
            return self.received
        t += self.drift
        if clamp and (t > self.received + MAX_FUTURE_S or t < self.received - MAX_PAST_S):
            return self.received
        return t


def _context(
    entry: Entry, project: ProjectConfig | None, symbolicate: Symbolicate | None = None
) -> Context:
    f = entry.fields
    try:
        project_id = int(f[b"project"])
        received = int(f[b"received_at"]) / 1000
        payload = f[b"p"]
    except (KeyError, ValueError) as e:
        raise DecodeError(f"bad entry metadata: {e}") from None
    env = parse_envelope(payload)
    sent_at = epoch(env.headers.get("sent_at"))
    drift = 0.0
    if sent_at is not None and abs(received - sent_at) > MAX_DRIFT_S:
        # Only a real clock skew is corrected; below a minute the gap is mostly
        # transport time and shifting would reorder the client's own events.
        drift = received - sent_at
    return Context(
        project_id=project_id,
        entry_id=entry.id,
        received=received,
        ip=f.get(b"ip", b"").decode(errors="replace"),
        client=f.get(b"client", b"").decode(errors="replace"),
        drift=drift,
        envelope=env,
        retention=project.retention_days if project else 30,
        store_ip=project.store_ip if project else True,
        symbolicate=symbolicate,
    )


# ---------- errors ----------


def _user(event: dict[str, Any], ctx: Context) -> dict[str, Any]:
    user = dict(d(event.get("user")))
    ip = user.get("ip_address")
    infer = d(d(event.get("sdk")).get("settings")).get("infer_ip")
    if ip == "{{auto}}" or (
        ip is None
        and (infer == "auto" or (infer is None and event.get("platform") == "javascript"))
    ):
        user["ip_address"] = ctx.ip
    if not ctx.store_ip:
        user.pop("ip_address", None)
        if isinstance(user.get("geo"), dict):
            user.pop("geo")
    return user


IP_ENV_KEYS = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_CLIENT_IP")


def _without_ips(event: dict[str, Any]) -> dict[str, Any]:
    """store_ip = false: the request's environment loses its client addresses too."""
    request = event.get("request")
    if isinstance(request, dict):
        env = request.get("env")
        if isinstance(env, dict):
            request = {**request, "env": {k: v for k, v in env.items() if k not in IP_ENV_KEYS}}
        headers = request.get("headers")
        if isinstance(headers, dict):
            headers = {
                k: v
                for k, v in headers.items()
                if str(k).lower() not in ("x-forwarded-for", "x-real-ip", "forwarded")
            }
            request = {**request, "headers": headers}
        event = {**event, "request": request}
    return event


def _trace(event: dict[str, Any], ctx: Context) -> tuple[str, str]:
    t = d(d(event.get("contexts")).get("trace"))
    trace_id = hex_id(t.get("trace_id"), 32) or hex_id(
        d(ctx.envelope.headers.get("trace")).get("trace_id"), 32
    )
    return trace_id, hex_id(t.get("span_id"), 16)


def error_row(event: dict[str, Any], ctx: Context, index: int) -> Row:
    env_id = ctx.envelope.event_id
    event_id = (
        env_id
        or normalize_event_id(event.get("event_id"))
        or hashlib.md5(ctx.uid(index).encode(), usedforsecurity=False).hexdigest()
    )
    tags_raw = pairs_dict(event.get("tags"))
    # Correlation ids are taken before scrubbing (a "…Token" tag is an id here).
    openreplay = {k: tags_raw.get(k, "") for k in OPENREPLAY_TAGS}
    if ctx.symbolicate is not None:
        # Before grouping (original frames group the same bug across builds) and
        # before scrubbing (context lines from sourcesContent are scrubbed too).
        event = ctx.symbolicate(event, ctx.project_id)
    user = _user(event, ctx)
    if not ctx.store_ip:
        event = _without_ips(event)
    event = scrub({**event, "event_id": event_id, "user": user})
    grouping = group_event(event)
    excs = exceptions_of(event)
    last_mech = d(excs[-1].get("mechanism")) if excs else {}
    handled = last_mech.get("handled")
    user = d(event.get("user"))
    contexts = d(event.get("contexts"))
    request = d(event.get("request"))
    sdk = d(event.get("sdk")) or d(ctx.envelope.headers.get("sdk"))
    trace_id, span_id = _trace(event, ctx)
    tags = pairs_dict(event.get("tags"))
    for k, v in openreplay.items():
        if v:
            tags[k] = v
    if event.get("server_name"):
        tags.setdefault("server_name", s(event["server_name"], 200))
    breadcrumbs = event.get("breadcrumbs")
    if isinstance(breadcrumbs, dict):
        breadcrumbs = breadcrumbs.get("values")
    replay_id = hex_id(d(contexts.get("replay")).get("replay_id"), 32) or hex_id(
        d(ctx.envelope.headers.get("trace")).get("replay_id"), 32
    )
    platform = s(event.get("platform"), 64)
    fingerprint = event.get("fingerprint")
    data = {
        "project_id": ctx.project_id,
        "event_id": event_id,
        "group_id": grouping.group_id,
        "timestamp": ch_seconds(ctx.ts(event.get("timestamp"))),
        "received_at": ch_seconds(ctx.received),
        "level": level_of(event.get("level")),
        "platform": platform if platform in PLATFORMS else "other",
        "event_type": "error" if excs else "default",
        "title": grouping.title,
        "culprit": grouping.culprit,
        "message": message_text(event)[:8192],
        "exception_types": [s(e.get("type"), 200) for e in excs],
        "exception_values": [s(e.get("value"), 2000) for e in excs],
        "exceptions": dumps(excs),
        "handled": 1 if handled is True else 0 if handled is False else -1,
        "logger": s(event.get("logger"), 64),
        "transaction": s(event.get("transaction"), 200),
        "release": s(event.get("release"), 200),
        "dist": s(event.get("dist"), 64),
        "environment": s(event.get("environment"), 64),
        "server_name": s(event.get("server_name"), 200),
        "user_id": s(user.get("id"), 200),
        "user_email": s(user.get("email"), 200),
        "user_username": s(user.get("username"), 200),
        "user_ip": s(user.get("ip_address"), 64),
        "user_key": s(
            user.get("id") or user.get("email") or user.get("username") or user.get("ip_address"),
            200,
        ),
        "tags": tags,
        "contexts": dumps(contexts),
        "request_url": s(request.get("url"), 2000),
        "request_method": s(request.get("method"), 16),
        "request": dumps(request) if request else "",
        "breadcrumbs": dumps(breadcrumbs) if isinstance(breadcrumbs, list) else "",
        "sdk_name": s(sdk.get("name"), 100),
        "sdk_version": s(sdk.get("version"), 50),
        "trace_id": trace_id,
        "span_id": span_id,
        "replay_id": replay_id,
        "openreplay_session_id": openreplay["openReplaySession.id"],
        "openreplay_session_url": openreplay["openReplaySessionURL"],
        "openreplay_session_token": openreplay["openReplaySessionToken"],
        "fingerprint": [s(x, 500) for x in fingerprint] if isinstance(fingerprint, list) else [],
        "grouping_variant": grouping.variant,
        "grouping_config": grouping.config,
        "payload": dumps(event),
        "retention_days": ctx.retention,
    }
    return Row(ERRORS, data)


# ---------- spans ----------


def span_kind(op: str) -> str:
    if op.startswith("http.server"):
        return "server"
    if op.startswith(("http.client", "db", "cache", "queue.publish")):
        return "client"
    return "internal"


def _service(release: str, server_name: str, sdk_name: str) -> str:
    if release:
        return release.split("@", 1)[0][:200]
    return (server_name or sdk_name or "unknown")[:200]


def _status(raw: Any) -> tuple[str, str]:
    if not isinstance(raw, str) or not raw:
        return "unset", ""
    return ("ok" if raw == "ok" else "error"), raw[:200]


def _flat(prefix: str, v: Any, out: dict[str, str]) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _flat(f"{prefix}{k}" if not prefix else f"{prefix}.{k}", x, out)
    elif v is not None:
        out[prefix[:200]] = s(v, 4000)


def span_row(
    ctx: Context,
    *,
    trace_id: str,
    span_id: str,
    parent: str,
    name: str,
    op: str,
    start: float,
    end: float,
    status: Any,
    attributes: dict[str, str],
    resource: dict[str, str],
    session_id: str,
) -> Row:
    code, message = _status(status)
    return Row(
        SPANS,
        {
            "project_id": ctx.project_id,
            "source": "sentry",
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": parent,
            "name": name[:1000],
            "kind": span_kind(op),
            "op": op[:100],
            "status_code": code,
            "status_message": message,
            "service_name": resource.get("service.name", "unknown"),
            "start_time": ch_seconds(start, 9),
            "duration_ns": min(INT64_MAX, max(0, int(round((end - start) * 1e9)))),
            "resource_attributes": resource,
            "attributes": attributes,
            "event_times": [],
            "event_names": [],
            "event_attributes": [],
            "link_trace_ids": [],
            "link_span_ids": [],
            "link_attributes": [],
            "session_id": session_id,
            "received_at": ch_seconds(ctx.received),
            "retention_days": ctx.retention,
        },
    )


def transaction_rows(event: dict[str, Any], ctx: Context) -> list[Row]:
    if not ctx.store_ip:
        event = _without_ips(event)
    event = scrub(event)
    trace = d(d(event.get("contexts")).get("trace"))
    trace_id = hex_id(trace.get("trace_id"), 32)
    root_id = hex_id(trace.get("span_id"), 16)
    if not trace_id or not root_id:
        raise EnvelopeError("transaction without contexts.trace trace_id/span_id")
    release = s(event.get("release"), 200)
    sdk = d(event.get("sdk"))
    resource = {
        "service.name": _service(release, s(event.get("server_name")), s(sdk.get("name"))),
        "sentry.release": release,
        "sentry.environment": s(event.get("environment"), 64),
        "sentry.sdk.name": s(sdk.get("name"), 100),
        "sentry.sdk.version": s(sdk.get("version"), 50),
        "sentry.platform": s(event.get("platform"), 64),
    }
    if event.get("server_name"):
        resource["host.name"] = s(event["server_name"], 200)
    resource = {k: v for k, v in resource.items() if v}
    tags = pairs_dict(event.get("tags"))
    session = tags.get("openReplaySession.id", "")
    start = ctx.ts(event.get("start_timestamp"), clamp=False)
    end = ctx.ts(event.get("timestamp"), clamp=False)
    root_attrs: dict[str, str] = {}
    _flat("", trace.get("data"), root_attrs)
    root_attrs.update({f"tag.{k}": v for k, v in tags.items()})
    root_attrs["sentry.transaction"] = s(event.get("transaction"), 1000)
    root_attrs["sentry.is_segment"] = "true"
    eid = ctx.envelope.event_id or normalize_event_id(event.get("event_id"))
    if eid:
        root_attrs["sentry.event_id"] = eid
    user = d(event.get("user"))
    if user.get("id") is not None:
        root_attrs["user.id"] = s(user["id"], 200)
    measurements = d(event.get("measurements"))
    for k, m in measurements.items():
        if isinstance(m, dict) and "value" in m:
            root_attrs[f"measurement.{k}"] = s(m["value"])
    rows = [
        span_row(
            ctx,
            trace_id=trace_id,
            span_id=root_id,
            parent=hex_id(trace.get("parent_span_id"), 16),
            name=s(event.get("transaction"), 1000) or s(trace.get("op")),
            op=s(trace.get("op"), 100),
            start=start,
            end=end,
            status=trace.get("status"),
            attributes=root_attrs,
            resource=resource,
            session_id=session,
        )
    ]
    for sp in event.get("spans") or []:
        if not isinstance(sp, dict):
            continue
        sid = hex_id(sp.get("span_id"), 16)
        if not sid:
            continue
        attrs: dict[str, str] = {}
        _flat("", sp.get("data"), attrs)
        attrs.update({f"tag.{k}": v for k, v in pairs_dict(sp.get("tags")).items()})
        if sp.get("origin"):
            attrs["sentry.origin"] = s(sp["origin"], 100)
        s_start = ctx.ts(sp.get("start_timestamp"), clamp=False)
        rows.append(
            span_row(
                ctx,
                trace_id=hex_id(sp.get("trace_id"), 32) or trace_id,
                span_id=sid,
                parent=hex_id(sp.get("parent_span_id"), 16) or root_id,
                name=s(sp.get("description") or sp.get("op"), 1000),
                op=s(sp.get("op"), 100),
                start=s_start,
                end=ctx.ts(sp.get("timestamp"), clamp=False) if sp.get("timestamp") else s_start,
                status=sp.get("status"),
                attributes=attrs,
                resource=resource,
                session_id=session,
            )
        )
    return rows


def _attr_values(attrs: Any) -> dict[str, str]:
    """Typed span-v2 attributes `{k: {"value": v, "type": t}}` → `{k: str(v)}`."""
    out: dict[str, str] = {}
    for k, v in d(attrs).items():
        val = v.get("value") if isinstance(v, dict) and "value" in v else v
        if val is not None:
            out[str(k)[:200]] = s(val, 4000)
    return out


def v2_span_rows(entries: list[dict[str, Any]], ctx: Context) -> list[Row]:
    dsc = d(ctx.envelope.headers.get("trace"))
    sdk = d(ctx.envelope.headers.get("sdk"))
    rows = []
    for sp in entries:
        sp = scrub(sp)
        trace_id = hex_id(sp.get("trace_id"), 32)
        span_id = hex_id(sp.get("span_id"), 16)
        if not trace_id or not span_id:
            continue
        attrs = _attr_values(sp.get("attributes"))
        release = attrs.get("sentry.release") or s(dsc.get("release"))
        resource = {
            "service.name": attrs.get("service.name")
            or _service(release, attrs.get("server.address", ""), s(sdk.get("name"))),
            "sentry.release": release,
            "sentry.environment": attrs.get("sentry.environment") or s(dsc.get("environment")),
            "sentry.sdk.name": s(sdk.get("name"), 100) or attrs.get("sentry.sdk.name", ""),
            "sentry.sdk.version": s(sdk.get("version"), 50) or attrs.get("sentry.sdk.version", ""),
        }
        resource = {k: v for k, v in resource.items() if v}
        if sp.get("is_segment"):
            attrs["sentry.is_segment"] = "true"
        start = ctx.ts(sp.get("start_timestamp"), clamp=False)
        end_raw = sp.get("end_timestamp") or sp.get("timestamp")
        rows.append(
            span_row(
                ctx,
                trace_id=trace_id,
                span_id=span_id,
                parent=hex_id(sp.get("parent_span_id"), 16),
                name=s(sp.get("name") or sp.get("description"), 1000),
                op=attrs.get("sentry.op") or s(sp.get("op"), 100),
                start=start,
                end=ctx.ts(end_raw, clamp=False) if end_raw else start,
                status=sp.get("status"),
                attributes=attrs,
                resource=resource,
                session_id=attrs.get("openReplaySession.id", ""),
            )
        )
    return rows


# ---------- sessions, client reports, raw items ----------


def session_rows(obj: dict[str, Any], item: Item, ctx: Context, index: int) -> list[Row]:
    attrs = d(obj.get("attrs"))
    base = {
        "project_id": ctx.project_id,
        "release": s(attrs.get("release"), 200),
        "environment": s(attrs.get("environment"), 64),
        "received_at": ch_seconds(ctx.received),
        "retention_days": ctx.retention,
    }
    if item.type == "session":
        started = ctx.ts(obj.get("started"))
        dur = obj.get("duration")
        return [
            Row(
                SESSIONS,
                {
                    **base,
                    "row_uid": ctx.uid(index),
                    "kind": "session",
                    "session_id": s(obj.get("sid"), 100),
                    "distinct_id": s(obj.get("did"), 200),
                    "status": s(obj.get("status"), 20) or "ok",
                    "init": 1 if obj.get("init") else 0,
                    "errors": count_of(obj.get("errors"), "errors"),
                    "started": ch_seconds(started),
                    "timestamp": ch_seconds(ctx.ts(obj.get("timestamp"))),
                    "duration": (
                        float(dur)
                        if isinstance(dur, int | float) and abs(dur) < 1e15 and dur == dur
                        else None
                    ),
                    "exited": 0,
                    "errored": 0,
                    "crashed": 0,
                    "abnormal": 0,
                },
            )
        ]
    rows = []
    for n, agg in enumerate(obj.get("aggregates") or []):
        if not isinstance(agg, dict):
            continue
        started = ctx.ts(agg.get("started"))

        def count(k: str, agg: dict[str, Any] = agg) -> int:
            v = agg.get(k)
            return count_of(v, k) if isinstance(v, int | float) else 0

        rows.append(
            Row(
                SESSIONS,
                {
                    **base,
                    "row_uid": ctx.uid(index, n),
                    "kind": "aggregate",
                    "session_id": "",
                    "distinct_id": s(agg.get("did"), 200),
                    "status": "",
                    "init": 0,
                    "errors": 0,
                    "started": ch_seconds(started),
                    "timestamp": ch_seconds(started),
                    "duration": None,
                    "exited": count("exited"),
                    "errored": count("errored"),
                    "crashed": count("crashed"),
                    "abnormal": count("abnormal"),
                },
            )
        )
    return rows


def outcome_rows(obj: dict[str, Any], ctx: Context, index: int) -> list[Row]:
    rows = []
    ts = ch_seconds(ctx.ts(obj.get("timestamp")))
    for n, ev in enumerate(obj.get("discarded_events") or []):
        if not isinstance(ev, dict):
            continue
        q = ev.get("quantity")
        # UInt64 column, but no SDK drops 4 billion items between two reports: a larger
        # number is a broken (or hostile) report, kept at the cap.
        qty = count_of(q, "quantity") if isinstance(q, int | float) else 0
        reason, category = s(ev.get("reason"), 100), s(ev.get("category"), 100)
        rows.append(
            Row(
                OUTCOMES,
                {
                    "project_id": ctx.project_id,
                    "row_uid": ctx.uid(index, n),
                    "timestamp": ts,
                    "reason": reason,
                    "category": category,
                    "quantity": qty,
                    "sdk": ctx.client[:100],
                    "received_at": ch_seconds(ctx.received),
                    "retention_days": ctx.retention,
                },
            )
        )
        label = (
            reason if reason in DISCARD_REASONS else "other",
            category if category in DISCARD_CATEGORIES else "other",
        )
        rows.append(Row(METRIC, {"discarded": label, "n": qty}))
    return rows


def raw_row(item: Item, ctx: Context, index: int, error: str = "") -> Row:
    payload = item.payload
    try:
        text, encoding = payload.decode("utf-8"), "utf8"
        # Scrubbed like events, whatever the type and whether it decoded (a transaction
        # kept raw for its error holds the same tokens and card numbers): JSON by key,
        # other text by pattern.
        try:
            obj = orjson.loads(payload)
            if not ctx.store_ip and isinstance(obj, dict):
                obj = _without_ips(obj)
                if isinstance(obj.get("user"), dict):
                    obj["user"] = {k: v for k, v in obj["user"].items() if k != "ip_address"}
            text = dumps(scrub(obj))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            text = scrub_text(text)
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode(), "base64"
    headers = scrub(dict(item.headers))
    if error:
        headers["_weftline_error"] = error
    trace_id = ""
    if item.type in ("replay_event", "feedback", "check_in"):
        try:
            obj = orjson.loads(payload)
            trace_id = hex_id(d(d(d(obj).get("contexts")).get("trace")).get("trace_id"), 32)
        except orjson.JSONDecodeError:
            pass
    trace_id = trace_id or hex_id(d(ctx.envelope.headers.get("trace")).get("trace_id"), 32)
    return Row(
        ITEMS,
        {
            "project_id": ctx.project_id,
            "row_uid": ctx.uid(index),
            "item_type": item.type[:100],
            "event_id": ctx.envelope.event_id or "",
            "trace_id": trace_id,
            "received_at": ch_seconds(ctx.received),
            "content_type": s(item.headers.get("content_type"), 200),
            "filename": s(item.headers.get("filename"), 500),
            "attachment_type": s(item.headers.get("attachment_type"), 100),
            "size": len(payload),
            "encoding": encoding,
            "headers": dumps(headers),
            "payload": text,
            "retention_days": ctx.retention,
        },
    )


RAW_TYPES = frozenset(
    {
        "attachment",
        "check_in",
        "feedback",
        "user_report",
        "log",
        "trace_metric",
        "replay_event",
        "replay_recording",
        "replay_video",
        "profile",
        "profile_chunk",
    }
)


# Sentry's discard reasons and data categories (relay-base-schema DataCategory and the
# SDKs' DiscardReason): metric labels come from these lists, anything else is `other`.
DISCARD_REASONS = frozenset(
    "queue_overflow cache_overflow ratelimit_backoff network_error sample_rate before_send "
    "event_processor send_error internal_sdk_error insufficient_data backpressure "
    "buffer_overflow".split()
)
DISCARD_CATEGORIES = frozenset(
    "default error transaction security attachment attachment_item session profile "
    "profile_chunk replay feedback span monitor log_item log_byte internal metric_bucket "
    "trace_metric user_report_v2".split()
)
KNOWN_TYPES = (
    RAW_TYPES
    | CONTAINER_TYPES
    | {
        "event",
        "transaction",
        "span",
        "session",
        "sessions",
        "client_report",
    }
)


def check_ranges(rows: list[Row]) -> None:
    """Every integer a row holds fits a 64-bit column and every float is finite, else the
    item is rejected: one value the insert cannot take would fail its whole batch."""
    for row in rows:
        for k, v in row.data.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, int) and not -(2**63) <= v < 2**64:
                raise EnvelopeError(f"{k} is out of range")
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                raise EnvelopeError(f"{k} is not a finite number")


def decode_envelope_entry(
    entry: Entry, project: ProjectConfig | None = None, symbolicate: Symbolicate | None = None
) -> list[Row]:
    """One stream entry → rows; pure but for `symbolicate`'s source map reads. A bad
    item is kept raw with its reason, so one broken session update never costs the
    error event beside it."""
    ctx = _context(entry, project, symbolicate)
    rows: list[Row] = []
    for i, item in enumerate(ctx.envelope.items):
        t = item.type
        label = t if t in KNOWN_TYPES else "other"
        item_rows: list[Row] = []
        try:
            if t == "event":
                item_rows.append(error_row(item_json(item, i), ctx, i))
            elif t == "transaction":
                item_rows.extend(transaction_rows(item_json(item, i), ctx))
            elif t == "span":
                item_rows.extend(v2_span_rows(container_items(item, i), ctx))
            elif t in ("session", "sessions"):
                item_rows.extend(session_rows(item_json(item, i), item, ctx, i))
            elif t == "client_report":
                item_rows.extend(outcome_rows(item_json(item, i), ctx, i))
            elif t in CONTAINER_TYPES:
                container_items(item, i)  # validated, kept raw
                item_rows.append(raw_row(item, ctx, i))
            else:
                rows.append(raw_row(item, ctx, i))
                outcome = "raw" if t in RAW_TYPES else "unknown"
                rows.append(Row(METRIC, {"type": label, "outcome": outcome}))
                continue
            check_ranges(item_rows)
        except EnvelopeError as e:
            rows.append(raw_row(item, ctx, i, error=e.reason))
            rows.append(Row(METRIC, {"type": label, "outcome": "invalid"}))
            continue
        except Exception as e:  # a bug on one item must not cost its siblings
            rows.append(raw_row(item, ctx, i, error=f"decoder failed: {type(e).__name__}"))
            rows.append(Row(METRIC, {"type": label, "outcome": "invalid"}))
            continue
        rows.extend(item_rows)
        rows.append(Row(METRIC, {"type": label, "outcome": "stored"}))
    return rows


class SentryHandler:
    kind = "sentry"
    # decode reads source maps from ClickHouse on a cache miss: run it off the loop.

    def __init__(
        self,
        ch: ClickHouse,
        project_of: Callable[[int], ProjectConfig | None],
        client: aioredis.Redis | None = None,
        symbolicator: Symbolicator | None = None,
    ) -> None:
        self.ch = ch
        self.project_of = project_of
        self.client = client
        self.symbolicator = symbolicator or Symbolicator(
            lambda p, r, urls: sourcemap_store.by_url(ch, p, r, urls),
            lambda p, d: sourcemap_store.by_debug_id(ch, p, d),
        )

    def decode(self, entry: Entry) -> list[Row]:
        try:
            pid = int(entry.fields.get(b"project", b"0"))
        except ValueError:
            pid = 0
        return decode_envelope_entry(entry, self.project_of(pid), self.symbolicator)

    async def store(self, rows: list[Row], token: str) -> None:
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            if r.table:
                by_table[r.table].append(r.data)
        await write_tables(self.ch, with_links(dict(by_table)), token)

    async def after_store(self, rows: list[Row]) -> None:
        if self.client is not None:
            await live.publish(
                self.client,
                (
                    (r.data["project_id"], live.error_item(r.data))
                    for r in rows
                    if r.table == "sentry_errors"
                ),
            )
        for r in rows:
            if r.table:
                continue
            if "discarded" in r.data:
                reason, category = r.data["discarded"]
                SENTRY_CLIENT_DISCARDED.labels(reason, category).inc(r.data["n"])
            else:
                SENTRY_ITEMS.labels(r.data["type"], r.data["outcome"]).inc()
