"""The envelope parser and the worker's decoder: framing as both SDKs send it, and
fuzzing (any bytes, any JSON event → rows or the one decode error, never a crash)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weftline.enrich.sentry import ERRORS, SPANS, decode_envelope_entry
from weftline.enrich.stream_consumer import DecodeError, Entry
from weftline.ground.sentry_envelope import (
    EnvelopeError,
    container_items,
    parse_envelope,
    serialize_envelope,
)

# TV-2 (reference §16): browser framing, no `length`, no final newline.
BROWSER = (
    b'{"event_id":"12ecfeb1282e4c439caabee5bb425895","sent_at":"2026-11-25T17:08:23.494Z",'
    b'"sdk":{"name":"sentry.javascript.browser","version":"11.12.0"}}\n'
    b'{"type":"event"}\n'
    b'{"exception":{"values":[{"type":"TypeError","value":"x is undefined","stacktrace":'
    b'{"frames":[{"filename":"http://h/app.js","function":"inner","in_app":true,"lineno":34,'
    b'"colno":26}]},"mechanism":{"type":"generic","handled":true}}]},"level":"error",'
    b'"platform":"javascript","timestamp":1795626503.492}'
)


def test_browser_framing_without_length_or_final_newline():
    env = parse_envelope(BROWSER)
    assert env.event_id == "12ecfeb1282e4c439caabee5bb425895"
    assert [i.type for i in env.items] == ["event"]
    assert orjson.loads(env.items[0].payload)["level"] == "error"


def test_python_framing_with_length_and_binary_payload():
    blob = b"line1\nline2\n\x00\xff"
    data = (
        b'{"event_id":"1b1103c90e8e4a5fa4b99e37ecdd59f8"}\n'
        b'{"type":"event","content_type":"application/json","length":2}\n{}\n'
        + b'{"type":"attachment","length":%d,"filename":"a.bin"}\n' % len(blob)
        + blob
        + b"\n"
    )
    env = parse_envelope(data)
    assert [i.type for i in env.items] == ["event", "attachment"]
    assert env.items[1].payload == blob


def test_lenient_edges():
    # empty payload at the very end, blank lines, leading spaces in headers
    env = parse_envelope(b'{}\n\n {"type":"session"}\n{"sid":"x"}\n\n{"type":"attachment"}')
    assert [i.type for i in env.items] == ["session", "attachment"]
    assert env.items[1].payload == b""
    assert parse_envelope(b"{}").items == ()
    assert parse_envelope(b'{"event_id":"1B1103C9-0E8E-4A5F-A4B9-9E37ECDD59F8"}').event_id == (
        "1b1103c90e8e4a5fa4b99e37ecdd59f8"
    )


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"not json\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{}\n{"length":2}\n{}', "no type"),
        (b'{}\n{"type":"event","length":10}\n{}', "unexpected end"),
        (b'{}\n{"type":"event","length":1}\n{}', "missing newline"),
        (b'{}\n{"type":"event","length":-1}\n{}', "bad length"),
    ],
)
def test_malformed_envelopes_raise_one_error_type(data, reason):
    with pytest.raises(EnvelopeError, match=reason):
        parse_envelope(data)


def test_container_item_count_must_match():
    env = parse_envelope(b'{}\n{"type":"span","item_count":3}\n{"version":2,"items":[{}]}')
    with pytest.raises(EnvelopeError, match="item_count"):
        container_items(env.items[0])


headers_st = st.fixed_dictionaries(
    {"type": st.sampled_from(["event", "attachment", "session", "x_new_type", "log"])},
    optional={"filename": st.text(max_size=10), "content_type": st.text(max_size=10)},
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(headers_st, st.binary(max_size=200)), max_size=6))
def test_roundtrip_with_length(items):
    data = serialize_envelope({"event_id": "0" * 32}, [(dict(h), p) for h, p in items])
    env = parse_envelope(data)
    assert [(i.type, i.payload) for i in env.items] == [(h["type"], p) for h, p in items]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(headers_st, st.binary(max_size=100).filter(lambda b: b"\n" not in b)),
        max_size=6,
    ),
    st.booleans(),
)
def test_roundtrip_without_length(items, final_newline):
    lines = [b"{}"]
    for h, p in items:
        lines += [orjson.dumps(h), p]
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    env = parse_envelope(data)
    # an empty payload followed by the next header line is indistinguishable from a
    # blank line; every non-empty payload must survive
    got = [(i.type, i.payload) for i in env.items]
    want = [(h["type"], p) for h, p in items]
    if all(p for _, p in items):
        assert got == want


def entry(payload: bytes, project: int = 1) -> Entry:
    return Entry(
        "1700000000000-0",
        {b"p": payload, b"project": str(project).encode(), b"received_at": b"1700000000000"},
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_decode_error(data):
    try:
        decode_envelope_entry(entry(data))
    except DecodeError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_envelopes_never_crash(data):
    raw = bytearray(BROWSER)
    for _ in range(data.draw(st.integers(1, 5))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        decode_envelope_entry(entry(bytes(raw)))
    except DecodeError:
        pass


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_any = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
KEYS = [
    "exception",
    "message",
    "logentry",
    "timestamp",
    "level",
    "platform",
    "user",
    "tags",
    "contexts",
    "request",
    "breadcrumbs",
    "fingerprint",
    "sdk",
    "release",
    "spans",
    "start_timestamp",
    "event_id",
    "checksum",
]
frame_st = st.fixed_dictionaries(
    {},
    optional={
        k: json_any | st.text(max_size=30)
        for k in ("filename", "abs_path", "function", "module", "context_line", "in_app", "data")
    },
)
exc_st = st.fixed_dictionaries(
    {},
    optional={
        "type": json_any,
        "value": json_any,
        "mechanism": json_any | st.just({"synthetic": True}),
        "stacktrace": st.fixed_dictionaries({"frames": st.lists(frame_st, max_size=4)}) | json_any,
    },
)
event_st = st.fixed_dictionaries(
    {},
    optional={
        **{k: json_any for k in KEYS},
        "exception": st.fixed_dictionaries({"values": st.lists(exc_st, max_size=3)})
        | st.lists(exc_st, max_size=3)
        | json_any,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event_st, st.sampled_from(["event", "transaction", "session", "sessions", "span"]))
def test_any_json_item_gives_rows_or_decode_error(event, itype):
    data = serialize_envelope({}, [({"type": itype}, orjson.dumps(event))])
    try:
        rows = decode_envelope_entry(entry(data))
    except DecodeError:
        return
    for r in rows:
        orjson.dumps(r.data)  # every row is insertable as JSONEachRow
        if r.table == ERRORS:
            assert len(r.data["group_id"]) == 32
        if r.table == SPANS:
            assert len(r.data["trace_id"]) == 32 and len(r.data["span_id"]) == 16
