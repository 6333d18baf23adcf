"""Offline validation of the Grafana dashboards (reference §4.11): structure, then every
variable and panel query expanded like the plugin and run on the real ClickHouse schema.
Prometheus panels cannot run here; their metric names are checked against /metrics."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weftline.dashboards.grafana.build import CLICKHOUSE_UID, DASHBOARDS_DIR, PROMETHEUS_UID
from weftline.dashboards.grafana.macros import (
    MacroError,
    TimeRange,
    Variable,
    expand_dashboard_query,
)
from weftline.storage.clickhouse import ClickHouse, StorageError

DATASOURCE_UIDS = {
    CLICKHOUSE_UID: "grafana-clickhouse-datasource",
    PROMETHEUS_UID: "prometheus",
}
TIME_TYPES = ("DateTime", "Date")


def load_dashboards(folder: Path = DASHBOARDS_DIR) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def structure_problems(dashboards: list[dict[str, Any]]) -> list[str]:
    """uids unique, datasource references resolve, gridPos on the 24-column grid without
    overlaps, ids unique, every target has a query."""
    problems: list[str] = []
    uids = [d.get("uid") for d in dashboards]
    if len(set(uids)) != len(uids):
        problems.append(f"duplicate dashboard uids: {uids}")
    for d in dashboards:
        name = d.get("uid", "?")
        if not d.get("uid") or len(d["uid"]) > 40:
            problems.append(f"{name}: uid missing or longer than 40 characters")
        if not d.get("title"):
            problems.append(f"{name}: no title")
        var_names = [v.get("name") for v in d.get("templating", {}).get("list", [])]
        if len(set(var_names)) != len(var_names):
            problems.append(f"{name}: duplicate variable names {var_names}")
        ids: set[int] = set()
        cells: dict[tuple[int, int], str] = {}
        for p in _panels(d):
            title = p.get("title", "?")
            if p.get("id") in ids:
                problems.append(f"{name}/{title}: duplicate panel id {p.get('id')}")
            ids.add(p.get("id"))
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
                problems.append(f"{name}/{title}: gridPos incomplete")
                continue
            if g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
                problems.append(f"{name}/{title}: gridPos {g} outside the 24-column grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        problems.append(f"{name}/{title}: overlaps {cells[(x, y)]}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
            if p.get("type") == "row":
                continue
            refs = [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]
            for ref in refs:
                if not ref or DATASOURCE_UIDS.get(ref.get("uid")) != ref.get("type"):
                    problems.append(f"{name}/{title}: datasource {ref} is not provisioned")
            if not p.get("targets"):
                problems.append(f"{name}/{title}: no targets")
            for t in p.get("targets", []):
                if not (t.get("rawSql") or t.get("expr")):
                    problems.append(f"{name}/{title}: target {t.get('refId')} has no query")
    return problems


@dataclass
class QueryResult:
    dashboard: str
    title: str
    ref_id: str
    sql: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def run_query(ch: ClickHouse, sql: str, limit: int = 1000) -> tuple[list[dict], dict[str, str]]:
    rows = ch.query(f"SELECT * FROM ({sql}) LIMIT {int(limit)}")
    desc = ch.query(f"DESCRIBE (SELECT * FROM ({sql}))")
    return rows, {r["name"]: r["type"] for r in desc}


def resolve_variables(
    dash: dict[str, Any], ch: ClickHouse, rng: TimeRange, overrides: dict[str, Variable]
) -> tuple[dict[str, Variable], list[QueryResult]]:
    """Variables in dashboard order. Query variables run their SQL; "All" is selected
    (as provisioned), so panels see every value. `overrides` replaces any variable."""
    variables: dict[str, Variable] = {}
    results: list[QueryResult] = []
    for v in dash.get("templating", {}).get("list", []):
        name = v["name"]
        if name in overrides:
            variables[name] = overrides[name]
            continue
        if v["type"] in ("constant", "textbox"):  # a textbox holds its default
            variables[name] = Variable([str(v["query"])])
        elif v["type"] == "custom":
            current = v.get("current", {}).get("value")
            variables[name] = Variable([str(current)])
        elif v["type"] == "query":
            q = v["query"]["rawSql"] if isinstance(v["query"], dict) else v["query"]
            res = QueryResult(dash["uid"], f"${name}", "var", q)
            try:
                res.sql = expand_dashboard_query(q, variables, rng)
                res.rows, res.types = run_query(ch, res.sql)
            except (MacroError, StorageError) as e:
                res.error = str(e)
            results.append(res)
            values = [str(next(iter(r.values()))) for r in res.rows]
            variables[name] = Variable(values, multi=bool(v.get("multi")), is_all=True)
        else:
            raise MacroError(f"variable type {v['type']} is not emulated")
    return variables, results


def run_dashboard(
    dash: dict[str, Any],
    ch: ClickHouse,
    rng: TimeRange,
    overrides: dict[str, Variable] | None = None,
) -> list[QueryResult]:
    """Every variable and ClickHouse panel target, expanded and executed."""
    variables, results = resolve_variables(dash, ch, rng, overrides or {})
    for p in _panels(dash):
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != CLICKHOUSE_UID:
                continue
            res = QueryResult(dash["uid"], p["title"], t["refId"], t["rawSql"])
            try:
                res.sql = expand_dashboard_query(t["rawSql"], variables, rng)
                res.rows, res.types = run_query(ch, res.sql)
                if t.get("format") == 0 and not any(
                    ty.startswith(TIME_TYPES) for ty in res.types.values()
                ):
                    res.error = f"time series target returns no time column: {res.types}"
            except (MacroError, StorageError) as e:
                res.error = str(e)
            results.append(res)
    return results


_METRIC_RE = re.compile(r"\b(weftline_[a-z0-9_]+)")


def prometheus_problems(dashboards: list[dict[str, Any]], exposed: set[str]) -> list[str]:
    """Series names in PromQL that Weftline's /metrics does not expose."""
    problems = []
    for d in dashboards:
        for p in _panels(d):
            for t in p.get("targets", []):
                for name in _METRIC_RE.findall(t.get("expr", "")):
                    if name not in exposed:
                        problems.append(f"{d['uid']}/{p['title']}: unknown series {name}")
    return problems


def exposed_series_names() -> set[str]:
    """The series names /metrics serves (a counter `x` is exposed as `x_total`)."""
    from weftline.ground.metrics import REGISTRY

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    out: set[str] = set()
    for m in REGISTRY.collect():
        for s in suffixes.get(m.type, ("",)):
            out.add(m.name + s)
    return out
