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
    _read_fields,
    _read_uint,
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
# Streams that carry player messages (v1 single stream, v2 player, assets, the visual
# body); devtools and analytics batches hold nothing the player draws.
PLAYER_STREAMS = ("player", "assets", "visual", "")
# Same-millisecond order between streams: a node is created (player) before its
# URL-based attribute or CSS (assets) is set.
STREAM_RANK = {1: 0, 2: 0, 3: 1}


_KINDS = {tid: tuple(kind for _, kind in fields) for tid, (_, fields) in SCHEMA.items()}
_HEADER = _KINDS[81]
Tuple = tuple[int, int, int, str, int, list[Any]]  # ts, page, stream rank, tab, type, fields


def player_tuples(buf: bytes) -> list[Tuple]:
    """One stored request body → the player's messages in it, with their time and tab.
    The framing of enrich.openreplay_decode (§5.3 of the reference), but only the kept
    types are parsed and nothing else is built: a replay is read far more often than a
    batch is ingested, and the generic decoder's objects cost more than the parsing."""
    out: list[Tuple] = []
    n = len(buf)
    pos = 0
    ts = page = rank = 0
    tab = ""
    started = False
    while pos < n:
        start = pos
        tid, pos = _read_uint(buf, pos, n)
        if tid == 81:
            (version, page, _first, ts, _loc), pos = _read_fields(buf, pos, n, _HEADER)
            rank, tab, started = STREAM_RANK.get(version, 0), "", True
            continue
        if not started:
            raise OpenReplayDecodeError("body does not start with BatchMetadata(81)", start)
        if pos + 3 > n:
            raise OpenReplayDecodeError("truncated message size", pos)
        body = pos + 3
        end = body + (buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16))
        if end > n:
            raise OpenReplayDecodeError(f"message type {tid} runs past the body", pos)
        pos = end
        if tid == 0:
            ts = _read_uint(buf, body, end)[0]
        elif tid == 118:
            tab = _read_fields(buf, body, end, _KINDS[118])[0][0]
        elif tid in KEEP:
            out.append((ts, page, rank, tab, tid, _read_fields(buf, body, end, _KINDS[tid])[0]))
    return out


# Decoded batches by (project, session, batch, size): a live session re-reads only its
# new batches.
_BATCHES: OrderedDict[tuple[int, str, str, int], list[Tuple]] = OrderedDict()
_BATCHES_MAX = 2000
_BATCHES_LOCK = Lock()


def _batch_tuples(project_id: int, session_id: str, row: dict[str, Any]) -> list[Tuple]:
    key = (
        project_id,
        session_id,
        f"{row['data_type']}:{row['page_no']}:{row['first_index']}",
        len(row["body_base64"]),
    )
    with _BATCHES_LOCK:
        got = _BATCHES.get(key)
    if got is None:
        got = player_tuples(base64.b64decode(row["body_base64"]))
        with _BATCHES_LOCK:
            _BATCHES[key] = got
            while len(_BATCHES) > _BATCHES_MAX:
                _BATCHES.popitem(last=False)
    return got


def _bodies_to_messages(
    rows: list[dict[str, Any]], start_ms: int, project_id: int = 0, session_id: str = ""
) -> dict[str, Any]:
    dictionary: dict[int, str] = {}
    legacy: dict[int, str] = {}
    tabs: dict[str, int] = {}
    out: list[tuple[int, int, int, int, list[Any]]] = []  # (ts, page, stream, seq, message)
    pending: list[tuple[tuple[int, int, int, int], int, list[Any], bool]] = []
    skipped = 0
    seq = 0
    for row in rows:
        if row["data_type"] not in PLAYER_STREAMS:
            continue
        try:
            decoded = _batch_tuples(project_id, session_id, row)
        except (OpenReplayDecodeError, ValueError):
            skipped += 1  # stored bytes are the tracker's; a bad batch must not hide the rest
            continue
        for ts, page, rank, tab_id, tid, values in decoded:
            seq += 1
            if tid == STRING_DICT_GLOBAL:
                dictionary[values[0]] = values[1]
                continue
            if tid == STRING_DICT_DEPRECATED:
                legacy[values[0]] = values[1]
                continue
            tab = tabs.setdefault(tab_id, len(tabs))
            sort = (ts, page, rank, seq)
            if tid == SET_NODE_ATTRIBUTE_DICT_GLOBAL:
                pending.append((sort, tab, values, False))
            elif tid == SET_NODE_ATTRIBUTE_DICT_DEPRECATED:
                pending.append((sort, tab, values, True))
            elif tid == SET_NODE_ATTRIBUTE_DICT:
                out.append((*sort, [tab, SET_NODE_ATTRIBUTE, *values]))
            else:
                out.append((*sort, [tab, tid, *values]))
    # Keys are unique for the tracker's lifetime, so every reference resolves against
    # the whole session's dictionary, whatever order the batches were stored in.
    for sort, tab, (node, name_key, value_key), old in pending:
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
_DECODING: dict[tuple[int, str], Lock] = {}
_DECODING_LOCK = Lock()


def replay_document(ch: ClickHouse, project_id: int, session_id: str) -> dict[str, Any] | None:
    """The session's replay, or None when nothing of it was recorded."""
    bounds = replay_queries.replay_bounds(ch, project_id, session_id)
    if bounds is None:
        return None
    key = (project_id, session_id, bounds["batches"], bounds["bytes"])
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    # One decode per replay at a time: the session page starts it while it renders, and
    # the player's request, arriving meanwhile, waits for that one instead of redoing it.
    with _DECODING_LOCK:
        lock = _DECODING.setdefault((project_id, session_id), Lock())
    with lock:
        cached = CACHE.get(key)
        if cached is not None:
            return cached
        rows = replay_queries.replay_batch_bodies(ch, project_id, session_id)
        body = _bodies_to_messages(rows, bounds["start_ms"], project_id, session_id)
        last = body["messages"][-1][0] if body["messages"] else 0
        doc = {
            "session_id": session_id,
            "start_ms": bounds["start_ms"],
            "duration_ms": max(last, bounds["last_ms"] - bounds["start_ms"]),
            **body,
        }
        CACHE.put(key, doc)
    with _DECODING_LOCK:
        if len(_DECODING) > 64:
            _DECODING.clear()
    return doc
