"""The live feed: one pub/sub message per project per stored batch, a JSON array of
small items (`type`, `ts`, `session_id`, a title). The SSE endpoint fans them out and
filters by session. Published only after the rows are stored, so whatever a client
sees live is already queryable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis

from weftline.enrich.links import sentry_session
from weftline.storage.keys import live_channel
from weftline.storage.valkey import publish_many

QUIET_REPLAY_KINDS = {"performance", "resource", "viewport", "tab", "metadata"}


def replay_item(r: dict[str, Any]) -> dict[str, Any] | None:
    if r.get("kind") in QUIET_REPLAY_KINDS or "kind" not in r:
        return None
    k = r["kind"]
    if k == "network":
        title = f"{r.get('method') or 'GET'} {r.get('url')} → {r.get('status')}"
    elif k == "exception":
        title = f"{r.get('name') or 'Error'}: {r.get('value')}"
    else:
        title = f"{k} {r.get('name') or r.get('selector') or r.get('page_url') or ''}".strip()
    return {
        "type": "replay",
        "kind": k,
        "ts": str(r["ts"]),
        "session_id": r["session_id"],
        "title": title,
        "trace_id": r.get("trace_id") or "",
    }


def error_item(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "error",
        "kind": "error",
        "ts": str(r["timestamp"]),
        "session_id": sentry_session(r),
        "title": r.get("title", ""),
        "group_id": r.get("group_id", ""),
        "trace_id": r.get("trace_id", ""),
    }


def span_item(r: dict[str, Any]) -> dict[str, Any] | None:
    if not r.get("session_id"):
        return None
    return {
        "type": "span",
        "kind": "span",
        "ts": str(r["start_time"]),
        "session_id": r["session_id"],
        "trace_id": r["trace_id"],
        "title": f"{r.get('service_name') or 'span'}: {r.get('name')}",
    }


async def publish(
    client: aioredis.Redis, items: Iterable[tuple[int, dict[str, Any] | None]]
) -> None:
    by_project: dict[int, list[bytes]] = {}
    for project_id, item in items:
        if item is not None:
            by_project.setdefault(project_id, []).append(orjson.dumps(item))
    await publish_many(
        client, [(live_channel(p), b"[" + b",".join(m) + b"]") for p, m in by_project.items()]
    )
