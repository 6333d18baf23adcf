"""The Starlette application: ingest routes, read API, operations; optionally the workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from weftline.admin import AdminApi, ensure_admin_token
from weftline.dashboards.alerting.evaluator import AlertLoop
from weftline.dashboards.alerting.metrics import publish_counters
from weftline.dashboards.alerting.rules import RULES_DIR, load_rules
from weftline.dashboards.debug.agents_api import AgentRunsApi
from weftline.dashboards.debug.agents_ui import AgentsUi
from weftline.dashboards.debug.api import ReadApi
from weftline.dashboards.debug.issues_api import IssuesApi
from weftline.dashboards.debug.live_hub import LiveHub
from weftline.dashboards.debug.sessions_api import SessionsApi
from weftline.dashboards.debug.traces_api import TracesApi
from weftline.dashboards.debug.ui import Ui
from weftline.enrich.stream_consumer import StreamConsumer
from weftline.ground.config import Settings, ensure_replay_secret
from weftline.ground.projects import Projects
from weftline.ingest import agent_events, otlp
from weftline.ingest.disk import DiskReserve
from weftline.ingest.edge import Edge
from weftline.ingest.limits import BodyLimit
from weftline.ingest.openreplay import OpenReplayIngest
from weftline.ingest.sentry import SentryIngest
from weftline.ingest.sourcemaps import SourcemapUpload
from weftline.logs import RequestMetrics
from weftline.openapi import openapi_document
from weftline.ops import Ops
from weftline.storage.clickhouse import ClickHouse, clickhouse_from_settings
from weftline.storage.keys import KINDS, in_streams
from weftline.storage.migrate import migrate
from weftline.storage.valkey import StreamProducer, connect, ensure_group
from weftline.workers import build_consumers, run_consumers

log = logging.getLogger("weftline")


@dataclass
class Runtime:
    """What a running app holds; tests reach the workers and stores through it."""

    settings: Settings
    client: aioredis.Redis
    ch: ClickHouse | None
    consumers: list[StreamConsumer] = field(default_factory=list)
    alerts: AlertLoop | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    edge: Edge | None = None
    live: LiveHub | None = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop accepting data (503 + Retry-After from now on) and wait for the appends
        already sent to Valkey to be answered."""
        if self.edge is None:
            return
        self.edge.accepting = False
        if self.live is not None:
            self.live.close_all()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.edge.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)


def forget_sourcemap_misses(runtime: Runtime, project_id: int) -> None:
    """A map just uploaded is used by this process's workers at once, not after the
    miss cache expires (other processes wait for that expiry)."""
    for c in runtime.consumers:
        sym = getattr(c.handler, "symbolicator", None)
        if sym is not None:
            sym.forget_misses(project_id)


def create_app(
    settings: Settings,
    valkey_url: str,
    *,
    run_workers: bool,
    ch: ClickHouse | None = None,
    open_storage: bool = True,
) -> Starlette:
    """`ch` given: use it and leave it open. Otherwise, with `open_storage`, open the
    configured ClickHouse at startup (and close it at shutdown)."""
    client = connect(valkey_url, cluster=settings.valkey_cluster)
    runtime = Runtime(settings, client, ch)
    projects = Projects(settings.projects)
    disk = DiskReserve.from_settings(settings)
    edge = Edge(
        settings, projects, StreamProducer(client, waitaof=settings.durability == "waitaof"), disk
    )
    read_api = ReadApi(
        projects,
        client,
        ch,
        LiveHub(
            client,
            settings.live_max_streams,
            settings.live_max_streams_per_token,
            settings.live_idle_seconds,
        ),
    )
    ui = Ui(projects, ch)
    sessions_api = SessionsApi(projects, ch)
    replay = OpenReplayIngest(edge, ensure_replay_secret(settings))
    runtime.edge = edge
    runtime.live = read_api.hub
    ops = Ops(settings, client, ch, disk)
    ops.edge = edge
    traces_api = TracesApi(projects, lambda: runtime.ch)
    ensure_admin_token(settings)
    admin_api = AdminApi(settings, lambda: runtime.ch, valkey_url)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = False
        if runtime.ch is None and open_storage:
            runtime.ch = await asyncio.to_thread(clickhouse_from_settings, settings)
            owned = True
        if runtime.ch is not None:
            await asyncio.to_thread(migrate, runtime.ch, log.info)
            read_api.ch = runtime.ch
            ui.ch = runtime.ch
            sessions_api.ch = runtime.ch
            ops.ch = runtime.ch
        for kind in KINDS:
            for stream in in_streams(kind, settings.stream_shards):
                with contextlib.suppress(Exception):  # Valkey may come up later; workers retry
                    await ensure_group(client, stream)
        task = None
        if run_workers and runtime.ch is not None:
            runtime.consumers = build_consumers(settings, runtime.ch, client)
            task = asyncio.create_task(run_consumers(runtime.consumers, runtime.stop))
        alerts_task = None
        if settings.alerts_enabled:
            rules = load_rules(settings.alerts_rules_dir or RULES_DIR)
            runtime.alerts = AlertLoop(settings, rules, runtime.ch, client)
            alerts_task = asyncio.create_task(runtime.alerts.run(runtime.stop))
        try:
            yield
        finally:
            runtime.stop.set()
            if alerts_task is not None:
                # asyncio.wait, not wait_for: a loop cancelled by Ctrl-C must not cut
                # the rest of the shutdown short.
                await asyncio.wait({alerts_task}, timeout=10)
            if task is not None:
                try:
                    await asyncio.wait_for(task, timeout=30)
                except TimeoutError:
                    log.warning("workers did not finish their batch in 30 s; it stays pending")
            if runtime.alerts is not None:
                # After the batch in hand: this process's final outcome balance.
                with contextlib.suppress(Exception):
                    await publish_counters(client, runtime.alerts.id, final=True)
            await client.aclose()
            if owned and runtime.ch is not None:
                await asyncio.to_thread(runtime.ch.close)

    routes = [
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        *admin_api.routes(),
        Route("/api/v1/events", agent_events.make_route(edge), methods=["POST", "OPTIONS"]),
        *read_api.routes(),
        *AgentRunsApi(projects, lambda: runtime.ch).routes(),
        Route("/ui", lambda request: RedirectResponse("/ui/"), methods=["GET"]),
        *ui.routes(),
        *AgentsUi(projects, client, lambda: runtime.ch).routes(),
        *sessions_api.routes(),
        *replay.routes(),
        *otlp.routes(edge),
        *traces_api.routes(),
        *SentryIngest(edge).routes(),
        *IssuesApi(projects, lambda: runtime.ch).routes(),
        *SourcemapUpload(
            projects,
            lambda: runtime.ch,
            settings.sourcemap_max_upload_bytes,
            on_stored=lambda project_id: forget_sourcemap_misses(runtime, project_id),
        ).routes(),
    ]
    # Outermost: it times every request, errors included, and tags it with a request id.
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestMetrics, access=settings.access_log),
            # Every route's body is bounded: the ingest routes by their own readers,
            # the rest (PATCH, forms, admin) here.
            Middleware(BodyLimit, limit=settings.max_api_body_bytes),
        ],
    )
    app.state.runtime = runtime
    return app
