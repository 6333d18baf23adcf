"""Pure decoder for the OpenReplay web tracker's binary batches (`POST /v1/web/i`).

bytes → `Batch` records holding typed messages, for every message type the 19.x
encoder can write (see /work/shared/reference/openreplay.md §5–§6). No I/O, no
state outside one call: per-session state (the attribute dictionary, the session
id) belongs to the caller.

Wire format in brief: varint (LEB128) uints, zigzag ints, one-byte bools, and
length-prefixed UTF-8 strings; each message is `uint type, 3-byte LE body size,
body`, except the batch header `BatchMetadata(81)`, which has no size and starts
every batch. A body may hold several batches back to back (the `visual` body).

Anything malformed raises `OpenReplayDecodeError` and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any, ClassVar

U, I, B, S = "uint", "int", "bool", "string"  # noqa: E741

# type id → (name, fields in wire order). Checked against the shipped 19.0.1 encoder
# by the reference (§6.1); legacy ids that 19.x still encodes are included so older
# trackers decode too.
SCHEMA: dict[int, tuple[str, tuple[tuple[str, str], ...]]] = {
    0: ("Timestamp", (("timestamp", U),)),
    4: ("SetPageLocationDeprecated", (("url", S), ("referrer", S), ("navigationStart", U))),
    5: ("SetViewportSize", (("width", U), ("height", U))),
    6: ("SetViewportScroll", (("x", I), ("y", I))),
    7: ("CreateDocument", ()),
    8: (
        "CreateElementNode",
        (("id", U), ("parentID", U), ("index", U), ("tag", S), ("svg", B)),
    ),
    9: ("CreateTextNode", (("id", U), ("parentID", U), ("index", U))),
    10: ("MoveNode", (("id", U), ("parentID", U), ("index", U))),
    11: ("RemoveNode", (("id", U),)),
    12: ("SetNodeAttribute", (("id", U), ("name", S), ("value", S))),
    13: ("RemoveNodeAttribute", (("id", U), ("name", S))),
    14: ("SetNodeData", (("id", U), ("data", S))),
    16: ("SetNodeScroll", (("id", U), ("x", I), ("y", I))),
    17: ("SetInputTarget", (("id", U), ("label", S))),
    18: ("SetInputValue", (("id", U), ("value", S), ("mask", I))),
    19: ("SetInputChecked", (("id", U), ("checked", B))),
    20: ("MouseMove", (("x", U), ("y", U))),
    21: (
        "NetworkRequestDeprecated",
        (
            ("type", S),
            ("method", S),
            ("url", S),
            ("request", S),
            ("response", S),
            ("status", U),
            ("timestamp", U),
            ("duration", U),
        ),
    ),
    22: ("ConsoleLog", (("level", S), ("value", S))),
    23: (
        "PageLoadTiming",
        (
            ("requestStart", U),
            ("responseStart", U),
            ("responseEnd", U),
            ("domContentLoadedEventStart", U),
            ("domContentLoadedEventEnd", U),
            ("loadEventStart", U),
            ("loadEventEnd", U),
            ("firstPaint", U),
            ("firstContentfulPaint", U),
        ),
    ),
    24: (
        "PageRenderTiming",
        (("speedIndex", U), ("visuallyComplete", U), ("timeToInteractive", U)),
    ),
    27: ("CustomEvent", (("name", S), ("payload", S))),
    28: ("UserID", (("id", S),)),
    29: ("UserAnonymousID", (("id", S),)),
    30: ("Metadata", (("key", S), ("value", S))),
    34: ("StringDictGlobal", (("key", U), ("value", S))),
    35: ("SetNodeAttributeDictGlobal", (("id", U), ("name", U), ("value", U))),
    36: ("NodeAnimationResult", (("id", U), ("styles", S))),
    40: ("Profiler", (("name", S), ("duration", U), ("args", S), ("result", S))),
    41: ("OTable", (("key", S), ("value", S))),
    42: ("StateAction", (("type", S),)),
    43: ("StringDict", (("key", S), ("value", S))),
    44: ("ReduxDeprecated", (("action", S), ("state", S), ("duration", U))),
    45: ("Vuex", (("mutation", S), ("state", S))),
    46: ("MobX", (("type", S), ("payload", S))),
    47: ("NgRx", (("action", S), ("state", S), ("duration", U))),
    48: (
        "GraphQLDeprecated",
        (
            ("operationKind", S),
            ("operationName", S),
            ("variables", S),
            ("response", S),
            ("duration", I),
        ),
    ),
    49: (
        "PerformanceTrack",
        (("frames", I), ("ticks", I), ("totalJSHeapSize", U), ("usedJSHeapSize", U)),
    ),
    50: ("StringDictDeprecated", (("key", U), ("value", S))),
    51: ("SetNodeAttributeDictDeprecated", (("id", U), ("nameKey", U), ("valueKey", U))),
    52: ("SetNodeAttributeDict", (("id", U), ("name", S), ("value", S))),
    53: (
        "ResourceTimingDeprecatedDeprecated",
        (
            ("timestamp", U),
            ("duration", U),
            ("ttfb", U),
            ("headerSize", U),
            ("encodedBodySize", U),
            ("decodedBodySize", U),
            ("url", S),
            ("initiator", S),
        ),
    ),
    54: ("ConnectionInformation", (("downlink", U), ("type", S))),
    55: ("SetPageVisibility", (("hidden", B),)),
    57: (
        "LoadFontFace",
        (("parentID", U), ("family", S), ("source", S), ("descriptors", S)),
    ),
    58: ("SetNodeFocus", (("id", I),)),
    60: (
        "SetNodeAttributeURLBased",
        (("id", U), ("name", S), ("value", S), ("baseURL", S)),
    ),
    61: ("SetCSSDataURLBased", (("id", U), ("data", S), ("baseURL", S))),
    63: ("TechnicalInfo", (("type", S), ("value", S))),
    64: ("CustomIssue", (("name", S), ("payload", S))),
    65: ("SetNodeSlot", (("id", U), ("slotID", U))),
    68: (
        "MouseClick",
        (
            ("id", U),
            ("hesitationTime", U),
            ("label", S),
            ("selector", S),
            ("normalizedX", U),
            ("normalizedY", U),
        ),
    ),
    69: (
        "MouseClickDeprecated",
        (("id", U), ("hesitationTime", U), ("label", S), ("selector", S)),
    ),
    70: ("CreateIFrameDocument", (("frameID", U), ("id", U))),
    71: ("AdoptedSSReplaceURLBased", (("sheetID", U), ("text", S), ("baseURL", S))),
    73: (
        "AdoptedSSInsertRuleURLBased",
        (("sheetID", U), ("rule", S), ("index", U), ("baseURL", S)),
    ),
    75: ("AdoptedSSDeleteRule", (("sheetID", U), ("index", U))),
    76: ("AdoptedSSAddOwner", (("sheetID", U), ("id", U))),
    77: ("AdoptedSSRemoveOwner", (("sheetID", U), ("id", U))),
    78: ("JSException", (("name", S), ("message", S), ("payload", S), ("metadata", S))),
    79: ("Zustand", (("mutation", S), ("state", S))),
    81: (
        "BatchMetadata",
        (("version", U), ("pageNo", U), ("firstIndex", U), ("timestamp", I), ("location", S)),
    ),
    83: (
        "NetworkRequest",
        (
            ("type", S),
            ("method", S),
            ("url", S),
            ("request", S),
            ("response", S),
            ("status", U),
            ("timestamp", U),
            ("duration", U),
            ("transferredBodySize", U),
        ),
    ),
    84: (
        "WSChannel",
        (
            ("chType", S),
            ("channelName", S),
            ("data", S),
            ("timestamp", U),
            ("dir", S),
            ("messageType", S),
        ),
    ),
    85: (
        "ResourceTiming",
        (
            ("timestamp", U),
            ("duration", U),
            ("ttfb", U),
            ("headerSize", U),
            ("encodedBodySize", U),
            ("decodedBodySize", U),
            ("url", S),
            ("initiator", S),
            ("transferredSize", U),
            ("cached", B),
            ("queueing", U),
            ("dnsLookup", U),
            ("initialConnection", U),
            ("ssl", U),
            ("contentDownload", U),
            ("total", U),
            ("stalled", U),
        ),
    ),
    87: ("Incident", (("label", S), ("startTime", I), ("endTime", I))),
    89: (
        "LongAnimationTask",
        (
            ("name", S),
            ("duration", I),
            ("blockingDuration", I),
            ("firstUIEventTimestamp", I),
            ("startTime", I),
            ("scripts", S),
        ),
    ),
    112: (
        "InputChange",
        (
            ("id", U),
            ("value", S),
            ("valueMasked", B),
            ("label", S),
            ("hesitationTime", I),
            ("inputDuration", I),
        ),
    ),
    113: (
        "SelectionChange",
        (("selectionStart", U), ("selectionEnd", U), ("selection", S)),
    ),
    114: ("MouseThrashing", (("timestamp", U),)),
    115: ("UnbindNodes", (("totalRemovedPercent", U),)),
    116: (
        "ResourceTimingDeprecated",
        (
            ("timestamp", U),
            ("duration", U),
            ("ttfb", U),
            ("headerSize", U),
            ("encodedBodySize", U),
            ("decodedBodySize", U),
            ("url", S),
            ("initiator", S),
            ("transferredSize", U),
            ("cached", B),
        ),
    ),
    117: ("TabChange", (("tabId", S),)),
    118: ("TabData", (("tabId", S),)),
    119: ("CanvasNode", (("nodeId", S), ("timestamp", U))),
    120: ("TagTrigger", (("tagId", I),)),
    121: ("Redux", (("action", S), ("state", S), ("duration", U), ("actionTime", U))),
    122: (
        "SetPageLocation",
        (("url", S), ("referrer", S), ("navigationStart", U), ("documentTitle", S)),
    ),
    123: (
        "GraphQL",
        (
            ("operationKind", S),
            ("operationName", S),
            ("variables", S),
            ("response", S),
            ("duration", U),
        ),
    ),
    124: ("WebVitals", (("name", S), ("value", S))),
    125: (
        "IssueEvent",
        (
            ("messageID", U),
            ("timestamp", U),
            ("type", S),
            ("contextString", S),
            ("context", S),
            ("payload", S),
            ("url", S),
        ),
    ),
}

BATCH_METADATA = 81
TIMESTAMP = 0
TAB_DATA = 118
SET_PAGE_LOCATION = 122
MAX_VARINT_BYTES = 10  # Go's limit; 19.x never writes more than 8
MAX_STRING_BYTES = 10_000_000  # Go's limit
SUPPORTED_VERSIONS = range(1, 6)  # 1 = v1 single stream; 2..5 = player/assets/devtools/analytics


class OpenReplayDecodeError(ValueError):
    """The bytes are not a well-formed tracker batch. `offset` is where it went wrong."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


class Message:
    """Base of every decoded message class; `TYPE` is the wire type id."""

    TYPE: ClassVar[int] = -1
    NAME: ClassVar[str] = ""


def _snake(name: str) -> str:
    name = name.replace("ID", "Id").replace("URL", "Url").replace("JS", "Js").replace("UI", "Ui")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_PY_TYPES = {U: int, I: int, B: bool, S: str}
MESSAGE_CLASSES: dict[int, type[Message]] = {}
_FIELDS: dict[int, tuple[str, ...]] = {}
for _tid, (_name, _fields) in SCHEMA.items():
    _cls = make_dataclass(
        _name,
        [(_snake(f), _PY_TYPES[t]) for f, t in _fields],
        bases=(Message,),
        frozen=True,
        slots=True,
        namespace={"TYPE": _tid, "NAME": _name},
    )
    _cls.__module__ = __name__
    globals()[_name] = _cls
    MESSAGE_CLASSES[_tid] = _cls
    _FIELDS[_tid] = tuple(t for _, t in _fields)


@dataclass(frozen=True, slots=True)
class UnknownMessage(Message):
    """A sized message whose type this decoder does not know; kept, not guessed at."""

    type_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Timed:
    """A message with the context the batch gave it: the latest Timestamp (server-aligned
    epoch ms), TabData and page URL before it, and its position in the batch."""

    ts: int
    tab_id: str
    page_url: str
    ordinal: int
    message: Message


@dataclass(frozen=True, slots=True)
class Batch:
    version: int
    page_no: int
    first_index: int
    timestamp: int
    location: str
    offset: int  # where its header starts in the body
    messages: list[Timed] = field(default_factory=list)

    @property
    def tab_id(self) -> str:
        """The batch's tab: the worker writes a TabData right after every header."""
        for t in self.messages[:4]:
            if t.message.TYPE == TAB_DATA:
                return t.message.tab_id  # type: ignore[attr-defined]
        return ""


def _read_uint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise OpenReplayDecodeError("truncated varint", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise OpenReplayDecodeError("varint longer than 10 bytes", start)


def _read_fields(buf: bytes, pos: int, end: int, kinds: tuple[str, ...]) -> tuple[list[Any], int]:
    values: list[Any] = []
    for kind in kinds:
        if kind == U:
            v, pos = _read_uint(buf, pos, end)
        elif kind == I:
            u, pos = _read_uint(buf, pos, end)
            v = (u >> 1) ^ -(u & 1)
        elif kind == S:
            n, p = _read_uint(buf, pos, end)
            if n > MAX_STRING_BYTES or p + n > end:
                raise OpenReplayDecodeError(f"string of {n} bytes runs past its message", p)
            try:
                v = buf[p : p + n].decode("utf-8")
            except UnicodeDecodeError:
                raise OpenReplayDecodeError("string is not UTF-8", p) from None
            pos = p + n
        else:  # bool: Go treats only 1 as true
            if pos >= end:
                raise OpenReplayDecodeError("truncated boolean", pos)
            v = buf[pos] == 1
            pos += 1
        values.append(v)
    return values, pos


def decode_message(type_id: int, body: bytes) -> Message:
    """One message from its body bytes (fields in wire order; trailing bytes are
    tolerated for forward compatibility)."""
    cls = MESSAGE_CLASSES.get(type_id)
    if cls is None:
        return UnknownMessage(type_id, bytes(body))
    values, _ = _read_fields(body, 0, len(body), _FIELDS[type_id])
    return cls(*values)


def decode_batches(data: bytes, *, skip: frozenset[int] = frozenset()) -> list[Batch]:
    """Every batch in a request body (decompressed). Types in `skip` are framed and
    bounds-checked but their fields are not parsed (they are left out of `messages`)."""
    buf = bytes(data)
    n = len(buf)
    if n == 0:
        raise OpenReplayDecodeError("empty body", 0)
    batches: list[Batch] = []
    current: Batch | None = None
    ts = 0
    tab = ""
    url = ""
    ordinal = 0
    pos = 0
    while pos < n:
        start = pos
        type_id, pos = _read_uint(buf, pos, n)
        if type_id == BATCH_METADATA:
            (version, page_no, first_index, header_ts, location), pos = _read_fields(
                buf, pos, n, _FIELDS[BATCH_METADATA]
            )
            if version not in SUPPORTED_VERSIONS:
                raise OpenReplayDecodeError(f"unsupported batch version {version}", start)
            current = Batch(version, page_no, first_index, header_ts, location, start)
            batches.append(current)
            ts, tab, url, ordinal = header_ts, "", location, 0
            continue
        if current is None:
            raise OpenReplayDecodeError(
                f"body starts with message type {type_id}, not BatchMetadata(81)", start
            )
        if pos + 3 > n:
            raise OpenReplayDecodeError("truncated message size", pos)
        size = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        body_start = pos + 3
        end = body_start + size
        if end > n:
            raise OpenReplayDecodeError(
                f"message type {type_id} declares {size} bytes, {n - body_start} remain", pos
            )
        pos = end
        ordinal += 1
        if type_id in skip:
            continue
        kinds = _FIELDS.get(type_id)
        if kinds is None or type_id == BATCH_METADATA:
            msg: Message = UnknownMessage(type_id, buf[body_start:end])
        else:
            values, _ = _read_fields(buf, body_start, end, kinds)
            msg = MESSAGE_CLASSES[type_id](*values)
            if type_id == TIMESTAMP:
                ts = values[0]
            elif type_id == TAB_DATA:
                tab = values[0]
            elif type_id == SET_PAGE_LOCATION:
                url = values[0]
        current.messages.append(Timed(ts, tab, url, ordinal, msg))
    return batches


# Primitive encoders: the inverse of the above, for tests, fuzzing and the benchmark.


def encode_uint(v: int) -> bytes:
    if v < 0:
        raise ValueError("uint must be >= 0")
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_int(v: int) -> bytes:
    return encode_uint(v * 2 if v >= 0 else -v * 2 - 1)


def encode_fields(type_id: int, values: list[Any] | tuple[Any, ...]) -> bytes:
    out = bytearray()
    for kind, v in zip(_FIELDS[type_id], values, strict=True):
        if kind == U:
            out += encode_uint(v)
        elif kind == I:
            out += encode_int(v)
        elif kind == S:
            raw = v.encode("utf-8")
            out += encode_uint(len(raw)) + raw
        else:
            out.append(1 if v else 0)
    return bytes(out)


def encode_message(type_id: int, values: list[Any] | tuple[Any, ...]) -> bytes:
    body = encode_fields(type_id, values)
    if type_id == BATCH_METADATA:
        return encode_uint(type_id) + body
    return encode_uint(type_id) + len(body).to_bytes(3, "little") + body


def message_values(msg: Message) -> tuple[Any, ...]:
    return tuple(getattr(msg, f) for f in msg.__dataclass_fields__)  # type: ignore[attr-defined]
