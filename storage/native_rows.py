"""Row dicts (the JSON-shaped values handlers give `ClickHouse.insert`) → columns that
clickhouse-connect can write in Native format.

The embedded transport sends rows as JSONEachRow and lets ClickHouse parse the text;
over HTTP the rows travel as Native, so each value is converted here to what the Native
writer needs, exactly: date-times become integer ticks (so nanoseconds survive, which
Python datetimes would drop). Anything this module is not sure about makes `to_columns`
return None, and the caller sends that batch as JSONEachRow instead, which is parsed by
the server the same way as in embedded mode.
"""

from __future__ import annotations

import calendar
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
INT_TYPES = {f"{s}Int{n}" for s in ("", "U") for n in (8, 16, 32, 64, 128, 256)}
FLOAT_TYPES = {"Float32", "Float64", "BFloat16"}


class Unconvertible(Exception):
    pass


def split_args(inner: str) -> list[str]:
    """Top-level comma split of a type's arguments: `String, Map(String, UInt8)`."""
    out, depth, quote, cur = [], 0, "", []
    for ch in inner:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur).strip())
    return out


def _unwrap(type_name: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    if type_name.startswith(prefix) and type_name.endswith(")"):
        return type_name[len(prefix) : -1]
    return None


def _ticks(value: Any, precision: int, tz: tzinfo) -> int:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=tz)
        micros = calendar.timegm(aware.utctimetuple()) * 1_000_000 + aware.microsecond
        return micros * 10**precision // 1_000_000
    if not isinstance(value, str):
        raise Unconvertible(value)
    m = DATETIME_RE.match(value.strip())
    if not m:
        raise Unconvertible(value)
    y, mo, d, h, mi, s, frac, off = m.groups()
    naive = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    if off is None:
        offset = naive.replace(tzinfo=tz).utcoffset()
        offset_s = int(offset.total_seconds()) if offset else 0
    elif off == "Z":
        offset_s = 0
    else:
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        offset_s = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    seconds = calendar.timegm(naive.timetuple()) - offset_s
    # ClickHouse keeps the first `precision` fractional digits and drops the rest.
    frac_ticks = int(((frac or "") + "0" * 9)[:precision] or "0")
    return seconds * 10**precision + frac_ticks


def converter(type_name: str, server_tz: tzinfo) -> Callable[[Any], Any]:
    """A function value → Native-ready value for `type_name`; raises Unconvertible."""
    t = type_name.strip()
    inner = _unwrap(t, "Nullable")
    if inner is not None:
        conv = converter(inner, server_tz)
        return lambda v: None if v is None else conv(v)
    inner = _unwrap(t, "LowCardinality")
    if inner is not None:
        return converter(inner, server_tz)
    if t == "String" or t.startswith(("FixedString(", "Enum8(", "Enum16(")):

        def conv_str(v: Any) -> Any:
            if isinstance(v, str | bytes):
                return v
            raise Unconvertible(v)

        return conv_str
    if t in INT_TYPES or t == "Bool":

        def conv_int(v: Any) -> Any:
            if isinstance(v, int):
                return v
            raise Unconvertible(v)

        return conv_int
    if t in FLOAT_TYPES:

        def conv_float(v: Any) -> Any:
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
            raise Unconvertible(v)

        return conv_float
    if t.startswith("DateTime64("):
        args = split_args(t[len("DateTime64(") : -1])
        precision = int(args[0])
        tz = ZoneInfo(args[1].strip("'")) if len(args) > 1 else server_tz
        return lambda v: _ticks(v, precision, tz)
    if t == "DateTime" or t.startswith("DateTime("):
        args = split_args(t[len("DateTime(") : -1]) if "(" in t else []
        tz = ZoneInfo(args[0].strip("'")) if args else server_tz
        return lambda v: _ticks(v, 0, tz)
    if t in ("Date", "Date32"):

        def conv_date(v: Any) -> Any:
            if isinstance(v, date) and not isinstance(v, datetime):
                return v
            if isinstance(v, str) and re.match(r"^\d{4}-\d{2}-\d{2}$", v):
                return date.fromisoformat(v)
            raise Unconvertible(v)

        return conv_date
    if t == "UUID":

        def conv_uuid(v: Any) -> Any:
            try:
                return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
            except ValueError:
                raise Unconvertible(v) from None

        return conv_uuid
    inner = _unwrap(t, "Array")
    if inner is not None:
        conv = converter(inner, server_tz)

        def conv_array(v: Any) -> Any:
            if not isinstance(v, list | tuple):
                raise Unconvertible(v)
            return [conv(x) for x in v]

        return conv_array
    inner = _unwrap(t, "Map")
    if inner is not None:
        kt, vt = split_args(inner)
        kc, vc = converter(kt, server_tz), converter(vt, server_tz)

        def conv_map(v: Any) -> Any:
            if not isinstance(v, dict):
                raise Unconvertible(v)
            return {kc(k): vc(x) for k, x in v.items()}

        return conv_map
    raise Unconvertible(t)


def to_columns(
    rows: Sequence[dict[str, Any]], types: dict[str, str], server_tz: tzinfo = UTC
) -> tuple[list[str], list[str], list[list[Any]]] | None:
    """(names, type names, rows as lists) for a Native insert, or None when the rows do
    not share one set of known columns or hold a value this module cannot convert."""
    names = list(rows[0])
    if any(n not in types for n in names):
        return None
    key = set(names)
    try:
        convs = [converter(types[n], server_tz) for n in names]
        out = []
        for r in rows:
            if len(r) != len(names) or set(r) != key:
                return None
            out.append([c(r[n]) for c, n in zip(convs, names, strict=True)])
    except (Unconvertible, ValueError, OverflowError):
        return None
    return names, [types[n] for n in names], out
