"""Loading and validating the alert rule files.

One file is one rule group:

    group: agents          # Grafana rule group, and the `group` label
    interval: 1m           # how often the rules are evaluated
    rules:
      - name: agent_heartbeat_stale
        title: Agent heartbeat stale
        sql: SELECT ... AS value FROM ${db}.agent_last_state ...   # or: metric: <named metric>
        threshold: {op: gt, value: 300}
        window: 24h        # the query's time range: $__fromTime .. $__toTime
        for: 2m            # condition must hold this long before firing
        severity: critical
        labels: {team: agents}
        summary: Agent {{agent_id}} silent for {{value}} s
        runbook: docs/grafana-and-alerts.md#agent_heartbeat_stale

A SQL rule returns one numeric column `value`; every other column is a label that
tells alert instances apart (so numbers used as labels are cast with toString).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from weftline.dashboards.grafana.macros import (
    MacroError,
    TimeRange,
    expand_alert_query,
    parse_duration,
)
from weftline.storage.migrate import MIGRATIONS_DIR

RULES_DIR = Path(__file__).resolve().parent / "rules"
NAME_RE = r"^[a-z][a-z0-9_]{0,30}$"
TABLE_RE = re.compile(r"\$\{db\}\.([A-Za-z_][A-Za-z0-9_]*)")
OPS = {
    "gt": lambda v, t: v > t,
    "ge": lambda v, t: v >= t,
    "lt": lambda v, t: v < t,
    "le": lambda v, t: v <= t,
    "eq": lambda v, t: v == t,
    "ne": lambda v, t: v != t,
}


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["gt", "ge", "lt", "le", "eq", "ne"]
    value: float

    def holds(self, v: float) -> bool:
        return OPS[self.op](v, self.value)


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_RE)
    title: str = Field(min_length=1, max_length=190)
    sql: str | None = None
    metric: str | None = None
    threshold: Threshold
    window: str = "5m"
    for_: str = Field(default="0s", alias="for")
    interval: str | None = None
    severity: Literal["critical", "warning", "info"] = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    runbook: str = ""
    optional: bool = Field(
        default=False,
        description="its tables may not exist yet: skipped (not an error) while missing",
    )

    @field_validator("window", "for_", "interval")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> RuleSpec:
        if (self.sql is None) == (self.metric is None):
            raise ValueError("give exactly one of `sql` or `metric`")
        if self.metric is not None:
            from weftline.dashboards.alerting.metrics import NAMED_METRICS

            if self.metric not in NAMED_METRICS:
                raise ValueError(
                    f"unknown metric {self.metric!r}; known: {', '.join(sorted(NAMED_METRICS))}"
                )
        if self.sql is not None:
            try:
                expand_alert_query(self.sql.replace("${db}", "db"), TimeRange.last(60))
            except MacroError as e:
                raise ValueError(f"sql: {e}") from None
        return self


class GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group: str = Field(pattern=NAME_RE)
    interval: str = "1m"
    folder: str = "Weftline"
    rules: list[RuleSpec]


@dataclass(frozen=True)
class Rule:
    """A validated rule, with its group's defaults applied."""

    name: str
    title: str
    group: str
    folder: str
    threshold: Threshold
    window_s: float
    for_s: float
    interval_s: float
    severity: str
    labels: dict[str, str]
    summary: str
    runbook: str
    optional: bool
    sql: str | None = None
    metric: str | None = None
    source: str = ""
    tables: tuple[str, ...] = field(default=())

    @property
    def uid(self) -> str:
        return f"weftline-{self.name}"

    def sql_for(self, database: str) -> str:
        assert self.sql is not None
        return self.sql.replace("${db}", database)

    def all_labels(self) -> dict[str, str]:
        return {
            "alertname": self.name,
            "group": self.group,
            "severity": self.severity,
            **self.labels,
        }


class RuleFileError(ValueError):
    pass


def load_rules(folder: Path = RULES_DIR) -> list[Rule]:
    rules: list[Rule] = []
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        try:
            raw: Any = yaml.safe_load(path.read_text())
            spec = GroupSpec.model_validate(raw)
        except (yaml.YAMLError, ValueError) as e:
            raise RuleFileError(f"{path.name}: {e}") from None
        interval = parse_duration(spec.interval)
        for r in spec.rules:
            rules.append(
                Rule(
                    name=r.name,
                    title=r.title,
                    group=spec.group,
                    folder=spec.folder,
                    threshold=r.threshold,
                    window_s=parse_duration(r.window),
                    for_s=parse_duration(r.for_),
                    interval_s=parse_duration(r.interval) if r.interval else interval,
                    severity=r.severity,
                    labels=r.labels,
                    summary=r.summary,
                    runbook=r.runbook,
                    optional=r.optional,
                    sql=r.sql.strip() if r.sql else None,
                    metric=r.metric,
                    source=path.name,
                    tables=tuple(sorted(set(TABLE_RE.findall(r.sql or "")))),
                )
            )
    names = [r.name for r in rules]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuleFileError(f"duplicate rule names: {sorted(dupes)}")
    return rules


def migrated_tables(folder: Path = MIGRATIONS_DIR) -> set[str]:
    """Tables the migrations in this tree create (read statically, no database needed)."""
    pattern = re.compile(
        r"CREATE\s+(?:TABLE|MATERIALIZED\s+VIEW|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
        r"\$\{db\}\.([A-Za-z_][A-Za-z0-9_]*)",
        re.I,
    )
    out: set[str] = set()
    for p in folder.glob("*.sql"):
        out.update(pattern.findall(p.read_text()))
    return out


def render_summary(template: str, labels: dict[str, str], value: float | None) -> str:
    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "value":
            return "" if value is None else f"{value:.4g}"
        return labels.get(key, "")

    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", repl, template)
