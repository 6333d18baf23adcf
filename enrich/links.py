"""Correlation evidence → `links` rows. Pure.

Each signal carries its own evidence that something belongs to a user session; the
workers write it down as it arrives, so whichever signal lands first, the link exists
once the evidence does, and queries join on `links` instead of re-deriving:

| evidence                                             | link                     |
| ---------------------------------------------------- | ------------------------ |
| a span with `session.id` / an OpenReplay attribute   | session → its trace      |
| a tracker network request with a `traceparent`       | session → that trace     |
| a Sentry event tagged `openReplaySession.*`          | session → the event, and → its trace |
| an agent event with `session_id` and `trace_id`      | session → that trace     |

Errors and spans that share a linked trace reach the session through it (read side).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

LINKS = "links"
SESSION_URL_RE = re.compile(r"/session/(\d{1,40})(?:[/?#]|$)")
TOKEN_SESSION_RE = re.compile(r"^(\d{1,40})\.\d+\.")

REASON_SPAN = "span attribute session.id"
REASON_TRACEPARENT = "traceparent header of a tracker network request"
REASON_SENTRY_TAG = "Sentry tag openReplaySession"
REASON_SENTRY_TRACE = "trace of a Sentry event tagged with the session"
REASON_AGENT = "agent event with session_id and trace_id"


def link(
    row: dict[str, Any],
    session_id: str,
    kind: str,
    target: str,
    reason: str,
    source: str,
    ts: str,
) -> dict[str, Any]:
    return {
        "project_id": row["project_id"],
        "session_id": session_id,
        "kind": kind,
        "target_id": target,
        "reason": reason,
        "source": source,
        "inferred": 0,
        "ts": ts[:23],
        "retention_days": row.get("retention_days", 30),
    }


def sentry_session(row: dict[str, Any]) -> str:
    """The OpenReplay session a Sentry event names: the id tag, else the session URL,
    else the session token (its first field is the session id)."""
    if row.get("openreplay_session_id"):
        return str(row["openreplay_session_id"])
    m = SESSION_URL_RE.search(row.get("openreplay_session_url") or "")
    if m:
        return m.group(1)
    m = TOKEN_SESSION_RE.match(row.get("openreplay_session_token") or "")
    return m.group(1) if m else ""


def links_for(table: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if table == "spans":
        for r in rows:
            if r.get("session_id") and r.get("trace_id"):
                out.append(
                    link(
                        r,
                        r["session_id"],
                        "trace",
                        r["trace_id"],
                        REASON_SPAN,
                        r.get("source", "otlp"),
                        str(r["start_time"]),
                    )
                )
    elif table == "replay_events":
        for r in rows:
            if r.get("kind") == "network" and r.get("trace_id"):
                out.append(
                    link(
                        r,
                        r["session_id"],
                        "trace",
                        r["trace_id"],
                        REASON_TRACEPARENT,
                        "replay",
                        str(r["ts"]),
                    )
                )
    elif table == "sentry_errors":
        for r in rows:
            sid = sentry_session(r)
            if not sid:
                continue
            ts = str(r["timestamp"])
            out.append(link(r, sid, "error", r["event_id"], REASON_SENTRY_TAG, "sentry", ts))
            if r.get("trace_id"):
                out.append(link(r, sid, "trace", r["trace_id"], REASON_SENTRY_TRACE, "sentry", ts))
    elif table == "agent_events":
        for r in rows:
            if r.get("session_id") and r.get("trace_id"):
                out.append(
                    link(
                        r,
                        r["session_id"],
                        "trace",
                        r["trace_id"],
                        REASON_AGENT,
                        "agent",
                        str(r["ts"]),
                    )
                )
    # One row per (session, kind, target, reason) is enough: the table collapses the rest.
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for lk in out:
        unique.setdefault(
            (lk["project_id"], lk["session_id"], lk["kind"], lk["target_id"], lk["reason"]), lk
        )
    return list(unique.values())


def with_links(by_table: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The same tables plus the `links` rows their evidence implies."""
    links = [lk for table, rows in by_table.items() for lk in links_for(table, rows)]
    if not links:
        return by_table
    return {**by_table, LINKS: by_table.get(LINKS, []) + links}
