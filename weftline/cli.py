"""`weftline` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
from pathlib import Path

from weftline import __version__
from weftline.cli_args import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_PROBLEMS,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
)
from weftline.cli_args import settings_from_args as _settings
from weftline.ground.config import Settings, ensure_demo_project
from weftline.logs import setup_logging

log = logging.getLogger("weftline")


def _common(p: argparse.ArgumentParser, http: bool = True, client: bool = False) -> None:
    """Options every command takes. `client`: the command talks to a running Weftline,
    so --host/--port say where it listens (--url wins), not where to listen."""
    p.add_argument("--config", "-c", help="TOML configuration file (or WEFTLINE_CONFIG)")
    p.add_argument("--data-dir", help="data folder (default: ./weftline-data)")
    if client:
        p.add_argument("--host", help="host of the running Weftline (default: 127.0.0.1)")
        p.add_argument("--port", "-p", type=int, help="its port (default: 8700)")
    elif http:
        p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
        p.add_argument("--port", "-p", type=int, help="port to listen on (default: 8700)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log lines shown on stderr (default: info)",
    )
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text (default) or json: one JSON object per log line",
    )
    p.add_argument("--debug", action="store_true", help="print the traceback of an error")
    if http and not client:
        p.add_argument(
            "--access-log",
            action="store_true",
            help="log every HTTP request (method, path, status, duration, request id)",
        )


def _banner(settings: Settings, mode: str) -> str:
    url = f"http://{settings.host}:{settings.port}"
    lines = [f"Weftline {__version__} ({mode}) listening on {url}"]
    for p in settings.projects:
        lines += [
            f"  project {p.id} ({p.name})",
            f"    ingest key   {p.public_key}",
            f"    query token  {p.query_token}",
            f"    Sentry DSN   http://{p.public_key}@{settings.host}:{settings.port}/{p.id}",
            f'    OpenReplay   ingestPoint: "{url}/ingest", projectKey: "{p.public_key}"',
            f"    agent events POST {url}/api/v1/events  (header X-Weftline-Key)",
            f"    OTLP/HTTP    OTEL_EXPORTER_OTLP_ENDPOINT={url}"
            f"  OTEL_EXPORTER_OTLP_HEADERS=x-weftline-key={p.public_key}",
        ]
    lines.append(f"  debugging view {url}/ui/  (log in with the query token)")
    lines.append(f"  data folder  {Path(settings.data_dir).resolve()}")
    lines.append("  Ctrl-C stops everything.")
    return "\n".join(lines)


def _serve(app, settings: Settings, on_started=None) -> None:
    import uvicorn

    from weftline.http_server import server_options

    class Server(uvicorn.Server):
        # Signals are ours: uvicorn would re-raise them after shutdown, turning a clean
        # Ctrl-C into a KeyboardInterrupt and a SIGTERM into a kill before Valkey stops.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
        **server_options(settings),
    )
    server = Server(config)

    draining: list[asyncio.Task] = []

    async def drain_then_exit() -> None:
        # Shutdown order: refuse new data (503 + Retry-After) and answer the appends in
        # flight; then uvicorn closes the connections and the lifespan lets the workers
        # finish the batch in hand; Valkey is stopped last, by the caller.
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            await runtime.drain()
        server.should_exit = True

    def on_signal() -> None:
        if draining:  # a second Ctrl-C: stop now
            server.should_exit = True
            server.force_exit = True
            return
        draining.append(asyncio.get_running_loop().create_task(drain_then_exit()))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        serve = asyncio.create_task(server.serve())
        while not server.started and not serve.done():
            await asyncio.sleep(0.05)
        if server.started and on_started:
            on_started()
        await serve

    # uvicorn picks uvloop only when it owns the loop; here the loop is ours, so ask for
    # it: the edge spends a large part of its time in the loop's socket writes and reads.
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; a bare uvicorn runs on asyncio
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    if not server.started:
        raise SystemExit(1)


def cmd_up(args: argparse.Namespace) -> int:
    from weftline.app import create_app
    from weftline.embedded import DataFolderInUse, DataFolderLock, EmbeddedValkey, port_in_use

    settings = _settings(args)
    settings.access_log = settings.access_log or args.access_log
    url = f"http://{settings.host}:{settings.port}"
    # Before anything starts or stops: a second `up` on this folder must leave the first
    # one's Valkey and chDB alone.
    lock = DataFolderLock(settings.data_dir)
    try:
        lock.acquire(url)
    except DataFolderInUse as e:
        print(f"weftline: {e}", file=sys.stderr)
        return 2
    try:
        if port_in_use(settings.host, settings.port):
            print(
                f"weftline: {settings.host}:{settings.port} is already in use; choose "
                "another with --port",
                file=sys.stderr,
            )
            return 2
        ensure_demo_project(settings)
        valkey = None
        valkey_url = settings.valkey_url
        if valkey_url is None:
            # A password made for this run: the port is on loopback, but every local user
            # could reach it (and the buffer holds what clients sent).
            valkey = EmbeddedValkey(
                Path(settings.data_dir) / "valkey", password=secrets.token_hex(24)
            )
            print("starting embedded Valkey …", flush=True)
            valkey_url = valkey.start()
            valkey.supervise()  # restarted on its AOF if it dies
        try:
            app = create_app(settings, valkey_url, run_workers=True)
            mode = "embedded" if valkey else "server"
            _serve(app, settings, lambda: print(_banner(settings, mode), flush=True))
        finally:
            if valkey is not None:
                print("stopping embedded Valkey …", flush=True)
                valkey.stop()
    finally:
        lock.release()
    return 0


def _check_port(settings: Settings) -> None:
    from weftline.embedded import port_in_use

    if port_in_use(settings.host, settings.port):
        raise CliError(
            f"{settings.host}:{settings.port} is already in use; choose another with --port"
        )


def _need_valkey(settings: Settings, what: str) -> str:
    if settings.valkey_url is None:
        raise CliError(
            f"weftline {what} needs VALKEY_URL (server mode); for everything in one process "
            "on this machine, run `weftline up`"
        )
    return settings.valkey_url


def cmd_api(args: argparse.Namespace) -> int:
    from weftline.app import create_app

    settings = _settings(args)
    settings.access_log = settings.access_log or args.access_log
    url = _need_valkey(settings, "api")
    _check_port(settings)
    app = create_app(settings, url, run_workers=False, open_storage=not args.ingest_only)
    _serve(app, settings, lambda: print(_banner(settings, "api"), flush=True))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from weftline.storage.clickhouse import clickhouse_from_settings
    from weftline.storage.migrate import migrate
    from weftline.storage.valkey import connect
    from weftline.workers import build_consumers, run_and_publish

    settings = _settings(args)
    url = _need_valkey(settings, "worker")
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        from weftline.embedded import port_in_use
        from weftline.ground.metrics import REGISTRY

        if port_in_use(args.metrics_host, args.metrics_port):
            raise CliError(
                f"{args.metrics_host}:{args.metrics_port} is already in use; choose another "
                "with --metrics-port"
            )
        # A thread of its own: the counters of this process (processed entries, inserts,
        # process_*), for Prometheus to scrape beside the API's.
        start_http_server(args.metrics_port, args.metrics_host, registry=REGISTRY)
        print(
            f"weftline worker: metrics on http://{args.metrics_host}:{args.metrics_port}/metrics",
            flush=True,
        )
    ch = clickhouse_from_settings(settings)
    migrate(ch, log.info)

    async def main() -> None:
        client = connect(url, cluster=settings.valkey_cluster)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        consumers = build_consumers(settings, ch, client)
        print(
            f"weftline worker: {len(consumers)} consumers ({', '.join(c.name for c in consumers)})",
            flush=True,
        )
        try:
            await run_and_publish(consumers, client, stop, settings.alerts_interval_seconds)
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        ch.close()
    print("weftline worker: stopped after finishing its batch", flush=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from weftline.reach import unreachable_clickhouse
    from weftline.storage.clickhouse import StorageError, clickhouse_from_settings
    from weftline.storage.migrate import migrate

    settings = _settings(args)
    try:
        ch = clickhouse_from_settings(settings)
    except StorageError as e:
        raise CliError(unreachable_clickhouse(settings, e), EXIT_UNREACHABLE) from e
    try:
        applied = migrate(ch, lambda m: print(m, flush=True))
    except StorageError as e:
        if settings.clickhouse_url and not ch.ping():
            raise CliError(unreachable_clickhouse(settings, e), EXIT_UNREACHABLE) from e
        raise CliError(f"a migration failed: {str(e).splitlines()[0][:300]}", 1) from e
    finally:
        ch.close()
    print(f"{len(applied)} migrations applied" if applied else "schema is up to date")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from weftline.admin import NotReadOnly, run_bounded
    from weftline.reach import reach_storage
    from weftline.storage.clickhouse import StorageError
    from weftline.terminal import print_table

    settings = _settings(args)
    with reach_storage(settings, args.url, args.timeout) as reached:
        try:
            if reached.remote:
                reached.ch.max_rows = args.max_rows  # type: ignore[attr-defined]
                rows = reached.ch.query(args.sql)
                truncated = reached.ch.truncated  # type: ignore[attr-defined]
            else:
                res = run_bounded(reached.ch, args.sql, None, args.max_rows, args.timeout)
                rows, truncated = res.rows, res.truncated
        except NotReadOnly as e:
            raise CliError(f"{e} (`weftline query` only reads)") from e
        except StorageError as e:
            raise CliError(f"query failed: {e}", EXIT_PROBLEMS) from e
    if args.format == "json":
        for row in rows:
            print(json.dumps(row, default=str))
    else:
        print_table(rows, color=False)
    if truncated:
        print(f"weftline: stopped at {args.max_rows} rows (--max-rows N for more)", file=sys.stderr)
    return 0


def cmd_grafana(args: argparse.Namespace) -> int:
    from weftline.dashboards.grafana.build import GRAFANA_DIR, write_files

    if args.action == "build":
        out = Path(args.out) if args.out else GRAFANA_DIR
        written = write_files(out)
        print(f"{len(written)} files written under {out}" if written else "up to date")
        return 0
    return _grafana_check(args)


def _grafana_check(args: argparse.Namespace) -> int:
    from weftline.dashboards.grafana.check import (
        exposed_series_names,
        load_dashboards,
        prometheus_problems,
        run_dashboard,
        structure_problems,
    )
    from weftline.dashboards.grafana.macros import TimeRange, Variable
    from weftline.reach import reach_storage

    settings = _settings(args)
    dashboards = load_dashboards()
    problems = structure_problems(dashboards) + prometheus_problems(
        dashboards, exposed_series_names()
    )
    results = []
    with reach_storage(settings, args.url) as reached:
        ch = reached.ch
        print(
            f"running every panel's query on {reached.where}",
            file=sys.stderr if args.json else sys.stdout,
        )
        rng = TimeRange.last(args.hours * 3600)
        for d in dashboards:
            for r in run_dashboard(d, ch, rng, {"db": Variable([ch.database])}):
                status = f"ERROR {r.error}" if r.error else f"{len(r.rows)} rows"
                results.append(
                    {"dashboard": d["uid"], "panel": r.title, "rows": len(r.rows), "error": r.error}
                )
                if not args.json:
                    print(f"{d['uid']:<20} {r.title[:50]:<50} {status}")
                if r.error:
                    problems.append(f"{d['uid']}/{r.title}: {r.error}")
    if args.json:
        print(json.dumps({"panels": results, "problems": problems}, indent=2))
        return 1 if problems else 0
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from weftline.dashboards.alerting import grafana
    from weftline.dashboards.alerting.rules import RULES_DIR, load_rules, migrated_tables

    settings = _settings(args)
    rules = load_rules(Path(args.rules) if args.rules else settings.alerts_rules_dir or RULES_DIR)
    if args.action == "check":
        tables = migrated_tables()
        bad = 0
        report = []
        for r in rules:
            missing = [t for t in r.tables if t not in tables]
            note = ""
            if missing:
                note = f"  (waits for tables: {', '.join(missing)})"
                if not r.optional:
                    note = f"  ERROR: tables not created by any migration: {', '.join(missing)}"
                    bad += 1
            source = f"sql on {', '.join(r.tables)}" if r.sql else f"metric {r.metric}"
            report.append(
                {
                    "rule": r.name,
                    "severity": r.severity,
                    "tables": list(r.tables),
                    "metric": r.metric,
                    "missing_tables": missing,
                    "problem": bool(missing and not r.optional),
                }
            )
            if not args.json:
                print(f"{r.name:<26} {r.severity:<8} {source}{note}")
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"{len(rules)} rules, {bad} problems")
        return 1 if bad else 0
    if args.action == "compile":
        if args.out == "-":
            print(grafana.render(rules, settings), end="")
        else:
            out = Path(args.out) if args.out else grafana.ALERTING_FILE
            path = grafana.write(rules, settings, out)
            _, left_out = grafana.compile_rules(rules, settings)
            print(f"wrote {path}")
            if left_out:
                print(f"left out (tables not migrated yet): {', '.join(left_out)}")
        return 0
    return asyncio.run(_alerts_evaluate(settings, rules, args.url, args.json))


async def _alerts_evaluate(settings: Settings, rules, url: str | None, as_json: bool) -> int:
    """Evaluate every rule once and print the result; changes no state, sends nothing."""
    import time

    from weftline.dashboards.alerting.evaluator import AlertLoop
    from weftline.reach import reach_storage
    from weftline.storage.valkey import connect

    report: list[dict] = []
    with reach_storage(settings, url) as reached:
        print(
            f"evaluating {len(rules)} rules on {reached.where}",
            file=sys.stderr if as_json else sys.stdout,
        )
        # Named metrics are read from Valkey: the running server's (embedded) or VALKEY_URL.
        vk = reached.valkey_url
        client = connect(vk, cluster=settings.valkey_cluster) if vk else None
        try:
            loop = AlertLoop(settings, rules, reached.ch, client or connect("redis://127.0.0.1:1"))
            tables = await loop.existing_tables()
            now = time.time()
            for rule in rules:
                if rule.metric and client is None:
                    why = (
                        "named metrics live in Valkey, and no Weftline runs here (start "
                        "`weftline up`, or set VALKEY_URL)"
                    )
                    report.append({"rule": rule.name, "status": "skipped", "detail": why})
                    if not as_json:
                        print(f"{rule.name:<26} skipped: {why}")
                    continue
                out = await loop.evaluate_rule(rule, now, tables)
                report.append(
                    {
                        "rule": rule.name,
                        "status": out.status,
                        "detail": out.error or out.detail or None,
                        "series": len(out.samples),
                        "breaching": [{"labels": lb, "value": v} for lb, v in out.breaching],
                    }
                )
                if as_json:
                    continue
                if out.status == "ok":
                    line = f"{len(out.samples)} series, {len(out.breaching)} over threshold"
                    for labels, value in out.breaching[:5]:
                        line += f"\n    {value:.4g} {labels}"
                else:
                    line = f"{out.status}: {out.error or out.detail}"
                print(f"{rule.name:<26} {line}")
        finally:
            if client is not None:
                await client.aclose()
    if as_json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"weftline {__version__}")
    return 0


OPS_WHERE = (
    "While Weftline runs on the data folder, this asks it (an authenticated, read-only admin "
    "endpoint, bounded in rows and time); with nothing running, it reads the folder itself; "
    "in server mode, CLICKHOUSE_URL. It never creates a database."
)


def _ops_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        help="a running Weftline to ask (default: the one running on --data-dir, if any); "
        "its admin token comes from WEFTLINE_ADMIN_TOKEN or <data_dir>/admin-token",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weftline",
        description="Self-hosted observability for web apps with AI agents: OpenReplay, "
        "Sentry, OTLP and agent events through Valkey streams into ClickHouse.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"weftline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up",
        help="run everything in one process (embedded Valkey and chDB unless URLs are set)",
        description="Start Valkey (embedded, AOF in the data folder), chDB, the API and the "
        "workers. Prints the URL and the demo project's keys. Ctrl-C stops everything; "
        "data is kept for the next start.",
    )
    _common(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "api",
        help="run the HTTP API only (server mode: VALKEY_URL, CLICKHOUSE_URL)",
        description="Ingest edge and read API without workers. Scale out by running several.",
    )
    _common(p)
    p.add_argument(
        "--ingest-only",
        action="store_true",
        help="do not open ClickHouse: ingest works, read endpoints answer 503",
    )
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "worker",
        help="run the stream workers only (server mode: VALKEY_URL)",
        description="Consume the Valkey streams into ClickHouse. Any number may run; SIGTERM "
        "finishes the batch in hand. Embedded chDB allows one worker per data folder.",
    )
    _common(p, http=False)
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics of this worker on this port (default: not served)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "migrate",
        help="apply ClickHouse schema migrations",
        description="Apply the numbered migrations (storage/migrations/) that the configured "
        "ClickHouse has not seen; `weftline up` and `weftline api` do this on every start. "
        "Server mode: run once before the API and workers.",
    )
    _common(p, http=False)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "query",
        help="run one read-only SQL query (SELECT, SHOW, DESCRIBE) on Weftline's database",
        description="Run one SELECT/WITH/SHOW/DESCRIBE/EXISTS statement; unqualified tables "
        "are Weftline's database (`SELECT count() FROM spans`). " + OPS_WHERE,
    )
    _common(p, http=False)
    _ops_url(p)
    p.add_argument("sql", help="the statement (quote it for the shell)")
    p.add_argument(
        "--format",
        choices=["json", "table"],
        default="json",
        help="json: one JSON object per row (default); table: columns with a header",
    )
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    p.add_argument("--max-rows", type=int, default=1000, help="rows at most (default 1000)")
    p.add_argument(
        "--timeout", type=float, default=30, help="seconds the query may take (default 30)"
    )
    p.set_defaults(func=cmd_query)

    p = sub.add_parser(
        "grafana",
        help="build or check the Grafana provisioning (dashboards/grafana)",
        description="build: regenerate datasource, provider and dashboard JSON. check: "
        "validate the dashboards and run every panel query. " + OPS_WHERE,
    )
    p.add_argument("action", choices=["build", "check"], help="build or check")
    _ops_url(p)
    p.add_argument("--out", help="build: output folder (default: dashboards/grafana)")
    p.add_argument("--hours", type=float, default=6, help="check: time range (default 6)")
    p.add_argument("--json", action="store_true", help="check: print the results as JSON")
    _common(p, http=False)
    p.set_defaults(func=cmd_grafana)

    p = sub.add_parser(
        "alerts",
        help="check, compile to Grafana, or evaluate the alert rules once",
        description="check: validate the rule files. compile: write Grafana alerting "
        "provisioning. evaluate-once: run every rule now and print what breaches its "
        "threshold (no state change, no notification); named-metric rules read the running "
        "server's Valkey. " + OPS_WHERE,
    )
    p.add_argument(
        "action", choices=["check", "compile", "evaluate-once"], help="what to do (above)"
    )
    _ops_url(p)
    p.add_argument("--rules", help="folder of rule files (default: bundled rules)")
    p.add_argument("--out", help="compile: output file, or - for stdout")
    p.add_argument(
        "--json", action="store_true", help="check, evaluate-once: print the results as JSON"
    )
    _common(p, http=False)
    p.set_defaults(func=cmd_alerts)

    from weftline.terminal import add_commands

    add_commands(sub, _common)

    from weftline import sourcemaps_cli

    sourcemaps_cli.add_commands(sub, _common)

    p = sub.add_parser("version", help="print the version", description="Print the version.")
    p.set_defaults(func=cmd_version)
    return parser


def _stdout_gone() -> int:
    """`weftline … | head` closed the pipe: stop quietly, as `cat` does. Python would
    report the flush of the closed stdout at exit, so stdout points at /dev/null."""
    import os

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a killed writer


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_gone()
    except CliError as e:
        if debug:
            raise
        print(f"weftline: {e}", file=sys.stderr)
        return e.code
    except Exception as e:  # a clear line, not a traceback, for what users can fix
        from weftline.storage.clickhouse import DataFolderBusy

        if not debug and isinstance(e, DataFolderBusy | NotImplementedError):
            print(f"weftline: {e}", file=sys.stderr)
            return EXIT_USAGE
        if not debug:
            first = str(e).splitlines()[0] if str(e) else ""
            print(
                f"weftline: unexpected {type(e).__name__}: {first} (run again with --debug "
                "for the traceback, and report it)",
                file=sys.stderr,
            )
            return EXIT_PROBLEMS
        raise


if __name__ == "__main__":
    sys.exit(main())
