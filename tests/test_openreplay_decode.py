"""The batch decoder against the real tracker's bytes (reference §11) and under fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weftline.enrich.openreplay_decode import (
    SCHEMA,
    OpenReplayDecodeError,
    UnknownMessage,
    decode_batches,
    decode_message,
    encode_message,
    message_values,
)

VECTORS = Path(__file__).parent / "data" / "openreplay"


def vector(name: str) -> bytes:
    return bytes.fromhex((VECTORS / f"{name}.hex").read_text().strip())


ALL_VECTORS = sorted(p.stem for p in VECTORS.glob("*.hex"))


def names(batch) -> list[str]:
    return [t.message.NAME for t in batch.messages]


def test_catalogue_has_every_type_the_19x_encoder_knows():
    assert len(SCHEMA) == 81


def test_annotated_v1_batch_field_by_field():
    [b] = decode_batches(vector("v1_encoder_annotated"))
    assert (b.version, b.page_no, b.first_index, b.timestamp, b.location) == (
        1,
        0,
        0,
        1700000000000,
        "http://localhost/",
    )
    assert names(b) == [
        "Timestamp",
        "TabData",
        "Timestamp",
        "TabData",
        "CustomEvent",
        "UserID",
        "Metadata",
        "MouseClick",
        "SetViewportScroll",
        "Timestamp",
        "TabData",
        "JSException",
        "NetworkRequest",
    ]
    m = {t.message.NAME: t for t in b.messages}
    assert m["CustomEvent"].message.payload == '{"amount":42}'
    click = m["MouseClick"].message
    assert (click.id, click.hesitation_time, click.label, click.selector) == (
        8,
        3,
        "Click me",
        "#btn",
    )
    assert (click.normalized_x, click.normalized_y) == (320, 1250)
    assert (m["SetViewportScroll"].message.x, m["SetViewportScroll"].message.y) == (-5, 300)
    exc = m["JSException"]
    assert exc.ts == 1700000000020 and exc.tab_id == "tab1"
    assert exc.message.metadata == '{"where":"checkout"}'
    net = m["NetworkRequest"].message
    assert (net.method, net.url, net.status, net.timestamp, net.duration) == (
        "GET",
        "http://localhost/api",
        200,
        1700000000010,
        5,
    )
    assert net.transferred_body_size == 11


def test_visual_body_is_two_batches_split_where_the_query_says():
    data = vector("v2_visual_split")
    player, assets = decode_batches(data)
    assert (player.version, assets.version) == (2, 3)
    assert assets.offset == 1011 and data[1011] == 0x51
    assert assets.first_index == 18
    assert names(assets)[-2:] == ["SetCSSDataURLBased", "SetNodeAttributeURLBased"]
    loc = next(t.message for t in player.messages if t.message.NAME == "SetPageLocation")
    assert loc.document_title == "OR e2e" and loc.navigation_start == 1795627264052
    # Decoding each half alone gives the same messages.
    assert [names(b) for b in decode_batches(data[:1011]) + decode_batches(data[1011:])] == [
        names(player),
        names(assets),
    ]


def test_analytics_batch():
    [b] = decode_batches(vector("v2_analytics"))
    assert (b.version, b.first_index, b.tab_id) == (5, 56, "01270793308e")
    events = [t.message for t in b.messages if t.message.NAME == "CustomEvent"]
    assert [(e.name, e.payload) for e in events] == [
        ("checkout", '{"amount":42,"currency":"EUR"}'),
        ("plain_event", "null"),
        ("string_payload", "hello"),
    ]
    vitals = [(t.ts, t.message.name, t.message.value) for t in b.messages if t.message.TYPE == 124]
    assert vitals == [
        (1795627212686, "TTFB", "13.199999999953434"),
        (1795627213256, "LCP", "56"),
    ]
    excs = [t.message for t in b.messages if t.message.NAME == "JSException"]
    assert [(e.name, e.message) for e in excs] == [
        ("TypeError", "handled boom"),
        ("Error", "uncaught boom"),
    ]
    plt = b.messages[-1].message
    assert plt.NAME == "PageLoadTiming" and plt.load_event_end == 101


def test_devtools_batch_keeps_the_app_traceparent():
    [b] = decode_batches(vector("v2_devtools"))
    net = next(t.message for t in b.messages if t.message.NAME == "NetworkRequest")
    assert '"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"' in net.request
    assert net.status == 200
    inc = next(t.message for t in b.messages if t.message.NAME == "Incident")
    assert (inc.label, inc.start_time, inc.end_time) == ("slow-api", 1000, 2500)


def test_whole_page_v1_batch():
    [b] = decode_batches(vector("v1_player_whole_page"))
    click = next(t.message for t in b.messages if t.message.NAME == "MouseClick")
    assert (click.label, click.selector, click.normalized_x) == ("Click me", "#btn", 258)
    masked = [t.message for t in b.messages if t.message.NAME == "SetInputValue"]
    assert masked[-1].mask == 12 and masked[-1].value == ""
    assert sum(1 for t in b.messages if t.message.NAME == "ResourceTiming") >= 6


def test_skip_leaves_types_out_but_still_checks_framing():
    data = vector("v1_player_whole_page")
    [full] = decode_batches(data)
    [lean] = decode_batches(data, skip=frozenset({8, 9, 14, 34, 35}))
    assert len(lean.messages) < len(full.messages)
    assert {t.message.TYPE for t in lean.messages}.isdisjoint({8, 9, 14, 34, 35})
    with pytest.raises(OpenReplayDecodeError):
        decode_batches(data[:-1], skip=frozenset(range(200)))


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_every_truncation_fails_cleanly_or_ends_on_a_boundary(name):
    data = vector(name)
    full = sum(len(b.messages) for b in decode_batches(data))
    for cut in range(1, len(data)):
        try:
            got = sum(len(b.messages) for b in decode_batches(data[:cut]))
        except OpenReplayDecodeError:
            continue
        assert got < full


def test_malformed_inputs_raise_the_one_error_type():
    bad = [
        b"",
        b"\x00\x06\x00\x00\x80",  # no BatchMetadata first
        b"\x51\x09\x00\x00\x00\x00",  # unsupported version 9
        b"\x51\x01\x00\x00\x00\x00\x1c\xff\xff\x00",  # size beyond the end
        b"\x51" + b"\xff" * 12,  # over-long varint
        b"\x51\x01\x00\x00\x00\x00\x1c\x02\x00\x00\x05a",  # string past its message
        b"\x51\x01\x00\x00\x00\x00\x1c\x02\x00\x00\x01\xff",  # not UTF-8
    ]
    for data in bad:
        with pytest.raises(OpenReplayDecodeError):
            decode_batches(data)


def test_unknown_type_is_kept_and_longer_bodies_tolerated():
    head = encode_message(81, (1, 0, 0, 5, "u"))
    body = head + bytes([99]) + (3).to_bytes(3, "little") + b"abc"
    body += bytes([28]) + (5).to_bytes(3, "little") + b"\x02idXY"  # UserID + 2 extra bytes
    [b] = decode_batches(body)
    assert b.messages[0].message == UnknownMessage(99, b"abc")
    assert b.messages[1].message.id == "id"


# --- fuzzing -----------------------------------------------------------------------

_FIELD_STRATEGIES = {
    "uint": st.integers(min_value=0, max_value=2**53),
    "int": st.integers(min_value=-(2**52), max_value=2**52),
    "bool": st.booleans(),
    "string": st.text(max_size=40),
}


@st.composite
def messages(draw):
    tid = draw(st.sampled_from(sorted(t for t in SCHEMA if t != 81)))
    values = tuple(draw(_FIELD_STRATEGIES[kind]) for _, kind in SCHEMA[tid][1])
    return tid, values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.tuples(
        st.integers(1, 5),
        st.integers(0, 1000),
        st.integers(0, 2**40),
        st.integers(-(2**50), 2**50),
        st.text(max_size=30),
    ),
    msgs=st.lists(messages(), max_size=30),
)
def test_round_trip_every_message_type(header, msgs):
    data = encode_message(81, header) + b"".join(encode_message(t, v) for t, v in msgs)
    [b] = decode_batches(data)
    assert (b.version, b.page_no, b.first_index, b.timestamp, b.location) == header
    got = [(t.message.TYPE, message_values(t.message)) for t in b.messages]
    assert got == list(msgs)
    for t, v in msgs:
        assert message_values(decode_message(t, encode_message(t, v)[4:])) == v


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_else(data):
    try:
        decode_batches(data)
    except OpenReplayDecodeError:
        pass


@settings(max_examples=1500, deadline=None)
@given(
    name=st.sampled_from(ALL_VECTORS),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 10**6),
)
def test_mutated_real_batches_never_raise_anything_else(name, edits, cut):
    data = bytearray(vector(name))
    for pos, val in edits:
        data[pos % len(data)] = val
    data = data[: max(1, cut % (len(data) + 1))]
    try:
        decode_batches(bytes(data))
    except OpenReplayDecodeError:
        pass


def test_captured_react_flow_session_decodes_whole():
    """The React Flow session recorded by the browser test (what bench/replay_ingest.py
    replays): every request decodes, visual bodies split where the query says, and the
    canvas interactions are in it."""
    from urllib.parse import parse_qs

    import orjson

    from bench.replay_ingest import CAPTURE, load_capture

    reqs = [orjson.loads(line) for line in CAPTURE.read_text().splitlines()]
    assert [r["endpoint"] for r in reqs][:2] == ["start", "i"]
    msgs = []
    for r in reqs[1:]:
        body = bytes.fromhex(r["body_hex"])
        batches = decode_batches(body)
        split = parse_qs(r["query"]).get("split")
        if r["datatype"] == "visual":
            assert split and batches[1].offset == int(split[0])
        msgs += [t.message for b in batches for t in b.messages]
    # The DOM snapshot's attribute strings: React Flow's node elements are in the page.
    strings = {m.value for m in msgs if m.NAME == "StringDictGlobal"}
    assert any("react-flow__node" in s for s in strings)
    customs = [orjson.loads(m.payload) for m in msgs if m.NAME == "CustomEvent"]
    assert [c["action"] for c in customs] == ["node_click", "node_drag_stop", "edge_connect"]
    assert any(m.NAME == "InputChange" and m.value == "Grace" for m in msgs)
    assert any(m.NAME == "NetworkRequest" and "node=coder" in m.url for m in msgs)
    start, replayed = load_capture(CAPTURE)
    assert start["trackerVersion"].startswith("19.")
    assert sum(b.messages for b in replayed) == len(msgs)
    assert sum(b.agent_events for b in replayed) == 3
