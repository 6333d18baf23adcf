"""`weftline` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from weftline import __version__
from weftline.config import Settings, ensure_demo_project, load_settings

log = logging.getLogger("weftline")


def _common(p: argparse.ArgumentParser, http: bool = True) -> None:
    p.add_argument("--config", "-c", help="TOML configuration file (or WEFTLINE_CONFIG)")
    p.add_argument("--data-dir", help="data folder (default: ./weftline-data)")
    if http:
        p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
        p.add_argument("--port", "-p", type=int, help="port to listen on (default: 8700)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def _banner(settings: Settings, mode: str) -> str:
    url = f"http://{settings.host}:{settings.port}"
    lines = [f"Weftline {__version__} ({mode}) listening on {url}"]
    for p in settings.projects:
        lines += [
            f"  project {p.id} ({p.name})",
            f"    ingest key   {p.public_key}",
            f"    query token  {p.query_token}",
            f"    agent events POST {url}/api/v1/events  (header X-Weftline-Key)",
        ]
    lines.append(f"  data folder  {Path(settings.data_dir).resolve()}")
    lines.append("  Ctrl-C stops everything.")
    return "\n".join(lines)


def _serve(app, settings: Settings, on_started=None) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        serve = asyncio.create_task(server.serve())
        while not server.started and not serve.done():
            await asyncio.sleep(0.05)
        if server.started and on_started:
            on_started()
        await serve

    asyncio.run(main())
    if not server.started:
        raise SystemExit(1)


def cmd_up(args: argparse.Namespace) -> int:
    from weftline.app import create_app
    from weftline.embedded import EmbeddedValkey

    settings = _settings(args)
    ensure_demo_project(settings)
    valkey = None
    valkey_url = settings.valkey_url
    if valkey_url is None:
        valkey = EmbeddedValkey(Path(settings.data_dir) / "valkey")
        print("starting embedded Valkey …", flush=True)
        valkey_url = valkey.start()
    try:
        app = create_app(settings, valkey_url, run_workers=True)
        mode = "embedded" if valkey else "server"
        _serve(app, settings, lambda: print(_banner(settings, mode), flush=True))
    finally:
        if valkey is not None:
            print("stopping embedded Valkey …", flush=True)
            valkey.stop()
    return 0


def _need_valkey(settings: Settings, what: str) -> str:
    if settings.valkey_url is None:
        print(
            f"weftline {what} needs VALKEY_URL (server mode). For everything in one process "
            "on this machine, run `weftline up`.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return settings.valkey_url


def cmd_api(args: argparse.Namespace) -> int:
    from weftline.app import create_app

    settings = _settings(args)
    url = _need_valkey(settings, "api")
    app = create_app(settings, url, run_workers=False, open_storage=not args.ingest_only)
    _serve(app, settings, lambda: print(_banner(settings, "api"), flush=True))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from storage.clickhouse import open_clickhouse
    from storage.migrate import migrate
    from storage.valkey import connect
    from weftline.workers import build_consumers, run_consumers

    settings = _settings(args)
    url = _need_valkey(settings, "worker")
    ch = open_clickhouse(
        settings.clickhouse_url,
        settings.data_dir,
        settings.clickhouse_database,
        cluster=settings.clickhouse_cluster,
    )
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
            await run_consumers(consumers, stop)
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        ch.close()
    print("weftline worker: stopped after finishing its batch", flush=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from storage.clickhouse import open_clickhouse
    from storage.migrate import migrate

    settings = _settings(args)
    ch = open_clickhouse(
        settings.clickhouse_url,
        settings.data_dir,
        settings.clickhouse_database,
        cluster=settings.clickhouse_cluster,
    )
    try:
        applied = migrate(ch, lambda m: print(m, flush=True))
    finally:
        ch.close()
    print(f"{len(applied)} migrations applied" if applied else "schema is up to date")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from storage.clickhouse import open_clickhouse

    settings = _settings(args)
    ch = open_clickhouse(
        settings.clickhouse_url,
        settings.data_dir,
        settings.clickhouse_database,
        cluster=settings.clickhouse_cluster,
    )
    try:
        for row in ch.query(args.sql):
            print(json.dumps(row, default=str))
    finally:
        ch.close()
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"weftline {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weftline",
        description="Self-hosted observability for web apps with AI agents: OpenReplay, "
        "Sentry, OTLP and agent events through Valkey streams into ClickHouse.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="apply ClickHouse schema migrations")
    _common(p, http=False)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "query",
        help="run one SQL query against the configured ClickHouse (JSON lines out)",
        description="For embedded mode while Weftline is stopped (chDB allows one process "
        "per data folder).",
    )
    _common(p, http=False)
    p.add_argument("sql")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a clear line, not a traceback, for what users can fix
        from storage.clickhouse import DataFolderBusy

        if isinstance(e, DataFolderBusy | NotImplementedError | FileNotFoundError):
            print(f"weftline: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
