"""The replay of one session: the tracker's stored batches decoded server-side into the
messages a player needs to rebuild the page, in time order.

Output, one JSON document (`replay_document`):
    {"session_id", "start_ms", "duration_ms", "tabs": [tab ids],
     "messages": [[t_ms, tab_index, type_id, field, …], …]}
`t_ms` is milliseconds since the session's start (the origin of `?t=`); fields are in
wire order (see enrich.openreplay_decode.SCHEMA). Only what draws the page travels:
DOM, CSS, scroll, viewport, inputs, mouse, focus, page and tab changes. Console,
network and errors reach the page through the timeline.

The attribute dictionary (StringDictGlobal + SetNodeAttributeDictGlobal) is resolved
here, so the player only ever sees plain SetNodeAttribute(12) messages."""

from __future__ import annotations

import base64
from collections import OrderedDict
from threading import Lock
from typing import Any

from weftline.enrich.openreplay_decode import (
    SCHEMA,
    OpenReplayDecodeError,
    decode_batches,
    message_values,
)
from weftline.storage import replay_queries
from weftline.storage.clickhouse import ClickHouse

SET_NODE_ATTRIBUTE = 12
STRING_DICT_GLOBAL = 34
SET_NODE_ATTRIBUTE_DICT_GLOBAL = 35
STRING_DICT_DEPRECATED = 50
SET_NODE_ATTRIBUTE_DICT_DEPRECATED = 51
SET_NODE_ATTRIBUTE_DICT = 52

# What the player applies (by wire type id). Everything else is framed but not parsed.
PLAYER_TYPES = frozenset(
    {
        5,  # SetViewportSize
        6,  # SetViewportScroll
        7,  # CreateDocument
        8,  # CreateElementNode
        9,  # CreateTextNode
        10,  # MoveNode
        11,  # RemoveNode
        12,  # SetNodeAttribute
        13,  # RemoveNodeAttribute
        14,  # SetNodeData
        16,  # SetNodeScroll
        18,  # SetInputValue
        19,  # SetInputChecked
        20,  # MouseMove
        36,  # NodeAnimationResult
        55,  # SetPageVisibility
        57,  # LoadFontFace
        58,  # SetNodeFocus
        60,  # SetNodeAttributeURLBased
        61,  # SetCSSDataURLBased
        65,  # SetNodeSlot
        68,  # MouseClick
        69,  # MouseClickDeprecated
        70,  # CreateIFrameDocument
        71,  # AdoptedSSReplaceURLBased
        73,  # AdoptedSSInsertRuleURLBased
        75,  # AdoptedSSDeleteRule
        76,  # AdoptedSSAddOwner
        77,  # AdoptedSSRemoveOwner
        117,  # TabChange
        122,  # SetPageLocation
        4,  # SetPageLocationDeprecated
    }
)
DICT_TYPES = frozenset(
    {
        STRING_DICT_GLOBAL,
        SET_NODE_ATTRIBUTE_DICT_GLOBAL,
        STRING_DICT_DEPRECATED,
        SET_NODE_ATTRIBUTE_DICT_DEPRECATED,
        SET_NODE_ATTRIBUTE_DICT,
    }
)
KEEP = PLAYER_TYPES | DICT_TYPES
# Timestamp(0) and TabData(118) give the following messages their time and tab: the
# decoder must parse them even though the player never sees them.
SKIP = frozenset(SCHEMA) - KEEP - {0, 118}
# Streams that carry player messages (v1 single stream, v2 player, assets, the visual
# body); devtools and analytics batches hold nothing the player draws.
PLAYER_STREAMS = ("player", "assets", "visual", "")
# Same-millisecond order between streams: a node is created (player) before its
# URL-based attribute or CSS (assets) is set.
STREAM_RANK = {1: 0, 2: 0, 3: 1}


def _bodies_to_messages(rows: list[dict[str, Any]], start_ms: int) -> dict[str, Any]:
    dictionary: dict[int, str] = {}
    legacy: dict[int, str] = {}
    tabs: dict[str, int] = {}
    out: list[tuple[int, int, int, int, list[Any]]] = []  # (ts, page, stream, seq, message)
    seq = 0
    pending: list[tuple[tuple[int, int, int, int], int, int, int, int, bool]] = []
    skipped = 0
    for row in rows:
        if row["data_type"] not in PLAYER_STREAMS:
            continue
        try:
            batches = decode_batches(base64.b64decode(row["body_base64"]), skip=SKIP)
        except (OpenReplayDecodeError, ValueError):
            skipped += 1  # stored bytes are the tracker's; a bad batch must not hide the rest
            continue
        for b in batches:
            rank = STREAM_RANK.get(b.version, 0)
            for m in b.messages:
                msg = m.message
                tid = msg.TYPE
                if tid not in KEEP:
                    continue
                tab = tabs.setdefault(m.tab_id or b.tab_id, len(tabs))
                seq += 1
                if tid == STRING_DICT_GLOBAL:
                    dictionary[msg.key] = msg.value  # type: ignore[attr-defined]
                    continue
                if tid == STRING_DICT_DEPRECATED:
                    legacy[msg.key] = msg.value  # type: ignore[attr-defined]
                    continue
                sort = (m.ts, b.page_no, rank, seq)
                if tid == SET_NODE_ATTRIBUTE_DICT_GLOBAL:
                    node, name_key, value_key = message_values(msg)
                    pending.append((sort, tab, node, name_key, value_key, False))
                    continue
                if tid == SET_NODE_ATTRIBUTE_DICT_DEPRECATED:
                    node, name_key, value_key = message_values(msg)
                    pending.append((sort, tab, node, name_key, value_key, True))
                    continue
                if tid == SET_NODE_ATTRIBUTE_DICT:
                    out.append((*sort, [tab, SET_NODE_ATTRIBUTE, *message_values(msg)]))  # type: ignore[arg-type]
                    continue
                out.append((*sort, [tab, tid, *message_values(msg)]))  # type: ignore[arg-type]
    # Keys are unique for the tracker's lifetime, so every reference resolves against
    # the whole session's dictionary, whatever order the batches were stored in.
    for sort, tab, node, name_key, value_key, old in pending:
        table = legacy if old else dictionary
        name = table.get(name_key)
        if name is None:
            continue
        out.append((*sort, [tab, SET_NODE_ATTRIBUTE, node, name, table.get(value_key, "")]))
    out.sort(key=lambda r: r[:4])
    messages = [[max(0, r[0] - start_ms), *r[4]] for r in out]
    return {
        "tabs": list(tabs),
        "messages": messages,
        "skipped_batches": skipped,
    }


class ReplayCache:
    """Decoded replays of the last few sessions opened, keyed by what is stored (batch
    count and bytes): a seek or a reload re-reads nothing; a new batch re-decodes."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._docs: OrderedDict[tuple[int, str, int, int], dict[str, Any]] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[int, str, int, int]) -> dict[str, Any] | None:
        with self._lock:
            doc = self._docs.get(key)
            if doc is not None:
                self._docs.move_to_end(key)
            return doc

    def put(self, key: tuple[int, str, int, int], doc: dict[str, Any]) -> None:
        with self._lock:
            self._docs[key] = doc
            while len(self._docs) > self.size:
                self._docs.popitem(last=False)


CACHE = ReplayCache()


def replay_document(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any] | None:
    """The session's replay, or None when nothing of it was recorded."""
    bounds = replay_queries.replay_bounds(ch, project_id, session_id)
    if bounds is None:
        return None
    key = (project_id, session_id, bounds["batches"], bounds["bytes"])
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    rows = replay_queries.replay_batch_bodies(ch, project_id, session_id)
    body = _bodies_to_messages(rows, bounds["start_ms"])
    last = body["messages"][-1][0] if body["messages"] else 0
    doc = {
        "session_id": session_id,
        "start_ms": bounds["start_ms"],
        "duration_ms": max(last, bounds["last_ms"] - bounds["start_ms"]),
        **body,
    }
    CACHE.put(key, doc)
    return doc
