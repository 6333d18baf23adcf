"""The real `sentry-sdk` (in its own process) against the live app: real valkey-server,
real chDB, events grouped into issues and read back through the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_project, wait_for, weftline_env
from weftline.storage import sentry_queries as q

CLIENT = Path(__file__).parent / "sentry" / "sdk_client.py"


def run_sdk(dsn: str, scenario: str, algo: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(CLIENT), dsn, scenario, algo],
        env=weftline_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def dsn_of(srv, project) -> str:
    return f"http://{project.public_key}@127.0.0.1:{srv.port}/{project.id}"


def metric(http, srv, name: str, **labels: str) -> float:
    text = http.get(srv.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("algo", ["br", "gzip"])
def test_python_sdk_events_land_grouped(algo, settings, valkey, ch, serve, http):
    srv = serve(settings, valkey.url, ch=ch)
    project = settings.projects[0]
    before = metric(http, srv, "weftline_sentry_request_encodings_total", encoding=algo)
    sent = run_sdk(dsn_of(srv, project), "basic", algo)
    assert sent["compression"] == algo
    ids = sent["ids"]
    # 4 exceptions + 1 message + 2 logging errors + 1 message inside the transaction
    wait_for(lambda: q.count_errors(ch, project.id) == 8, timeout=20)
    wait_for(lambda: q.count_rows(ch, "spans", project.id) >= 3, timeout=20)
    after = metric(http, srv, "weftline_sentry_request_encodings_total", encoding=algo)
    assert after - before >= 9  # every envelope arrived compressed with the chosen algo

    headers = {"authorization": f"Bearer {project.query_token}"}
    r = http.get(srv.url + "/api/v1/issues", params={"project_id": project.id}, headers=headers)
    assert r.status_code == 200, r.text
    issues = r.json()["issues"]
    by_title = {i["title"]: i for i in issues}

    zero = by_title["ZeroDivisionError: division by zero"]
    assert zero["count"] == 2 and zero["users"] == 1  # the same bug twice: one group
    assert zero["culprit"] == "__main__ in divide"
    assert zero["grouping_variant"] == "app"
    key = by_title["KeyError: 'missing-key-123'"]
    assert key["group_id"] != zero["group_id"] and key["count"] == 1
    # The logging integration's template groups both orders together.
    orders = [i for i in issues if i["title"].startswith("order ")]
    assert len(orders) == 1 and orders[0]["count"] == 2
    assert orders[0]["grouping_variant"] == "message"
    chained = by_title["RuntimeError: config is broken"]
    assert by_title["hello world"]["level"] == "warning"
    assert all(i["status"] == "unresolved" and not i["regressed"] for i in issues)

    # The chained exception keeps the whole chain, oldest first, with frames.
    r = http.get(srv.url + f"/api/v1/issues/{chained['group_id']}", headers=headers)
    detail = r.json()
    ev = detail["latest_event"]
    assert [e["type"] for e in ev["exceptions"]] == ["ValueError", "RuntimeError"]
    frames = ev["exceptions"][-1]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "load_config" and frames[-1]["context_line"]
    assert ev["release"] == "pyapp@1.2.3" and ev["environment"] == "test"
    assert ev["user_id"] == "42" and ev["sdk_name"].startswith("sentry.python")
    assert detail["session_ids"] == ["7733000000000001"]
    assert sum(b["count"] for b in detail["histogram"]["buckets"]) == 1

    # The error captured inside the transaction shares its trace id with the spans.
    inside = http.get(srv.url + f"/api/v1/errors/{ids['in_txn']}", headers=headers).json()
    assert inside["event"]["trace_id"] == ids["txn_trace"]
    spans = ch.query(
        f"SELECT name, op, parent_span_id, service_name, duration_ns, status_code"
        f" FROM {ch.database}.spans FINAL WHERE trace_id = {{t:String}} ORDER BY start_time",
        {"t": ids["txn_trace"]},
    )
    assert [s["name"] for s in spans] == ["nightly-job", "SELECT 1", "GET http://example.com"]
    assert [s["op"] for s in spans] == ["task", "db", "http.client"]
    assert all(s["service_name"] == "pyapp" for s in spans)
    assert spans[1]["duration_ns"] >= 10_000_000
    # Release health: the session update(s) were stored.
    wait_for(lambda: q.count_rows(ch, "sentry_sessions", project.id) >= 1)
    sess = ch.query(
        f"SELECT release, status, errors FROM {ch.database}.sentry_sessions FINAL"
        " WHERE project_id = {p:UInt32} ORDER BY timestamp",
        {"p": project.id},
    )
    assert sess[-1]["release"] == "pyapp@1.2.3" and sess[-1]["status"] == "exited"


def test_python_sdk_backs_off_on_429_and_reports_drops(tmp_path, valkey, ch, serve, http):
    from weftline.ground.config import Settings

    project = make_project(1, rate_limit=0.01)  # one request, then 100 s of 429
    settings = Settings(
        data_dir=tmp_path / "data", projects=[project], batch_max_age_ms=50, claim_idle_ms=1000
    )
    srv = serve(settings, valkey.url, ch=ch)
    # Metrics are process-wide (other tests in this process count too): compare deltas.
    rejected_before = metric(
        http, srv, "weftline_ingest_rejected_requests_total", reason="rate_limited"
    )
    discarded_before = metric(
        http, srv, "weftline_sentry_client_discarded_total", reason="ratelimit_backoff"
    )
    sent = run_sdk(dsn_of(srv, project), "ratelimit", "gzip")
    # The SDK parsed X-Sentry-Rate-Limits: errors are disabled, client reports are not.
    assert "error" in sent["disabled_until"]
    assert "internal" not in sent["disabled_until"] and "None" not in sent["disabled_until"]
    wait_for(lambda: q.count_errors(ch, project.id) == 1)
    # Error 1 got the 429; errors 2 and 3 were never sent (one request in total was
    # refused), and the SDK says so in a client report, which gets through.
    rejected = metric(http, srv, "weftline_ingest_rejected_requests_total", reason="rate_limited")
    assert rejected - rejected_before == 1
    outcomes = wait_for(
        lambda: ch.query(
            f"SELECT reason, category, sum(quantity) AS n FROM {ch.database}"
            ".sentry_client_outcomes FINAL WHERE project_id = {p:UInt32}"
            " GROUP BY reason, category",
            {"p": project.id},
        )
    )
    got = {(o["reason"], o["category"]): int(o["n"]) for o in outcomes}
    assert got == {("ratelimit_backoff", "error"): 2}
    discarded = metric(
        http, srv, "weftline_sentry_client_discarded_total", reason="ratelimit_backoff"
    )
    assert discarded - discarded_before == 2
