"""Replay worker: `wl:in:replay` entries → sessions, semantic events and raw batches.

A `start` entry (one tracker start, new or continued) becomes a `replay_sessions`
row; a `batch` entry is decoded (enrich.openreplay_decode) into `replay_events`
rows plus one `replay_batches` row with the raw body. Ids come from the batch's own
header (page, tab, stream, first index) so a redelivered entry, or a batch the
tracker retried with identical bytes, collapses under FINAL.

Sessions end implicitly (the tracker never says so): after each store the session's
last activity goes into a Valkey sorted set, and one elected ender (a Valkey lock
shared by all workers) closes sessions idle for `session_inactivity_seconds` by
writing their totals with a newer version.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import orjson
import redis.asyncio as aioredis

from weftline.enrich import live
from weftline.enrich.agent_events import STORED_COLUMNS as AGENT_COLUMNS
from weftline.enrich.agent_events import decode_agent_entry
from weftline.enrich.links import with_links
from weftline.enrich.openreplay_decode import Batch, OpenReplayDecodeError, decode_batches
from weftline.enrich.sentry_scrub import mask_bytes, scrub_string
from weftline.enrich.stream_consumer import DecodeError, Entry
from weftline.ground.config import OpenReplaySettings
from weftline.ground.metrics import (
    REPLAY_MESSAGES,
    REPLAY_SESSIONS_ENDED,
)
from weftline.ground.times import ch_ms
from weftline.storage import replay_queries
from weftline.storage.clickhouse import ClickHouse
from weftline.storage.keys import replay_active_key, replay_ender_lock
from weftline.storage.writer import write_tables

log = logging.getLogger("weftline.replay")

SESSIONS = "replay_sessions"
EVENTS = "replay_events"
BATCHES = "replay_batches"
AGENT_EVENTS = "agent_events"
AGENT_EVENT_TYPES = frozenset({"agent_state", "task_update", "visualization_interaction", "hitl"})

MIN_MS = 86_400_000  # 1970-01-02
MAX_MS = 4_102_444_800_000  # 2100-01-01
UINT16 = 65_535
UINT64 = 2**64 - 1

# Header names whose values are secrets: dropped from stored requests.
SECRET_HEADER_RE = re.compile(
    r"^(authorization|proxy-authorization|cookie|set-cookie|x-openreplay-sessiontoken)$"
    r"|token|secret|api[-_]?key|password|session",
    re.I,
)
SECRET_FIELD_RE = re.compile(
    r"(pass(word)?|secret|token|api[-_]?key|authorization|cookie|session)", re.I
)
TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
FILTERED = "[Filtered]"
SCRUBBED_FIELDS = ("url", "value", "name", "request_body", "response_body")

Row = dict[str, Any]


def _sane_ms(ms: int, fallback: int) -> int:
    return ms if MIN_MS <= ms <= MAX_MS else fallback


def _field(fields: Mapping[bytes, bytes], name: bytes, default: bytes | None = None) -> bytes:
    v = fields.get(name, default)
    if v is None:
        raise DecodeError(f"entry has no {name.decode()!r} field")
    return v


def _int(fields: Mapping[bytes, bytes], name: bytes, default: int | None = None) -> int:
    raw = fields.get(name)
    if raw is None:
        if default is None:
            raise DecodeError(f"entry has no {name.decode()!r} field")
        return default
    try:
        return int(raw)
    except ValueError:
        raise DecodeError(f"entry field {name.decode()!r} is not an integer") from None


# --- user agent -------------------------------------------------------------------


@lru_cache(maxsize=4096)
def parse_user_agent(ua: str) -> tuple[str, str, str, str, str, str]:
    """(browser, browser version, OS, OS version, device type, device) via ua-parser."""
    from ua_parser import parse

    r = parse(ua)
    agent, os_ = r.user_agent, r.os
    browser = agent.family if agent else "Other"
    bver = ".".join(p for p in (agent.major, agent.minor) if p) if agent else ""
    os_name = os_.family if os_ else "Other"
    over = ".".join(p for p in (os_.major, os_.minor) if p) if os_ else ""
    device = r.device.family if r.device else ""
    low = ua.lower()
    if re.search(r"bot|crawler|spider|slurp", low) or device == "Spider":
        dtype = "bot"
    elif "ipad" in low or "tablet" in low or (os_name == "Android" and "mobile" not in low):
        dtype = "tablet"
    elif "mobi" in low or os_name in ("iOS", "Android"):
        dtype = "mobile"
    elif os_name in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora"):
        dtype = "desktop"
    else:
        dtype = "other"
    return browser, bver, os_name, over, dtype, "" if device == "Other" else device


# --- network scrubbing ------------------------------------------------------------


def _scrub_json(v: Any, depth: int = 0) -> Any:
    if depth > 20:
        return FILTERED
    if isinstance(v, dict):
        return {
            k: FILTERED if SECRET_FIELD_RE.search(str(k)) else _scrub_json(x, depth + 1)
            for k, x in v.items()
        }
    if isinstance(v, list):
        return [_scrub_json(x, depth + 1) for x in v]
    return v


def scrub_body(body: Any, cap: int) -> str:
    """A request/response body as text, secrets in JSON keys masked, at most `cap` chars."""
    if body is None or body == "":
        return ""
    if isinstance(body, str):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body
        else:
            text = (
                orjson.dumps(_scrub_json(parsed)).decode()
                if isinstance(parsed, dict | list)
                else body
            )
    else:
        text = orjson.dumps(_scrub_json(body)).decode()
    return text[:cap]


def split_http(raw: str, cap: int) -> tuple[dict[str, str], str]:
    """The tracker's `{"headers":{…},"body":…}` JSON string → (scrubbed headers, body)."""
    try:
        doc = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}, raw[:cap]
    if not isinstance(doc, dict):
        return {}, ""
    headers: dict[str, str] = {}
    h = doc.get("headers")
    if isinstance(h, dict):
        for k, v in list(h.items())[:100]:
            name = str(k)[:200]
            headers[name] = FILTERED if SECRET_HEADER_RE.search(name) else str(v)[:2000]
    return headers, scrub_body(doc.get("body"), cap)


def trace_of(headers: Mapping[str, str]) -> tuple[str, str]:
    for k, v in headers.items():
        if k.lower() == "traceparent":
            m = TRACEPARENT_RE.match(v.strip().lower())
            if m:
                return m.group(1), m.group(2)
    return "", ""


def _json_or_text(s: str) -> Any:
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        return s


# --- batch → rows -----------------------------------------------------------------


def event_rows(
    batch: Batch,
    project_id: int,
    session_id: str,
    delay_ms: int,
    received_ms: int,
    retention_days: int,
    body_cap: int,
) -> list[Row]:
    """The semantic events of one decoded batch (pure)."""
    tab_default = batch.tab_id
    prefix = f"{batch.page_no}:{tab_default}:{batch.version}:{batch.first_index}:"
    rows: list[Row] = []
    for t in batch.messages:
        m = t.message
        tid = m.TYPE
        r: Row | None = None
        if tid in (122, 4):
            r = {
                "kind": "page",
                "url": m.url,
                "name": getattr(m, "document_title", ""),
                "value": m.referrer,
                "details": {"navigation_start": m.navigation_start},
            }
        elif tid in (68, 69):
            r = {
                "kind": "click",
                "name": m.label,
                "selector": m.selector,
                "x": getattr(m, "normalized_x", -1),
                "y": getattr(m, "normalized_y", -1),
                "details": {"node_id": m.id, "hesitation_ms": m.hesitation_time},
            }
        elif tid == 112:
            r = {
                "kind": "input",
                "name": m.label,
                "value": m.value,
                "duration_ms": m.input_duration,
                "details": {
                    "node_id": m.id,
                    "masked": m.value_masked,
                    "hesitation_ms": m.hesitation_time,
                },
            }
        elif tid in (83, 21):
            req_h, req_b = split_http(m.request, body_cap)
            resp_h, resp_b = split_http(m.response, body_cap)
            trace_id, span_id = trace_of(req_h)
            started = m.timestamp + delay_ms if m.timestamp else t.ts
            r = {
                "kind": "network",
                "ts_ms": started,
                "name": m.type,
                "method": m.method.upper()[:16],
                "url": m.url,
                "status": min(m.status, UINT16),
                "duration_ms": m.duration,
                "request_headers": req_h,
                "response_headers": resp_h,
                "request_body": req_b,
                "response_body": resp_b,
                "response_size": min(getattr(m, "transferred_body_size", 0), UINT64),
                "trace_id": trace_id,
                "span_id": span_id,
            }
        elif tid == 22:
            r = {"kind": "console", "name": m.level, "value": m.value[: body_cap * 4]}
        elif tid == 78:
            r = {
                "kind": "exception",
                "name": m.name,
                "value": m.message,
                "stack": m.payload,
                "details": {"metadata": _json_or_text(m.metadata)},
            }
        elif tid == 27:
            r = {"kind": "custom", "name": m.name, "value": m.payload}
        elif tid == 64:
            r = {"kind": "issue", "name": m.name, "value": m.payload, "details": {"custom": True}}
        elif tid == 125:
            r = {
                "kind": "issue",
                "name": m.type,
                "selector": m.context,
                "value": m.payload,
                "url": m.url,
                "details": {"context": m.context_string, "message_index": m.message_id},
            }
        elif tid == 114:
            r = {"kind": "issue", "name": "mouse_thrashing"}
        elif tid == 87:
            r = {
                "kind": "incident",
                "name": m.label,
                "duration_ms": m.end_time - m.start_time,
                "details": {"start_time": m.start_time, "end_time": m.end_time},
            }
        elif tid in (23, 24, 89):
            fields = {f: getattr(m, f) for f in m.__dataclass_fields__}
            name = {23: "page_load", 24: "page_render", 89: "long_animation_task"}[tid]
            dur = {23: fields.get("load_event_end"), 24: fields.get("time_to_interactive")}
            r = {
                "kind": "performance",
                "name": name,
                "duration_ms": dur.get(tid, fields.get("duration", 0)) or 0,
                "details": fields,
            }
        elif tid == 124:
            try:
                num = float(m.value)
            except ValueError:
                num = 0.0
            r = {"kind": "web_vital", "name": m.name, "value": m.value, "duration_ms": num}
        elif tid in (85, 116, 53):
            fields = {f: getattr(m, f) for f in m.__dataclass_fields__}
            r = {
                "kind": "resource",
                "ts_ms": m.timestamp + delay_ms if m.timestamp else t.ts,
                "name": m.initiator,
                "url": m.url,
                "duration_ms": m.duration,
                "response_size": min(fields.get("transferred_size", 0), UINT64),
                "details": {k: v for k, v in fields.items() if k not in ("url", "initiator")},
            }
        elif tid == 5:
            r = {"kind": "viewport", "x": min(m.width, 2**31 - 1), "y": min(m.height, 2**31 - 1)}
        elif tid == 55:
            r = {"kind": "visibility", "value": "hidden" if m.hidden else "visible"}
        elif tid == 117:
            r = {"kind": "tab", "name": m.tab_id}
        elif tid == 28:
            r = {"kind": "user_id", "value": m.id}
        elif tid == 29:
            r = {"kind": "anonymous_id", "value": m.id}
        elif tid == 30:
            r = {"kind": "metadata", "name": m.key, "value": m.value}
        elif tid in (123, 48):
            r = {
                "kind": "graphql",
                "name": m.operation_name,
                "method": m.operation_kind[:16],
                "duration_ms": m.duration,
                "request_body": scrub_body(m.variables, body_cap),
                "response_body": scrub_body(m.response, body_cap),
            }
        elif tid in (121, 44, 45, 46, 47, 79, 42):
            fields = {f: getattr(m, f) for f in m.__dataclass_fields__}
            r = {
                "kind": "state",
                "name": m.NAME,
                "value": str(next(iter(fields.values()), ""))[:body_cap],
                "duration_ms": fields.get("duration", 0),
            }
        elif tid == 84:
            r = {
                "kind": "websocket",
                "name": m.channel_name,
                "method": m.dir[:16],
                "value": m.data[:body_cap],
                "details": {"type": m.message_type, "channel_type": m.ch_type},
            }
        if r is None:
            continue
        # After the tracker's own masking, the shared scrubber: card numbers, Bearer
        # credentials and secret query parameters in URLs, input values and bodies.
        for k in SCRUBBED_FIELDS:
            v = r.get(k)
            if isinstance(v, str) and v:
                r[k] = scrub_string(v)
        ts = _sane_ms(r.pop("ts_ms", t.ts), _sane_ms(t.ts, received_ms))
        details = r.pop("details", None)
        row = {
            "project_id": project_id,
            "session_id": session_id,
            "event_uid": prefix + str(t.ordinal),
            "ts": ch_ms(ts),
            "page_no": batch.page_no,
            "tab_id": t.tab_id or tab_default,
            "page_url": t.page_url,
            "retention_days": retention_days,
            **r,
        }
        row["page_url"] = scrub_string(row["page_url"]) if row["page_url"] else ""
        if details is not None:
            row["details"] = orjson.dumps(details).decode()
        rows.append(row)
    return rows


def agent_rows_from_custom(
    events: list[Row], project_id: int, received_ms: int, retention_days: int
) -> list[Row]:
    """`tracker.event("visualization_interaction", {...})` (or another agent event type)
    also lands in agent_events, linked to the session. Invalid payloads are left as
    ordinary custom events."""
    out: list[Row] = []
    for ev in events:
        if ev["kind"] != "custom" or ev["name"] not in AGENT_EVENT_TYPES:
            continue
        try:
            payload = orjson.loads(ev["value"])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(payload, dict):
            continue
        doc = {"ts": ev["ts"].replace(" ", "T") + "Z", **payload}
        doc.update(type=ev["name"], session_id=ev["session_id"])
        fields = {
            b"project": str(project_id).encode(),
            b"received_at": str(received_ms).encode(),
            b"p": orjson.dumps([doc]),
        }
        try:
            rows = decode_agent_entry(
                f"or:{ev['session_id']}:{ev['event_uid']}", fields, retention_days
            )
        except DecodeError:
            continue
        for r in rows:
            out.append({k: getattr(r, k) for k in AGENT_COLUMNS})
    return out


def decode_replay_entry(
    entry_id: str,
    fields: Mapping[bytes, bytes],
    retention_days: int,
    body_cap: int,
) -> list[tuple[str, Row]]:
    """Pure: one stream entry → (table, row) pairs."""
    kind = _field(fields, b"t", b"batch").decode(errors="replace")
    project_id = _int(fields, b"project")
    received_ms = _int(fields, b"received_at")
    session_id = _field(fields, b"sid").decode(errors="replace")
    if not session_id.isdigit() or len(session_id) > 40:
        raise DecodeError(f"bad session id {session_id[:50]!r}")
    started_ms = _sane_ms(_int(fields, b"started_at", received_ms), received_ms)
    delay = _int(fields, b"delay", 0)
    payload = _field(fields, b"p")
    if kind == "start":
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise DecodeError(f"start payload is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise DecodeError("start payload is not an object")
        return [
            (
                SESSIONS,
                session_row(
                    doc, fields, project_id, session_id, started_ms, received_ms, retention_days
                ),
            )
        ]
    if kind != "batch":
        raise DecodeError(f"unknown replay entry type {kind!r}")
    try:
        batches = decode_batches(payload)
    except OpenReplayDecodeError as e:
        raise DecodeError(f"undecodable tracker batch: {e}") from None
    out: list[tuple[str, Row]] = []
    events: list[Row] = []
    for b in batches:
        events.extend(
            event_rows(b, project_id, session_id, delay, received_ms, retention_days, body_cap)
        )
    out.extend((EVENTS, r) for r in events)
    out.extend(
        (AGENT_EVENTS, r)
        for r in agent_rows_from_custom(events, project_id, received_ms, retention_days)
    )
    first = batches[0]
    data_type = fields.get(b"dt", b"").decode(errors="replace") or (
        "player" if first.version in (1, 2) else ""
    )
    out.append(
        (
            BATCHES,
            {
                "project_id": project_id,
                "session_id": session_id,
                "batch_uid": f"{first.page_no}:{first.tab_id}:{data_type}:{first.first_index}",
                "ts": ch_ms(_sane_ms(first.timestamp, received_ms)),
                "received_at": ch_ms(received_ms),
                "page_no": first.page_no,
                "tab_id": first.tab_id,
                "data_type": data_type,
                "first_index": min(first.first_index, UINT64),
                "messages": sum(len(b.messages) for b in batches),
                "size": len(payload),
                # The raw batch the player replays, with the same scrubber's matches
                # masked in place (its framing intact).
                "body_base64": base64.b64encode(mask_bytes(payload)).decode(),
                "retention_days": retention_days,
            },
        )
    )
    return out


def session_row(
    doc: Mapping[str, Any],
    fields: Mapping[bytes, bytes],
    project_id: int,
    session_id: str,
    started_ms: int,
    received_ms: int,
    retention_days: int,
) -> Row:
    ua = fields.get(b"ua", b"").decode(errors="replace")[:1000]
    browser, bver, os_name, over, dtype, device = parse_user_agent(ua)

    def s(key: str, cap: int = 500) -> str:
        v = doc.get(key)
        return v[:cap] if isinstance(v, str) else ""

    def dim(key: str) -> int:
        v = doc.get(key)
        return max(0, min(int(v), UINT16)) if isinstance(v, int | float) else 0

    return {
        "project_id": project_id,
        "session_id": session_id,
        "started_at": ch_ms(started_ms),
        "user_uuid": s("userUUID", 64),
        "user_id": s("userID").strip(),
        "tracker_version": s("trackerVersion", 40),
        "rev_id": s("revID", 200),
        "user_agent": ua,
        "browser": browser,
        "browser_version": bver,
        "os": os_name,
        "os_version": over,
        "device_type": dtype,
        "device": device,
        "timezone": s("timezone", 20),
        "screen_width": dim("width"),
        "screen_height": dim("height"),
        "referrer": s("referrer", 2000),
        "ended": 0,
        "last_event_at": ch_ms(started_ms),
        "version": received_ms,
        "retention_days": retention_days,
    }


# --- the handler -----------------------------------------------------------------

# Remove a session from the active set only if no batch touched it since the ender
# read it, so a session that woke up is not closed early.
ZREM_IF_IDLE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class OpenReplayHandler:
    kind = "replay"

    def __init__(
        self,
        ch: ClickHouse,
        client: aioredis.Redis,
        retention_of: Callable[[int], int],
        cfg: OpenReplaySettings,
    ) -> None:
        self.ch = ch
        self.client = client
        self.retention_of = retention_of
        self.cfg = cfg
        self._zrem_if_idle = client.register_script(ZREM_IF_IDLE)
        self._release = client.register_script(RELEASE_LOCK)
        self.ended_sessions = 0

    def decode(self, entry: Entry) -> list[tuple[str, Row]]:
        try:
            project_id = int(entry.fields.get(b"project", b"0"))
        except ValueError:
            project_id = 0
        rows = decode_replay_entry(
            entry.id, entry.fields, self.retention_of(project_id), self.cfg.max_body_chars
        )
        REPLAY_MESSAGES.inc(sum(r["messages"] for t, r in rows if t == BATCHES))
        return rows

    async def store(self, rows: list[tuple[str, Row]], token: str) -> None:
        by_table: dict[str, list[Row]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        # Sessions first: a session row should exist before its events are visible.
        await write_tables(
            self.ch, with_links(by_table), token, order=(SESSIONS, EVENTS, AGENT_EVENTS, BATCHES)
        )

    async def after_store(self, rows: list[tuple[str, Row]]) -> None:
        now = int(time.time() * 1000)
        members = {f"{r['project_id']}:{r['session_id']}" for t, r in rows if t != AGENT_EVENTS}
        if members:
            await self.client.zadd(replay_active_key(), dict.fromkeys(members, now), gt=True)
        await live.publish(
            self.client, ((r["project_id"], live.replay_item(r)) for t, r in rows if t == EVENTS)
        )

    # --- session ender ----------------------------------------------------------

    async def background(self, stop: asyncio.Event) -> None:
        """Runs in every worker process; only the lock holder does the work."""
        me = f"{id(self)}-{time.time_ns()}"
        interval = self.cfg.ender_interval_seconds
        while not stop.is_set():
            try:
                got = await self.client.set(
                    replay_ender_lock(), me, nx=True, px=int(interval * 4000)
                )
                if got:
                    try:
                        await self.end_idle_sessions()
                    finally:
                        await self._release(keys=[replay_ender_lock()], args=[me])
            except Exception as e:  # Valkey or ClickHouse down: try again next round
                log.warning("session ender: %s: %s", type(e).__name__, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def end_idle_sessions(self, now_ms: int | None = None) -> int:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now - self.cfg.session_inactivity_seconds * 1000
        idle = await self.client.zrangebyscore(replay_active_key(), "-inf", cutoff, 0, 500)
        ended = 0
        for raw in idle:
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            pid_s, _, sid = member.partition(":")
            if not pid_s.isdigit() or not sid:
                await self.client.zrem(replay_active_key(), raw)
                continue
            row = await asyncio.to_thread(
                replay_queries.closed_session_row, self.ch, int(pid_s), sid, now
            )
            if row is not None:
                if not row.get("retention_days"):
                    row["retention_days"] = self.retention_of(int(pid_s))
                await asyncio.to_thread(self.ch.insert, SESSIONS, [row], None)
                ended += 1
            await self._zrem_if_idle(keys=[replay_active_key()], args=[member, cutoff])
        if ended:
            REPLAY_SESSIONS_ENDED.inc(ended)
            self.ended_sessions += ended
        return ended
