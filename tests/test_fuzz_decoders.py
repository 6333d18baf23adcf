"""Fuzzing: the edge parsers and the worker decoder raise only their own error types."""

import zlib

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weftline.enrich.agent_events import decode_agent_entry
from weftline.enrich.stream_consumer import DecodeError
from weftline.ground.rejections import Rejected as LimitExceeded
from weftline.ingest.agent_events import parse_events_body
from weftline.ingest.edge import Rejected
from weftline.ingest.limits import decompress

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

event_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["agent_state", "task_update", "visualization_interaction", "hitl", "x"]
        )
    },
    optional={
        "agent_id": st.text(max_size=5) | st.integers(0, 99),
        "status": st.sampled_from(["idle", "busy", "bad"]),
        "task_id": st.text(max_size=5),
        "state": st.sampled_from(["queued", "done", "opened", "nope"]),
        "action": st.sampled_from(["node_click", "zoom"]),
        "hitl_id": st.text(max_size=3),
        "kind": st.sampled_from(["question", "x"]),
        "ts": st.integers(-(2**62), 2**62) | st.text(max_size=10),
        "metrics": json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.lists(event_like, max_size=5).map(orjson.dumps))
def test_decode_agent_entry_raises_only_decode_error(payload):
    fields = {b"p": payload, b"project": b"1", b"received_at": b"1700000000000"}
    try:
        rows = decode_agent_entry("1-0", fields)
    except DecodeError:
        return
    for i, r in enumerate(rows):
        assert r.event_uid == f"1-0:{i}"


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from([b"p", b"project", b"received_at", b"x"]), st.binary(max_size=20)
    )
)
def test_decode_agent_entry_bad_metadata(fields):
    try:
        decode_agent_entry("1-0", fields)
    except DecodeError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(["application/json", "application/x-ndjson"]))
def test_parse_body_raises_only_rejected(body, ctype):
    try:
        items = parse_events_body(body, ctype)
    except Rejected as e:
        assert e.status == 400
        return
    assert isinstance(items, list)


@settings(max_examples=200)
@given(st.binary(max_size=200), st.sampled_from(["gzip", "deflate", "br", "identity", "zz"]))
def test_decompress_raises_only_limit_errors(body, enc):
    try:
        out = decompress(body, enc, 1000)
    except LimitExceeded as e:
        assert e.status in (400, 413, 415)
        return
    assert len(out) <= 1000


def test_decompression_bomb_is_bounded():
    bomb = zlib.compress(b"\0" * 50_000_000, 9)
    assert len(bomb) < 100_000
    try:
        decompress(bomb, "deflate", 1_000_000)
    except LimitExceeded as e:
        assert e.status == 413
    else:
        raise AssertionError("bomb was not stopped")
