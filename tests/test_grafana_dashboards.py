"""Every dashboard panel and variable, expanded like the ClickHouse plugin and run on the
real migrated schema with a seeded dataset; structure and freshness of the JSON."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from tests.grafana_seed import (
    NOW,
    SESSION_BROWSERS,
    agent_dataset,
    error_specs,
    seed_agents,
    seed_replay,
    seed_sentry,
    seed_spans,
    session_vitals,
)
from weftline.dashboards.alerting import grafana as alert_grafana
from weftline.dashboards.alerting.rules import load_rules
from weftline.dashboards.grafana.build import GRAFANA_DIR, render_files
from weftline.dashboards.grafana.check import (
    exposed_series_names,
    load_dashboards,
    prometheus_problems,
    run_dashboard,
    structure_problems,
)
from weftline.dashboards.grafana.macros import (
    MacroError,
    TimeRange,
    Variable,
    expand_alert_query,
    expand_dashboard_query,
    expand_macros,
)
from weftline.ground.config import Settings

F = datetime.fromtimestamp(1700000000, UTC)
T = datetime.fromtimestamp(1700003600.9, UTC)
R = TimeRange(F, T, interval_s=30.7)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(ts)", "ts >= toDateTime(1700000000) AND ts <= toDateTime(1700003600)"),
        (
            "$__timeFilter_ms(ts)",
            "ts >= fromUnixTimestamp64Milli(1700000000000) AND "
            "ts <= fromUnixTimestamp64Milli(1700003600900)",
        ),
        ("$__dateFilter(d)", "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')"),
        (
            "$__dt(d, t)",
            "(d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')) AND "
            "(t >= toDateTime(1700000000) AND t <= toDateTime(1700003600))",
        ),
        (
            "$__timeFrom(c) AND $__timeTo(c)",
            "c >= toDateTime(1700000000) AND c <= toDateTime(1700003600)",
        ),
        ("$__fromTime, $__toTime", "toDateTime(1700000000), toDateTime(1700003600)"),
        ("$__fromTime_ms", "fromUnixTimestamp64Milli(1700000000000)"),
        ("$__interval_s", "30"),
        (
            "$__timeInterval(coalesce(a, b))",
            "toStartOfInterval(toDateTime(coalesce(a, b)), INTERVAL 30 second)",
        ),
        (
            "$__timeInterval_ms(ts)",
            "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 30700 millisecond)",
        ),
        ("$__timeGroup(ts, 5m)", "toStartOfInterval(toDateTime(ts), INTERVAL 300 second)"),
        ("f(',', $__timeFrom(x))", "f(',', x >= toDateTime(1700000000))"),
    ],
)
def test_backend_macros_expand_like_the_plugin(sql: str, expected: str) -> None:
    assert expand_macros(sql, R) == expected


def test_frontend_variables_and_conditional_all() -> None:
    some = {"p": Variable(["1", "2"], multi=True), "s": Variable(["api"])}
    every = {"p": Variable(["1", "2"], multi=True, is_all=True), "s": Variable(["api"])}
    sql = (
        "WHERE $__conditionalAll(project_id IN ($p), $p) AND svc = '$s' AND x IN (${p:singlequote})"
    )
    assert (
        expand_dashboard_query(sql, some, R)
        == "WHERE project_id IN ('1','2') AND svc = 'api' AND x IN ('1','2')"
    )
    assert expand_dashboard_query(sql, every, R) == "WHERE 1=1 AND svc = 'api' AND x IN ('1','2')"
    with pytest.raises(MacroError, match="unknown template variable"):
        expand_dashboard_query("SELECT $nope", some, R)
    with pytest.raises(MacroError, match="dashboard-only"):
        expand_alert_query("SELECT 1 WHERE $__conditionalAll(a, $p)", R)
    with pytest.raises(MacroError, match="dashboard-only"):
        expand_alert_query("SELECT 1 FROM ${db}.t", R)
    with pytest.raises(MacroError, match="not supported"):
        expand_macros("SELECT $__bogus", R)


def test_checked_in_provisioning_is_what_the_builders_produce() -> None:
    for rel, text in render_files().items():
        assert (GRAFANA_DIR / rel).read_text() == text, f"{rel} is stale: weftline grafana build"
    compiled = alert_grafana.render(load_rules(), Settings(alert_webhooks=[]))
    assert alert_grafana.ALERTING_FILE.read_text() == compiled, "weftline alerts compile"


def test_dashboards_structure_and_prometheus_metric_names() -> None:
    dashboards = load_dashboards()
    assert {d["uid"] for d in dashboards} == {
        "weftline-overview",
        "weftline-web",
        "weftline-errors",
        "weftline-agents",
        "weftline-traces",
        "weftline-pipeline",
    }
    assert structure_problems(dashboards) == []
    assert prometheus_problems(dashboards, exposed_series_names()) == []

    broken = copy.deepcopy(dashboards[:2])
    broken[1]["uid"] = broken[0]["uid"]
    panel = next(p for p in broken[0]["panels"] if p["type"] != "row")
    panel["gridPos"]["w"] = 30
    panel["datasource"] = {"type": "grafana-clickhouse-datasource", "uid": "nope"}
    panel["targets"][0]["expr"] = "rate(weftline_no_such_metric_total[5m])"
    problems = structure_problems(broken)
    assert any("duplicate dashboard uids" in p for p in problems)
    assert any("outside the 24-column grid" in p for p in problems)
    assert any("is not provisioned" in p for p in problems)
    assert prometheus_problems(broken, exposed_series_names())


def _results(ch, overrides=None):
    rng = TimeRange.last(6 * 3600, interval_s=30)
    out = {}
    for d in load_dashboards():
        for r in run_dashboard(d, ch, rng, {"db": Variable([ch.database]), **(overrides or {})}):
            out[(d["uid"], r.title)] = r
    return out


def test_every_panel_and_variable_runs_on_the_real_schema(ch) -> None:
    seed_agents(ch)
    seed_spans(ch)
    seed_replay(ch)
    seed_sentry(ch)
    results = _results(ch)
    errors = {k: r.error for k, r in results.items() if r.error}
    assert errors == {}
    ch_targets = sum(
        1
        for d in load_dashboards()
        for p in d["panels"]
        for t in p.get("targets", [])
        if "rawSql" in t
    )
    assert len([k for k in results if not k[1].startswith("$")]) == ch_targets

    def rows(uid, title):
        return results[(uid, title)].rows

    for uid in ("weftline-agents", "weftline-web", "weftline-errors"):
        assert [r["toString(project_id)"] for r in rows(uid, "$project")] == ["1", "2"]
    stuck = rows("weftline-agents", "Stuck agents: heartbeat older than $stale_minutes min")
    assert [r["agent_id"] for r in stuck] == ["stuck-bot"]
    assert stuck[0]["seconds_since_heartbeat"] >= 20 * 60
    by_status = {r["status"]: r["agents"] for r in rows("weftline-agents", "Agents by status")}
    assert by_status == {"busy": 4, "idle": 1, "terminated": 1}
    assert rows("weftline-agents", "Task failure ratio")[0]["failure_ratio"] == pytest.approx(0.2)
    assert {r["hitl_id"] for r in rows("weftline-agents", "Open HITL requests")} == {"q4", "q5"}
    hitl = rows("weftline-agents", "HITL response time (answered)")
    assert sorted(r["p50"] for r in hitl) == [60000, 120000, 180000, 240000]
    top = {r["action"]: r["interactions"] for r in rows("weftline-agents", "Top canvas actions")}
    assert top == {a: 8 for a in top} and len(top) == 5
    assert len(rows("weftline-agents", "Recent task failures")) == 10
    assert rows("weftline-overview", "Agent events")[0]["events"] == sum(
        len(v) for v in agent_dataset(NOW).values()
    )
    assert rows("weftline-overview", "Spans")[0]["spans"] == 280
    slow = rows("weftline-traces", "Slowest endpoints")
    assert {r["name"] for r in slow} >= {"GET /api/flows", "/flows/:id"}
    assert all(r["p95_ms"] >= r["p50_ms"] for r in slow)
    assert {r["service_name"] for r in rows("weftline-traces", "$service")} == {"api", "web"}
    for key in [
        ("weftline-agents", "Task outcomes"),
        ("weftline-agents", "Canvas interactions by action"),
        ("weftline-traces", "p95 latency by service (entry spans)"),
        ("weftline-overview", "Stored per second by signal"),
        ("weftline-pipeline", "Rows stored per minute by table"),
        ("weftline-pipeline", "Delay from event to receipt (p95)"),
    ]:
        assert len(results[key].rows) > 5, key

    # One project selected: only its agents are left.
    only2 = _results(ch, {"project": Variable(["2"], multi=True)})
    assert only2[("weftline-overview", "Active agents")].rows[0]["agents"] == 1
    assert only2[("weftline-overview", "Spans")].rows[0]["spans"] == 0


def _exact_quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def test_sessions_and_web_vitals_panels(ch) -> None:
    seed_replay(ch)
    results = _results(ch)
    assert {k: r.error for k, r in results.items() if r.error} == {}

    def rows(title):
        return results[("weftline-web", title)].rows

    n = len(SESSION_BROWSERS)
    assert rows("Sessions")[0]["sessions"] == n
    # Every session opens "/" and "/flows/42"; session 3 goes back to "/".
    assert rows("Page views")[0]["page_views"] == 2 * n + 1
    by_browser = {r["browser"]: r["sessions"] for r in rows("Sessions by browser")}
    assert by_browser == {"Chrome": 6, "Firefox": 4, "Mobile Safari": 2}
    assert {r["os"]: r["sessions"] for r in rows("Sessions by OS")} == {
        "Windows": 6,
        "Ubuntu": 4,
        "iOS": 2,
    }
    assert {r["device_type"]: r["sessions"] for r in rows("Sessions by device type")} == {
        "desktop": 10,
        "mobile": 2,
    }
    assert sum(r["sessions"] for r in rows("Sessions started")) == n
    assert rows("Sessions with rage clicks")[0]["share"] == pytest.approx(3 / n)

    vitals = {r["vital"]: r for r in rows("Web vitals")}
    assert set(vitals) == {"CLS", "INP", "LCP", "TTFB"}
    for name, r in vitals.items():
        measured = [session_vitals(i)[name] for i in range(n)]
        assert r["events"] == n
        # t-digest on 12 points: within one step of the exact order statistic.
        step = measured[1] - measured[0]
        assert abs(r["p75"] - _exact_quantile(measured, 0.75)) <= step + 1e-9, name
        assert r["p50"] <= r["p75"] <= r["p95"]
    assert vitals["LCP"]["budget"] == 2500 and vitals["LCP"]["p75_rating"] == "over budget"
    assert vitals["TTFB"]["p75_rating"] == "good"  # 100..320 ms against 800
    assert vitals["INP"]["p75_rating"] == "over budget"  # p75 ~ 250 ms against 200
    lcp_series = rows("LCP, INP and TTFB p75")
    assert {r["name"] for r in lcp_series} == {"LCP", "INP", "TTFB"}
    loads = rows("Page load time (loadEventEnd)")
    assert loads and max(r["p95"] for r in loads) <= max(
        session_vitals(i)["page_load"] for i in range(n)
    )
    assert rows("CLS p75")

    top = {r["page"]: r for r in rows("Top pages")}
    assert list(top) == ["/", "/flows/42"]
    assert (top["/"]["views"], top["/"]["sessions"]) == (n + 1, n)
    assert (top["/flows/42"]["views"], top["/flows/42"]["rage_clicks"]) == (n, 3)
    assert top["/"]["dead_clicks"] == 1 and top["/"]["lcp_p75_ms"] > 2500
    assert top["/flows/42"]["load_p75_ms"] is None  # no PageLoadTiming on that page
    loads_ms = [session_vitals(i)["page_load"] for i in range(n)]
    assert abs(top["/"]["load_p75_ms"] - _exact_quantile(loads_ms, 0.75)) <= 100
    frustration = {
        (r["page"], r["signal"]): r["events"] for r in rows("Pages with the most frustration")
    }
    assert frustration == {
        ("/flows/42", "click_rage"): 3,
        ("/", "dead_click"): 1,
        ("/flows/42", "mouse_thrashing"): 1,
    }
    series = rows("Rage clicks, dead clicks, mouse thrashing")
    assert sum(r["events"] for r in series if r["name"] == "click_rage") == 3


def test_errors_panels_and_variables(ch) -> None:
    groups = seed_sentry(ch)
    seed_spans(ch)
    results = _results(ch)
    assert {k: r.error for k, r in results.items() if r.error} == {}

    def rows(title, res=results):
        return res[("weftline-errors", title)].rows

    specs = {s.key: s for s in error_specs()}
    in_6h = {k: len([m for m in s.minutes_ago if m < 360]) for k, s in specs.items()}
    assert rows("Errors")[0]["errors"] == sum(in_6h.values()) == 47
    assert rows("Issues seen")[0]["issues"] == 3  # A, B, C
    assert rows("Users affected")[0]["users"] == 10  # user-0..user-9 (A covers B's and C's)
    assert {r["release"] for r in rows("$release")} == {"web@1.2.0", "web@1.3.0-rc1"}
    assert {r["environment"] for r in rows("$environment")} == {"production", "staging"}

    top = rows("Top issues")
    assert [r["issue"] for r in top] == [groups["A"], groups["B"], groups["C"]]
    assert [r["errors"] for r in top] == [30, 12, 5]
    assert top[0]["users"] == 10 and top[0]["title"].startswith("TypeError")
    new = {r["issue"]: r for r in rows("Issues first seen in range")}
    assert set(new) == {groups["B"], groups["C"]}
    assert new[groups["C"]]["first_release"] == "web@1.3.0-rc1"
    assert rows("Issues first seen in range")[0]["issue"] == groups["B"]  # newest first
    assert rows("New issues")[0]["new_issues"] == 2
    assert rows("Regressed issues")[0]["regressed"] == 1
    [reg] = rows("Regressions")
    assert reg["issue"] == groups["A"] and reg["last_seen"] > reg["resolved_at"]
    by_release = {r["release"]: r["errors"] for r in rows("Errors by release")}
    assert by_release == {"web@1.2.0": 42, "web@1.3.0-rc1": 5}
    per_min = rows("Errors per minute by release")
    assert {r["release"] for r in per_min} == {"web@1.2.0", "web@1.3.0-rc1"}
    assert sum(r["errors_per_minute"] for r in per_min) == pytest.approx(47)  # 30 s buckets
    assert results[("weftline-overview", "Errors (Sentry)")].rows[0]["errors"] == 47
    assert results[("weftline-overview", "New issues")].rows[0]["new_issues"] == 2

    # Filters: production only, then one release.
    prod = _results(ch, {"environment": Variable(["production"], multi=True)})
    assert rows("Errors", prod)[0]["errors"] == 42
    assert {r["issue"] for r in rows("Issues first seen in range", prod)} == {groups["B"]}
    rc = _results(ch, {"release": Variable(["web@1.3.0-rc1"], multi=True)})
    assert [r["issue"] for r in rows("Top issues", rc)] == [groups["C"]]
