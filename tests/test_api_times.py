"""The API's one time format: RFC 3339, UTC, milliseconds, `Z`; null for no time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from weftline.ground.times import api_time

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_every_input_gives_the_same_format():
    want = "2026-12-01T20:06:40.171Z"
    assert api_time("2026-12-01 20:06:40.171") == want
    assert api_time("2026-12-01 20:06:40.171999999") == want  # DateTime64(9): truncated
    assert api_time("2026-12-01T20:06:40.171Z") == want
    assert api_time("2026-12-01T20:06:40.171+00:00") == want
    assert api_time("2026-12-01 20:06:40.17") == "2026-12-01T20:06:40.170Z"
    assert api_time("2026-12-01 20:00:00") == "2026-12-01T20:00:00.000Z"  # toStartOfHour
    assert api_time(datetime(2026, 12, 1, 20, 6, 40, 171_500)) == want
    east = timezone(timedelta(hours=2))
    assert api_time(datetime(2026, 12, 1, 22, 6, 40, 171_000, tzinfo=east)) == want
    ms = int(datetime(2026, 12, 1, 20, 6, 40, 171_000, tzinfo=UTC).timestamp() * 1000)
    assert api_time(ms) == want
    assert api_time(ms + 0.9) == want  # float epoch ms (ns / 1e6 upstream): truncated
    assert all(RFC3339_MS.match(api_time(v) or "") for v in ("1970-01-02 00:00:00.000", 0))


def test_missing_is_null():
    assert api_time(None) is None
    assert api_time("") is None
