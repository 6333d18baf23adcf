"""Alert rules: one YAML source, compiled for Grafana and evaluated by Weftline's own
leader-elected loop against the real schema, real Valkey and a real webhook receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.alert_receiver import Receiver
from tests.conftest import REPO, run_weftline, wait_for, weftline_env
from tests.grafana_seed import (
    NOW,
    iso,
    seed_agents,
    seed_replay,
    seed_sentry,
    seed_spans,
    span_rows,
    store_agent_events,
)
from weftline.dashboards.alerting.evaluator import AlertLoop
from weftline.dashboards.alerting.grafana import compile_rules
from weftline.dashboards.alerting.metrics import publish_counters
from weftline.dashboards.alerting.rules import RuleFileError, load_rules, migrated_tables
from weftline.dashboards.grafana.build import CLICKHOUSE_UID, PROMETHEUS_UID
from weftline.dashboards.grafana.macros import TimeRange, expand_alert_query
from weftline.ground.config import Settings, WebhookConfig
from weftline.ground.metrics import ACCEPTED, REJECTED
from weftline.storage.keys import dlq_stream, in_stream

RULES = {r.name: r for r in load_rules()}


def rules(*names: str, **changes) -> list:
    return [dataclasses.replace(RULES[n], interval_s=0, **changes) for n in names]


def alert_settings(receiver: Receiver | None = None, **kw) -> Settings:
    hooks = []
    if receiver is not None:
        hooks = [
            WebhookConfig(name="json", url=receiver.url + "/generic"),
            WebhookConfig(name="am", url=receiver.url + "/am", format="alertmanager"),
        ]
    kw.setdefault("alerts_interval_seconds", 0.05)
    kw.setdefault("alerts_lock_ttl_ms", 2000)
    return Settings(alert_webhooks=hooks, **kw)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_rule_files_load_and_compile_for_grafana() -> None:
    rules_ = load_rules()
    assert len(rules_) >= 12
    tables = migrated_tables()
    for r in rules_:
        assert len(r.uid) <= 40
        # Every table a starter rule reads is migrated now: none may be skipped.
        assert not r.optional and set(r.tables) <= tables, r.name
    doc, left_out = compile_rules(rules_, Settings())
    assert left_out == []
    optional = dataclasses.replace(
        RULES["error_rate_spike"], name="future", optional=True, tables=("not_yet",)
    )
    assert compile_rules([*rules_, optional], Settings())[1] == ["future"]
    compiled = [rule for g in doc["groups"] for rule in g["rules"]]
    assert len(compiled) == len(rules_)
    for rule in compiled:
        refs = {q["refId"] for q in rule["data"]}
        assert rule["condition"] in refs
        for q in rule["data"]:
            model = q["model"]
            if q["datasourceUid"] == "__expr__":
                assert model["expression"] in refs and model["refId"] == q["refId"]
            else:
                assert q["datasourceUid"] in (CLICKHOUSE_UID, PROMETHEUS_UID)
                assert q["relativeTimeRange"]["from"] > 0
            if "rawSql" in model:
                assert "${db}" not in model["rawSql"] and "weftline." in model["rawSql"]
                expand_alert_query(model["rawSql"], TimeRange.last(60))  # backend-only syntax
        assert rule["noDataState"] in ("NoData", "Alerting", "OK")
        assert rule["execErrState"] in ("Alerting", "Error", "OK")
    assert doc["policies"][0]["receiver"] == doc["contactPoints"][0]["name"]


def test_bad_rule_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "group: g\nrules:\n  - name: r\n    title: t\n    threshold: {op: gt, value: 1}\n"
        "    sql: SELECT 1 AS value FROM ${db}.t WHERE $__conditionalAll(a, $p)\n"
    )
    with pytest.raises(RuleFileError, match="dashboard-only"):
        load_rules(tmp_path)
    (tmp_path / "x.yaml").write_text(
        "group: g\nrules:\n  - name: r\n    title: t\n    threshold: {op: gt, value: 1}\n"
        "    metric: no_such_metric\n"
    )
    with pytest.raises(RuleFileError, match="unknown metric"):
        load_rules(tmp_path)


def test_every_sql_rule_runs_on_the_seeded_schema(ch, vk, valkey) -> None:
    # Seed around the real "now": the rules look back from the wall clock, and a long
    # suite run would otherwise push the module-level NOW out of their windows.
    now = datetime.now(UTC).replace(microsecond=0)
    seed_agents(ch, now)
    seed_spans(ch, now)
    # The p95 rule needs >= 20 entry spans in its 10-minute window; the shared seed spreads
    # 120 over 55 minutes, which lands near 20 and made the check depend on the clock.
    ch.insert("spans", span_rows(now, project_id=1, count=300), "otlp:seed:alerts-dense")
    seed_replay(ch, now)
    groups = seed_sentry(ch, now)
    client = aioredis.Redis.from_url(valkey.url)
    loop = AlertLoop(alert_settings(), [], ch, client)

    async def run() -> dict:
        tables = await loop.existing_tables()
        return {
            r.name: await loop.evaluate_rule(r, time.time(), tables)
            for r in load_rules()
            if r.sql is not None
        }

    outcomes = asyncio.run(run())
    for name, out in outcomes.items():
        rule = RULES[name]
        assert out.status == "ok", (name, out.error)
        # Grafana turns table rows into series: one numeric `value`, string labels.
        sql = expand_alert_query(rule.sql_for(ch.database), TimeRange.last(rule.window_s))
        types = {r["name"]: r["type"] for r in ch.query(f"DESCRIBE ({sql})")}
        assert "value" in types and all(
            t in ("String", "LowCardinality(String)") for c, t in types.items() if c != "value"
        ), (name, types)
    stale = outcomes["agent_heartbeat_stale"]
    assert [lb["agent_id"] for lb, _ in stale.breaching] == ["stuck-bot"]
    assert {lb["agent_id"] for lb, _ in stale.samples} == {
        "planner",
        "coder",
        "reviewer",
        "stuck-bot",
        "p2-worker",
    }
    assert {lb["hitl_id"] for lb, _ in outcomes["hitl_unanswered"].breaching} == {"q4", "q5"}
    assert outcomes["span_p95_latency"].samples

    # Errors: project 1 had 12 errors in the last 5 min (issue B) against 35 in the
    # 55 min before (A and C): 12 / (35 / 11) = 3.77x.
    spike = outcomes["error_rate_spike"]
    assert [lb["project"] for lb, _ in spike.breaching] == ["1"]
    assert spike.breaching[0][1] == pytest.approx(12 / (35 / 11))
    new = outcomes["new_issue_in_production"]
    assert [(lb["issue"], v) for lb, v in new.breaching] == [(groups["B"], 12)]
    assert new.breaching[0][0]["title"].startswith("ValueError")
    regressed = outcomes["issue_regressed"]
    assert [lb["issue"] for lb, _ in regressed.breaching] == [groups["A"]]
    assert regressed.breaching[0][1] == 32  # both releases' events of the issue
    # Web vitals of the last hour, 12 sessions: LCP 1000..4300 ms, INP 50..325 ms,
    # CLS 0..0.11 and TTFB 100..320 ms; p95 against 2500 / 200 / 0.1 / 800.
    vitals = {lb["vital"]: v for lb, v in outcomes["web_vitals_p95_budget"].samples}
    assert vitals["LCP"] == pytest.approx(4300 / 2500, rel=0.05)
    assert vitals["TTFB"] == pytest.approx(320 / 800, rel=0.05)
    over = {lb["vital"] for lb, _ in outcomes["web_vitals_p95_budget"].breaching}
    assert over == {"LCP", "INP", "CLS"}
    asyncio.run(client.aclose())


def _stale_agent(ch, minutes: float) -> None:
    store_agent_events(
        ch,
        1,
        [
            {
                "type": "agent_state",
                "agent_id": "lost",
                "status": "busy",
                "ts": iso(NOW - timedelta(minutes=minutes)),
            }
        ],
    )


async def _run_loops(loops: list[AlertLoop], seconds: float) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(lp.run(stop)) for lp in loops]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)


def test_two_evaluators_fire_once_then_resolve_once(ch, valkey, receiver) -> None:
    settings = alert_settings(receiver)
    _stale_agent(ch, 10)

    async def scenario() -> None:
        clients = [aioredis.Redis.from_url(valkey.url) for _ in range(2)]
        loops = [
            AlertLoop(settings, rules("agent_heartbeat_stale"), ch, c, instance_id=f"ev{i}")
            for i, c in enumerate(clients)
        ]
        await _run_loops(loops, 1.5)
        assert len(receiver.on("/generic")) == 1
        assert len(receiver.on("/am")) == 1
        _stale_agent(ch, 0)  # a fresh heartbeat
        await _run_loops(loops, 1.5)
        for c in clients:
            await c.aclose()

    asyncio.run(scenario())
    generic = receiver.on("/generic")
    assert [g["status"] for g in generic] == ["firing", "resolved"]
    fired = generic[0]["alerts"]
    assert len(fired) == 1 and fired[0]["labels"]["agent_id"] == "lost"
    assert fired[0]["labels"]["alertname"] == "agent_heartbeat_stale"
    assert fired[0]["value"] >= 600 and "lost" in fired[0]["summary"]
    assert generic[1]["alerts"][0]["ends_at"] is not None
    am = receiver.on("/am")
    assert [a["status"] for a in am] == ["firing", "resolved"]
    assert am[0]["version"] == "4" and am[0]["groupLabels"]["alertname"] == "agent_heartbeat_stale"
    assert am[0]["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert am[1]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    history = ch.query(
        f"SELECT state, labels['agent_id'] AS agent FROM {ch.database}.alert_history FINAL "
        "ORDER BY ts"
    )
    assert history == [
        {"state": "firing", "agent": "lost"},
        {"state": "resolved", "agent": "lost"},
    ]


def test_for_duration_repeat_interval_and_failover(ch, valkey, receiver) -> None:
    settings = alert_settings(receiver, alerts_repeat_interval_seconds=300)
    _stale_agent(ch, 10)
    rule = rules("agent_heartbeat_stale", for_s=60.0)

    async def scenario() -> None:
        a_client = aioredis.Redis.from_url(valkey.url)
        b_client = aioredis.Redis.from_url(valkey.url)
        a = AlertLoop(settings, rule, ch, a_client, instance_id="a")
        b = AlertLoop(settings, rule, ch, b_client, instance_id="b")
        a.http = b.http = __import__("httpx").AsyncClient()
        t0 = time.time()
        assert (await a.tick(t0)).leader
        assert not (await b.tick(t0)).leader
        assert receiver.calls == []  # pending: `for` not yet elapsed
        report = await a.tick(t0 + 61)
        assert report.fired and report.notifications == 2
        await a.tick(t0 + 120)  # still firing, repeat interval not reached
        assert len(receiver.on("/generic")) == 1
        await a.resign()  # the leader goes away; b continues from the state in Valkey
        report = await b.tick(t0 + 180)
        assert report.leader and report.notifications == 0
        report = await b.tick(t0 + 61 + 301)  # repeat interval elapsed
        assert report.notifications == 2
        assert [g["status"] for g in receiver.on("/generic")] == ["firing", "firing"]
        await a.http.aclose()
        await a_client.aclose()
        await b_client.aclose()

    asyncio.run(scenario())


def test_failed_webhook_is_retried_next_cycle(ch, valkey, receiver) -> None:
    settings = alert_settings(receiver)
    settings.alert_webhooks = settings.alert_webhooks[:1]
    _stale_agent(ch, 10)
    receiver.fail_next = 1

    async def scenario() -> None:
        client = aioredis.Redis.from_url(valkey.url)
        lp = AlertLoop(settings, rules("agent_heartbeat_stale"), ch, client)
        lp.http = __import__("httpx").AsyncClient()
        t0 = time.time()
        first = await lp.tick(t0)
        assert first.fired and first.failed_notifications == 1
        second = await lp.tick(t0 + 1)
        assert second.notifications == 1 and not second.fired
        await lp.http.aclose()
        await client.aclose()

    asyncio.run(scenario())
    assert [g["status"] for g in receiver.on("/generic")] == ["firing"]


def test_rule_on_a_missing_table_is_skipped_not_an_error(ch, valkey, receiver) -> None:
    settings = alert_settings(receiver)
    # A rule written ahead of its migration, e.g. for a table another branch adds.
    optional = [
        dataclasses.replace(
            RULES["error_rate_spike"],
            name="ahead_of_schema",
            optional=True,
            sql="SELECT toString(project_id) AS project, count() AS value "
            "FROM ${db}.not_migrated_yet GROUP BY project_id",
            tables=("not_migrated_yet",),
        )
    ]

    async def scenario():
        client = aioredis.Redis.from_url(valkey.url)
        lp = AlertLoop(
            settings, [dataclasses.replace(r, interval_s=0) for r in optional], ch, client
        )
        lp.http = __import__("httpx").AsyncClient()
        report = await lp.tick()
        await lp.http.aclose()
        await client.aclose()
        return report

    report = asyncio.run(scenario())
    for r in optional:
        out = report.outcomes[r.name]
        assert out.status == "skipped" and out.error is None
        assert out.detail.startswith("missing tables:")
    assert receiver.calls == []


def test_named_metrics_from_valkey(valkey, vk) -> None:
    settings = alert_settings()
    for i in range(3):
        vk.xadd(dlq_stream("otlp"), {"reason": "bad protobuf", "n": i})
    for _ in range(7):
        vk.xadd(in_stream("agent"), {"p": "[]"})

    async def scenario():
        client = aioredis.Redis.from_url(valkey.url)
        await publish_counters(client, "replica-a")
        ACCEPTED.labels("sentry").inc(90)
        REJECTED.labels("sentry", "rate_limited").inc(10)
        await publish_counters(client, "replica-a")
        lp = AlertLoop(settings, [], None, client)
        out = {
            name: await lp.evaluate_rule(RULES[name], time.time(), set())
            for name in ("dlq_growing", "stream_backlog_high", "ingest_rejected_ratio")
        }
        await client.aclose()
        return out

    out = asyncio.run(scenario())
    dlq = {lb["kind"]: v for lb, v in out["dlq_growing"].samples}
    assert dlq["otlp"] == 3 and dlq["agent"] == 0
    assert [lb["kind"] for lb, _ in out["dlq_growing"].breaching] == ["otlp"]
    backlog = {lb["kind"]: v for lb, v in out["stream_backlog_high"].samples}
    assert backlog["agent"] == 7 and not out["stream_backlog_high"].breaching
    ratio = {lb["kind"]: v for lb, v in out["ingest_rejected_ratio"].samples}
    assert ratio["sentry"] == pytest.approx(0.1)
    assert [lb["kind"] for lb, _ in out["ingest_rejected_ratio"].breaching] == ["sentry"]


@pytest.mark.slow
def test_two_evaluator_processes_send_one_notification(valkey, vk, receiver, tmp_path) -> None:
    (tmp_path / "dlq.yaml").write_text(
        "group: pipeline\ninterval: 1s\nrules:\n"
        "  - name: dlq_growing\n    title: DLQ growing\n    metric: dlq_growth\n"
        "    threshold: {op: gt, value: 0}\n    window: 10m\n"
    )
    vk.xadd(dlq_stream("replay"), {"reason": "poison"})
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "alert_runner.py"),
                valkey.url,
                receiver.url,
                str(tmp_path),
                "4",
            ],
            env=weftline_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    hooks = receiver.on("/hook")
    assert len(hooks) == 1
    assert hooks[0]["alerts"][0]["labels"]["kind"] == "replay"
    assert len(vk.xrange("wl:{alerts}:counters")) >= 2 * 10  # both processes ticked


def test_app_lifespan_runs_the_alert_loop(settings, valkey, ch, serve) -> None:
    srv = serve(settings, valkey.url, ch=ch, run_workers=False)
    loop = srv.runtime.alerts
    assert loop is not None
    wait_for(lambda: loop.leader)
    ingest_only = AlertLoop(settings, [], None, loop.client)
    assert not ingest_only.can_lead  # without ClickHouse it never takes the lead
    off = serve(
        settings.model_copy(update={"alerts_enabled": False}), valkey.url, ch=ch, run_workers=False
    )
    assert off.runtime.alerts is None


def test_cli_check_compile_and_evaluate_once(tmp_path: Path) -> None:
    out = run_weftline("alerts", "check")
    assert "agent_heartbeat_stale" in out and "0 problems" in out
    compiled = run_weftline("alerts", "compile", "--out", "-")
    assert "uid: weftline-agent_heartbeat_stale" in compiled
    built = tmp_path / "g"
    run_weftline("grafana", "build", "--out", str(built))
    assert (built / "dashboards" / "weftline-agents.json").exists()
    data = str(tmp_path / "data")
    run_weftline("migrate", "--data-dir", data)
    out = run_weftline("alerts", "evaluate-once", "--data-dir", data)
    lines = {line.split()[0]: line for line in out.splitlines() if line and line[0] != " "}
    assert "0 series, 0 over threshold" in lines["agent_heartbeat_stale"]
    for name in ("error_rate_spike", "new_issue_in_production", "web_vitals_p95_budget"):
        assert "0 series, 0 over threshold" in lines[name], lines[name]
    assert "skipped: named metrics live in Valkey" in lines["dlq_growing"]
