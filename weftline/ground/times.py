"""Times as ClickHouse reads them: `YYYY-MM-DD hh:mm:ss.fff…` text in UTC, for
DateTime64 parameters and insert columns. Every module writes its times through these,
so there is one format and one rounding rule (truncation towards the past)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1)


def ch_time(dt: datetime, digits: int = 3) -> str:
    """A datetime (naive = UTC, or aware) as DateTime64 text with 3 or 6 fraction digits
    (isoformat: several times faster than strftime)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(sep=" ", timespec="milliseconds" if digits == 3 else "microseconds")


def ch_ms(ms: int) -> str:
    """Epoch milliseconds → DateTime64(3) text (integer arithmetic: no float rounding)."""
    return ch_time(EPOCH + timedelta(milliseconds=ms))


def ch_ns(ns: int) -> str:
    """Epoch nanoseconds → DateTime64(9) text."""
    s, frac = divmod(ns, 1_000_000_000)
    return (EPOCH + timedelta(seconds=s)).isoformat(sep=" ") + f".{frac:09d}"


def ch_seconds(ts: float, digits: int = 3) -> str:
    """Epoch seconds as a float (Sentry's timestamps) → DateTime64(3) or (9) text. The
    float is first rounded to the microsecond, as `datetime.fromtimestamp` does."""
    if digits == 9:
        return ch_ns(int(round(ts * 1e9)))
    return ch_ms(round(ts * 1_000_000) // 1000)


def parse_ch_ms(text: str) -> int:
    """DateTime64(3) text (UTC) → epoch ms."""
    dt = datetime.strptime(text[:23].ljust(23, "0"), "%Y-%m-%d %H:%M:%S.%f")
    return int(dt.replace(tzinfo=UTC).timestamp() * 1000)


def api_time(value: str | datetime | float | None) -> str | None:
    """The API's one time format: RFC 3339 in UTC with milliseconds and `Z`
    (`2026-12-01T20:06:40.171Z`). Takes ClickHouse DateTime64 text (any precision,
    truncated to the millisecond), a datetime (naive = UTC) or epoch ms (int or float,
    truncated); None and empty
    text stay None (missing, not a time)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = EPOCH + timedelta(milliseconds=int(value))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    text = value.strip().replace("T", " ").removesuffix("Z").removesuffix("+00:00")
    head, _, frac = text.partition(".")
    return f"{head.replace(' ', 'T')}.{(frac + '000')[:3]}Z"
