"""Grafana polish: every panel described, stat panels with thresholds, tables linking into
the debugging view, and the crash-free-sessions panel on real release-health rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from weftline.dashboards.grafana.build import UI_LINKS, all_dashboards
from weftline.dashboards.grafana.check import load_dashboards, run_dashboard
from weftline.dashboards.grafana.macros import TimeRange, Variable


def test_descriptions_thresholds_and_links() -> None:
    for d in all_dashboards():
        names = {v["name"] for v in d.variables}
        assert "weftline_url" in names, d.uid
        for p in d.panels:
            if p["type"] == "row":
                continue
            assert p.get("description"), f"{d.uid}: {p['title']!r} has no description"
            defaults = p["fieldConfig"]["defaults"]
            if p["type"] == "stat":
                steps = defaults.get("thresholds", {}).get("steps")
                assert steps and steps[0]["value"] is None, f"{d.uid}: {p['title']!r}"
            if p["type"] == "table":
                sql = " ".join(t.get("rawSql", "") for t in p["targets"])
                links = {
                    o["matcher"]["options"]: o["properties"][0]["value"][0]["url"]
                    for o in p["fieldConfig"]["overrides"]
                    if o["properties"][0]["id"] == "links"
                }
                for column in UI_LINKS:
                    if column in sql:
                        assert links[column].startswith("${weftline_url}/ui/"), p["title"]
    # The tables a user clicks through: issues, traces and sessions.
    by_title = {p["title"]: p for d in all_dashboards() for p in d.panels}
    urls = [
        o["properties"][0]["value"][0]["url"]
        for t in ("Top issues", "Slowest traces")
        for o in by_title[t]["fieldConfig"]["overrides"]
    ]
    assert "${weftline_url}/ui/issues/${__value.raw}" in urls
    assert "${weftline_url}/ui/traces/${__value.raw}" in urls
    assert "${weftline_url}/ui/sessions/${__value.raw}" in urls


def test_crash_free_sessions_on_real_rows(ch) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)

    def row(uid: str, kind: str, status: str, minutes: int, **counts: int) -> dict:
        t = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S.000")
        return {
            "project_id": 1,
            "row_uid": uid,
            "kind": kind,
            "session_id": uid.split(":")[0] if kind == "session" else "",
            "distinct_id": "",
            "status": status,
            "init": 1,
            "errors": 0,
            "started": t,
            "timestamp": t,
            "duration": None,
            "release": "web@1",
            "environment": "production",
            "exited": counts.get("exited", 0),
            "errored": counts.get("errored", 0),
            "crashed": counts.get("crashed", 0),
            "abnormal": counts.get("abnormal", 0),
            "received_at": t,
        }

    rows = [
        row("s1:0", "session", "ok", 30),
        row("s1:1", "session", "exited", 29),  # one session, two updates
        row("s2:0", "session", "crashed", 20),
        row("a:0", "aggregate", "", 10, exited=6, errored=1, crashed=1),
        row("old:0", "session", "crashed", 60 * 24),  # outside the 6 h range
    ]
    ch.insert("sentry_sessions", rows)
    [errors] = [d for d in load_dashboards() if d["uid"] == "weftline-errors"]
    results = {
        r.title: r
        for r in run_dashboard(
            errors, ch, TimeRange.last(6 * 3600, interval_s=30), {"db": Variable([ch.database])}
        )
    }
    res = results["Crash-free sessions"]
    assert res.error is None
    # 2 single sessions + 8 aggregated; 1 + 1 crashed.
    assert res.rows[0]["crash_free"] == pytest.approx(1 - 2 / 10)
