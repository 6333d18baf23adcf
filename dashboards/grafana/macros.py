"""Grafana ClickHouse-plugin query expansion, reproduced so queries can run without Grafana.

The same code serves the dashboard tests (every panel is expanded and run on the real
schema) and Weftline's alert evaluator (a rule's SQL is expanded exactly as Grafana's
backend would expand it for that rule). Expansion order and strings follow
`grafana/clickhouse-datasource` v4.20 (reference §4.3, §4.4):

1. frontend only: `$__conditionalAll(cond, $var)`, then template variables, where an
   array value renders as `'a','b'` and a single value renders raw;
2. backend: `$__timeFilter(col)`, `$__fromTime`, `$__interval_s`, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """`30s`, `5m`, `1h`, `2d` (Grafana/Prometheus style; also `1h30m`) → seconds."""
    if isinstance(text, int | float):
        return float(text)
    s = text.strip()
    total = 0.0
    pos = 0
    for m in re.finditer(r"(\d+)(ms|s|m|h|d|w)", s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"bad duration {text!r} (use e.g. 30s, 5m, 1h)")
    return total


class MacroError(ValueError):
    """A query uses a macro wrongly, or syntax its context cannot expand."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    interval_s: float = 30.0

    @classmethod
    def last(
        cls, seconds: float, *, now: datetime | None = None, interval_s: float = 30.0
    ) -> TimeRange:
        end = now or datetime.now(UTC)
        return cls(end - timedelta(seconds=seconds), end, interval_s)

    def _unix(self, dt: datetime) -> float:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()

    def from_s(self) -> int:
        return int(self._unix(self.start))

    def to_s(self) -> int:
        return int(self._unix(self.end))

    def from_ms(self) -> int:
        return int(self._unix(self.start) * 1000)

    def to_ms(self) -> int:
        return int(self._unix(self.end) * 1000)

    def from_date(self) -> str:
        return datetime.fromtimestamp(self.from_s(), UTC).strftime("%Y-%m-%d")

    def to_date(self) -> str:
        return datetime.fromtimestamp(self.to_s(), UTC).strftime("%Y-%m-%d")


@dataclass
class Variable:
    """A dashboard variable's current value: `values` plus whether it came from a
    multi-value selection (rendered as an array) and whether "All" is selected."""

    values: list[str] = field(default_factory=list)
    multi: bool = False
    is_all: bool = False

    def render(self, fmt: str | None = None) -> str:
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in self.values)
        if fmt == "doublequote":
            return ",".join('"' + v.replace('"', '\\"') + '"' for v in self.values)
        if fmt == "csv":
            return ",".join(self.values)
        if fmt == "sqlstring":
            return ",".join("'" + v.replace("'", "''") + "'" for v in self.values)
        if fmt in (None, ""):
            # The plugin's own formatter: arrays → 'a','b'; a single value as is.
            if self.multi:
                return "'" + "','".join(self.values) + "'"
            return self.values[0] if self.values else ""
        if fmt == "raw":
            return ",".join(self.values)
        raise MacroError(f"variable format {fmt!r} is not emulated")


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose `(` is at text[start-1]; returns (args, index after
    the closing parenthesis). Commas inside quotes or nested parentheses do not split."""
    depth = 0
    quote: str | None = None
    args: list[str] = []
    cur: list[str] = []
    i = start
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
            cur.append(c)
        elif c == "(":
            depth += 1
            cur.append(c)
        elif c == ")":
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
            depth -= 1
            cur.append(c)
        elif c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    raise MacroError(f"unclosed macro call at {text[max(0, start - 20) : start + 20]!r}")


def expand_conditional_all(sql: str, variables: dict[str, Variable]) -> str:
    out: list[str] = []
    pos = 0
    token = "$__conditionalAll("
    while True:
        i = sql.find(token, pos)
        if i < 0:
            out.append(sql[pos:])
            return "".join(out)
        out.append(sql[pos:i])
        args, end = _split_args(sql, i + len(token))
        if len(args) != 2:
            raise MacroError("$__conditionalAll takes (condition, $variable)")
        name = args[1].lstrip("$").strip("{}")
        var = variables.get(name)
        if var is None:
            raise MacroError(f"$__conditionalAll refers to unknown variable {args[1]}")
        all_selected = var.is_all or not var.values or var.values == [""]
        out.append("1=1" if all_selected else args[0])
        pos = end


_VAR_RE = re.compile(
    r"\$\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<fmt>[a-z]+))?\}"
    r"|\[\[(?P<k>[A-Za-z_][A-Za-z0-9_]*)\]\]"
    r"|\$(?!__)(?P<p>[A-Za-z_][A-Za-z0-9_]*)"
)


def substitute_variables(sql: str, variables: dict[str, Variable]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group("b") or m.group("k") or m.group("p")
        var = variables.get(name)
        if var is None:
            raise MacroError(f"unknown template variable ${name}")
        return var.render(m.group("fmt"))

    return _VAR_RE.sub(repl, sql)


def template_variables_in(sql: str) -> list[str]:
    return [m.group("b") or m.group("k") or m.group("p") for m in _VAR_RE.finditer(sql)]


def _timegroup_seconds(arg: str) -> int:
    a = arg.strip().strip("'\"")
    if a.isdigit():
        return int(a)
    return max(int(parse_duration(a)), 1)


def _function_macro(name: str, args: list[str], r: TimeRange) -> str:
    def one() -> str:
        if len(args) != 1 or not args[0]:
            raise MacroError(f"$__{name} takes one column")
        return args[0]

    fs, ts = f"toDateTime({r.from_s()})", f"toDateTime({r.to_s()})"
    if name == "timeFilter":
        c = one()
        return f"{c} >= {fs} AND {c} <= {ts}"
    if name == "timeFilter_ms":
        c = one()
        return (
            f"{c} >= fromUnixTimestamp64Milli({r.from_ms()}) AND "
            f"{c} <= fromUnixTimestamp64Milli({r.to_ms()})"
        )
    if name == "dateFilter":
        c = one()
        return f"{c} >= toDate('{r.from_date()}') AND {c} <= toDate('{r.to_date()}')"
    if name in ("dateTimeFilter", "dt"):
        if len(args) != 2:
            raise MacroError(f"$__{name} takes (date column, time column)")
        d, t = args
        return (
            f"({d} >= toDate('{r.from_date()}') AND {d} <= toDate('{r.to_date()}')) AND "
            f"({t} >= {fs} AND {t} <= {ts})"
        )
    if name == "timeFrom":
        return f"{one()} >= {fs}"
    if name == "timeTo":
        return f"{one()} <= {ts}"
    if name == "timeInterval":
        seconds = max(int(r.interval_s), 1)
        return f"toStartOfInterval(toDateTime({one()}), INTERVAL {seconds} second)"
    if name == "timeInterval_ms":
        ms = max(int(r.interval_s * 1000), 1)
        return f"toStartOfInterval(toDateTime64({one()}, 3), INTERVAL {ms} millisecond)"
    if name == "timeGroup":
        if len(args) != 2:
            raise MacroError("$__timeGroup takes (column, interval)")
        return (
            f"toStartOfInterval(toDateTime({args[0]}), "
            f"INTERVAL {_timegroup_seconds(args[1])} second)"
        )
    raise MacroError(f"unknown macro $__{name}(")


# Longer names first, so `$__timeFilter_ms(` is not read as `$__timeFilter(`.
_FUNCTIONS = (
    "timeFilter_ms",
    "timeFilter",
    "dateTimeFilter",
    "dateFilter",
    "dt",
    "timeFrom",
    "timeTo",
    "timeInterval_ms",
    "timeInterval",
    "timeGroup",
)
_FUNC_RE = re.compile(r"\$__(" + "|".join(_FUNCTIONS) + r")\(")
_PLAIN_RE = re.compile(r"\$__(fromTime_ms|toTime_ms|fromTime|toTime|interval_s|interval_ms)\b")


def expand_macros(sql: str, r: TimeRange) -> str:
    """The backend (Go) macros."""
    out: list[str] = []
    pos = 0
    while True:
        m = _FUNC_RE.search(sql, pos)
        if not m:
            out.append(sql[pos:])
            break
        out.append(sql[pos : m.start()])
        args, end = _split_args(sql, m.end())
        out.append(_function_macro(m.group(1), args, r))
        pos = end
    sql = "".join(out)

    def plain(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "fromTime":
            return f"toDateTime({r.from_s()})"
        if name == "toTime":
            return f"toDateTime({r.to_s()})"
        if name == "fromTime_ms":
            return f"fromUnixTimestamp64Milli({r.from_ms()})"
        if name == "toTime_ms":
            return f"fromUnixTimestamp64Milli({r.to_ms()})"
        if name == "interval_s":
            return str(max(int(r.interval_s), 1))
        return str(max(int(r.interval_s * 1000), 1))  # interval_ms

    sql = _PLAIN_RE.sub(plain, sql)
    leftover = re.search(r"\$__\w+", sql)
    if leftover:
        raise MacroError(f"macro {leftover.group(0)} is not supported here")
    return sql


def expand_dashboard_query(sql: str, variables: dict[str, Variable], r: TimeRange) -> str:
    return expand_macros(substitute_variables(expand_conditional_all(sql, variables), variables), r)


def expand_alert_query(sql: str, r: TimeRange) -> str:
    """Alert queries run backend-only in Grafana: dashboard syntax would reach ClickHouse
    unexpanded there, so it is refused here too."""
    if "$__conditionalAll" in sql:
        raise MacroError("$__conditionalAll is dashboard-only; alert queries cannot use it")
    names = template_variables_in(sql)
    if names:
        raise MacroError(f"template variables are dashboard-only: ${names[0]}")
    return expand_macros(sql, r)
