"""A new user's first hour: ops commands against the running server, one-line errors, a
consistent CLI. One `weftline up` serves the tests that need a running server."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, wait_for, weftline_cmd, weftline_env
from tests.test_cli_up import start_up
from weftline.admin import NotReadOnly, bounded_sql, one_line_error
from weftline.cli import build_parser
from weftline.embedded import free_port

pytestmark = pytest.mark.slow


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 90):
    return subprocess.run(
        weftline_cmd(*args),
        env=env or weftline_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("weftline: ") and "Traceback" not in err
    return lines[0]


# ---- pure: what the admin endpoint lets through ---------------------------------------


def test_bounded_sql_wraps_reads_and_refuses_the_rest():
    sql, offset = bounded_sql("SELECT ';' AS a -- ; not the end\n;", 10, 5)
    assert sql.startswith("SELECT * FROM (\nSELECT ';'") and "LIMIT 11" in sql
    assert "readonly = 1" in sql and "max_execution_time = 5" in sql and offset == 16
    assert bounded_sql("/* c */ (WITH 1 AS x SELECT x)", 1, 1)[0].startswith("SELECT * FROM")
    assert bounded_sql("show tables", 1, 1)[0].startswith("show tables\nSETTINGS readonly")
    for bad in ("DROP TABLE spans", "SELECT 1; DROP TABLE spans", "INSERT INTO t VALUES (1)"):
        with pytest.raises(NotReadOnly):
            bounded_sql(bad, 1, 1)
    # A `)` in the text cannot close the wrapper and smuggle a second statement in.
    with pytest.raises(NotReadOnly):
        bounded_sql("SELECT 1) ; DROP TABLE spans; SELECT (1", 1, 1)
    err = one_line_error(
        Exception(
            "Code: 62. DB::Exception: Syntax error: failed at position 37 (spans) "
            "(line 2, col 21): spans\nStack trace: …"
        ),
        16,
    )
    assert err == "Syntax error: failed at position 21 (spans) (line 1, col 21): spans"


# ---- one `weftline up` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("firsthour")
    data, port, log = tmp / "data", free_port(), tmp / "up.log"
    proc = start_up(data, port, log)
    text = log.read_text()
    key = re.search(r"ingest key\s+([0-9a-f]{32})\b", text).group(1)
    token = re.search(r"query token\s+(\S+)", text).group(1)
    url = f"http://127.0.0.1:{port}"
    r = httpx.post(
        f"{url}/api/v1/events",
        headers={"x-weftline-key": key},
        json=[{"type": "agent_state", "agent_id": f"a{i}", "status": "busy"} for i in range(3)],
    )
    assert r.status_code == 202
    auth = {"authorization": f"Bearer {token}"}
    wait_for(lambda: len(httpx.get(f"{url}/api/v1/agents", headers=auth).json()["agents"]) == 3)
    yield {"data": data, "port": port, "url": url, "token": token, "log": log, "tmp": tmp}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(40) == 0
    # Ctrl-C: a clean stop, no warnings (the workers finish before Valkey stops).
    after = log.read_text().split("Ctrl-C stops everything.")[1]
    assert " WARNING " not in after and "Traceback" not in after, after


def test_query_asks_the_running_server_read_only_and_bounded(server):
    d = str(server["data"])
    out = run("query", "--data-dir", d, "SELECT count() AS n FROM agent_events FINAL")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"n": 3}'  # default database: no `weftline.` needed
    table = run("query", "--data-dir", d, "--format", "table", "SHOW TABLES")
    assert table.stdout.splitlines()[0] == "NAME" and "spans" in table.stdout.split()
    bounded = run("query", "--data-dir", d, "--max-rows", "2", "SELECT number FROM numbers(10)")
    assert bounded.returncode == 0 and len(bounded.stdout.splitlines()) == 2
    assert "stopped at 2 rows" in one_line(bounded.stderr)
    for sql in ("DROP TABLE agent_events", "SELECT * FROM file('/etc/hostname', 'LineAsString')"):
        refused = run("query", "--data-dir", d, sql)
        assert refused.returncode in (1, 2)
        assert "read-only" in one_line(refused.stderr) or "readonly" in refused.stderr
    still = run("query", "--data-dir", d, "SELECT count() AS n FROM agent_events FINAL")
    assert still.stdout.strip() == '{"n": 3}'


def test_sql_typo_is_one_line_with_the_users_position(server):
    out = run("query", "--data-dir", str(server["data"]), "SELECT count() FORM spans")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert "query failed: Syntax error" in line and "(line 1, col 21)" in line


def test_admin_endpoint_wants_the_admin_token(server):
    url = server["url"] + "/api/v1/admin/query"
    assert httpx.post(url, json={"sql": "SELECT 1"}).status_code == 401
    project = {"authorization": f"Bearer {server['token']}"}  # a project's token is not enough
    assert httpx.post(url, json={"sql": "SELECT 1"}, headers=project).status_code == 403
    admin = (server["data"] / "admin-token").read_text().strip()
    assert (server["data"] / "admin-token").stat().st_mode & 0o077 == 0
    ok = httpx.post(
        url, json={"sql": "SELECT 1 AS x"}, headers={"authorization": f"Bearer {admin}"}
    )
    assert ok.json()["rows"] == [{"x": 1}]


def test_alerts_and_grafana_check_run_against_the_running_server(server):
    d = str(server["data"])
    out = run("alerts", "evaluate-once", "--data-dir", d)
    assert out.returncode == 0, out.stderr
    assert f"on the server at {server['url']}" in out.stdout
    assert "skipped" not in out.stdout and "UNKNOWN_TABLE" not in out.stdout
    # Named-metric rules read the embedded Valkey: one series per stream kind.
    assert re.search(r"stream_backlog_high\s+4 series", out.stdout), out.stdout
    out = run("grafana", "check", "--data-dir", d)
    assert f"on the server at {server['url']}" in out.stdout
    assert "UNKNOWN_TABLE" not in out.stdout + out.stderr
    assert "in use by" not in out.stderr
    assert out.returncode == 0, out.stderr  # every panel and variable runs, data or not
    # --json on the read commands: the same results, machine-readable.
    evaluated = json.loads(run("alerts", "evaluate-once", "--data-dir", d, "--json").stdout)
    by_rule = {r["rule"]: r for r in evaluated}
    assert by_rule["stream_backlog_high"]["series"] == 4
    assert all(r["status"] == "ok" for r in evaluated)
    checked = json.loads(run("grafana", "check", "--data-dir", d, "--json").stdout)
    assert checked["problems"] == [] and len(checked["panels"]) > 50
    rules = json.loads(run("alerts", "check", "--json").stdout)
    assert {"rule", "severity", "problem"} <= set(rules[0])


def test_broken_pipe_is_quiet(server):
    cmd = " ".join(weftline_cmd("query", "--data-dir", str(server["data"]), "--max-rows", "50000"))
    out = subprocess.run(
        f"{cmd} 'SELECT number FROM numbers(50000)' | head -n 1",
        shell=True,
        env=weftline_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout == '{"number": 0}\n'
    assert out.stderr == "", out.stderr


def test_port_in_use_is_found_before_anything_starts(server, tmp_path):
    out = run("up", "--data-dir", str(tmp_path / "other"), "--port", str(server["port"]))
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert f"127.0.0.1:{server['port']} is already in use" in line and "--port" in line
    assert "Valkey" not in out.stdout and not (tmp_path / "other" / "valkey").exists()


# ---- without a running server ----------------------------------------------------------


def test_no_server_and_no_data_folder_says_so_and_creates_nothing(tmp_path):
    for args in (
        ("query", "SELECT 1"),
        ("alerts", "evaluate-once"),
        ("grafana", "check"),
    ):
        out = run(*args, "--data-dir", str(tmp_path / "nothing"))
        assert out.returncode == 2, out
        assert "no Weftline running and no data in" in one_line(out.stderr)
    assert not (tmp_path / "nothing").exists()
    out = run("query", "SELECT 1", cwd=tmp_path)  # the default ./weftline-data
    assert out.returncode == 2 and not (tmp_path / "weftline-data").exists()


def test_stopped_folder_is_read_directly(tmp_path):
    d = str(tmp_path / "data")
    assert run("migrate", "--data-dir", d).returncode == 0
    out = run("query", "--data-dir", d, "SELECT count() AS n FROM spans")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"n": 0}'


def test_bad_config_values_are_one_line(tmp_path):
    cases = {
        'port = "x"\n': "port: Input should be a valid integer",
        "port = \n": "is not valid TOML",
        '[[projects]]\nid = 1\nname = "x"\npublic_key = "nothex"\nquery_token = "0123456789abcdef"\n':  # noqa: E501
        ("projects.0.public_key: Value error, public_key must be 32 lowercase hex"),
    }
    for i, (text, want) in enumerate(cases.items()):
        cfg = tmp_path / f"c{i}.toml"
        cfg.write_text(text)
        out = run("up", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
        assert out.returncode == 2
        assert want in one_line(out.stderr)
    out = run("up", "--config", str(tmp_path / "missing.toml"))
    assert "not found" in one_line(out.stderr)
    debug = run("up", "--config", str(tmp_path / "c0.toml"), "--debug")
    assert "Traceback" in debug.stderr  # --debug: the traceback


def test_unreachable_clickhouse_in_migrate(tmp_path):
    env = weftline_env(CLICKHOUSE_URL=f"http://127.0.0.1:{free_port()}")
    out = run("migrate", env=env, cwd=tmp_path)
    assert out.returncode == 3
    line = one_line(out.stderr)
    assert "cannot reach ClickHouse at http://127.0.0.1:" in line
    assert "Connection refused" in line and "CLICKHOUSE_URL" in line


# ---- the CLI's shape -------------------------------------------------------------------


def test_version_help_and_descriptions():
    assert run("--version").stdout.strip().startswith("weftline 0.")
    top = run("--help").stdout
    assert "exit codes: 0 ok; 1" in " ".join(top.split())
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    parsers = list(sub.choices.items())
    while parsers:
        name, p = parsers.pop()
        assert p.description, f"`weftline {name}` has no description"
        for action in p._actions:
            assert action.help, f"`weftline {name} {action.option_strings}` has no help"
            if isinstance(action.choices, dict):  # nested subcommands (sourcemaps)
                parsers += [(f"{name} {n}", q) for n, q in action.choices.items()]
    for name in ("session", "trace", "issues"):
        text = " ".join(sub.choices[name].format_help().split())
        assert "address to listen on" not in text
        assert "--url URL" in text and "--token TOKEN" in text and "--json" in text
        assert "host of the running Weftline" in text


def test_read_commands_print_tables_with_headers_or_json(server):
    client = ["--url", server["url"], f"--token={server['token']}"]
    issues = run("issues", *client)
    assert issues.returncode == 0, issues.stderr
    assert issues.stdout.split()[:3] == ["COUNT", "STATUS", "FLAG"]
    assert "\033[" not in issues.stdout  # no colour when stdout is not a terminal
    assert run("issues", *client, "--json").stdout.strip().startswith("{")
    listed = run("sourcemaps", "list", *client)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:3] == ["RELEASE", "KIND", "URL"]
    assert listed.stdout.strip().endswith("0 files")
    assert run("sourcemaps", "list", *client, "--json").stdout.strip() == "[]"
    wrong = run("issues", "--url", server["url"], "--token=" + "0" * 40)
    assert wrong.returncode == 2 and "pass --token TOKEN" in one_line(wrong.stderr)
    gone = run("issues", "--url", f"http://127.0.0.1:{free_port()}", *client[2:])
    assert gone.returncode == 3 and "cannot reach Weftline" in one_line(gone.stderr)


# ---- operable: metrics of the API and of a worker process, access log ------------------


def test_worker_metrics_http_histogram_and_access_log(valkey, tmp_path):
    env = weftline_env(VALKEY_URL=valkey.url)
    api_port, metrics_port = free_port(), free_port()
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    cfg = tmp_path / "w.toml"
    key, token = "ab" * 16, "cd" * 20
    cfg.write_text(
        f'[[projects]]\nid = 1\nname = "p"\npublic_key = "{key}"\nquery_token = "{token}"\n'
    )
    common = ["--config", str(cfg), "--data-dir", str(tmp_path / "data")]
    api = subprocess.Popen(
        weftline_cmd(
            "api", *common, "--ingest-only", "--port", str(api_port), "--access-log",
            "--log-format", "json",
        ),
        env=env, cwd=REPO, stdout=api_log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        weftline_cmd("worker", *common, "--metrics-port", str(metrics_port)),
        env=env, cwd=REPO, stdout=worker_log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_for(lambda: "listening on" in api_log.read_text() or api.poll() is not None, 60)
        wait_for(lambda: "consumers" in worker_log.read_text() or worker.poll() is not None, 60)
        assert api.poll() is None and worker.poll() is None, worker_log.read_text()
        r = httpx.post(
            f"{base}/api/v1/events?key={key}",
            json={"type": "agent_state", "agent_id": "m", "status": "idle"},
            headers={"x-request-id": "req-42"},
        )
        assert r.status_code == 202 and r.headers["x-request-id"] == "req-42"
        assert httpx.get(f"{base}/no/such/path").status_code == 404

        def processed():
            text = httpx.get(metrics).text
            return 'weftline_worker_processed_entries_total{kind="agent"} 1.0' in text and text

        text = wait_for(processed, 30)
        assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
        api_text = httpx.get(f"{base}/metrics").text
        assert (
            'weftline_http_request_duration_seconds_count{method="POST",'
            'route="/api/v1/events",status="202"} 1.0'
        ) in api_text
        assert 'route="unmatched",status="404"' in api_text and "/no/such/path" not in api_text
        assert "process_open_fds" in api_text
        # The pipeline dashboard's worker panels query series this process serves.
        from weftline.dashboards.grafana.check import load_dashboards

        pipeline = next(d for d in load_dashboards() if "pipeline" in d["uid"])
        exprs = " ".join(
            t.get("expr", "") for p in pipeline["panels"] for t in p.get("targets", [])
        )
        worker_series = set(re.findall(r"weftline_(?:worker|storage)_[a-z_]+", exprs))
        assert "weftline_worker_processed_entries_total" in worker_series
        for name in worker_series:  # each family is served (HELP line), samples or not
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert f"# HELP {base}" in text, name
        assert 'weftline_storage_insert_seconds_bucket{le="+Inf",table="agent_events"}' in text
        lines = [json.loads(x) for x in api_log.read_text().splitlines() if x.startswith("{")]
        access = [x for x in lines if x["logger"] == "weftline.access"]
        hit = next(x for x in access if x.get("request_id") == "req-42")
        assert hit["route"] == "/api/v1/events" and hit["status"] == 202
        assert all(key not in json.dumps(x) for x in access)  # nor is `?key=` logged
    finally:
        for p in (api, worker):
            p.send_signal(signal.SIGTERM)
        for p in (api, worker):
            p.wait(40)
