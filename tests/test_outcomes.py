"""Outcome accounting: every accepted item ends stored, deduplicated, dead-lettered or
still in the stream, counted per kind from one enum (weftline.ground.outcomes)."""

from __future__ import annotations

import asyncio

from tests.conftest import wait_for
from tests.test_agent_ingest import post, state
from tests.up_process import outcome_totals, unaccounted
from weftline.dashboards.alerting.metrics import NAMED_METRICS, publish_counters
from weftline.ground.metrics import REGISTRY
from weftline.storage.keys import GROUP, dlq_stream, in_stream
from weftline.storage.queries import count_agent_events
from weftline.storage.valkey import connect


def totals(kind: str) -> dict[str, float]:
    from prometheus_client import generate_latest

    return outcome_totals(generate_latest(REGISTRY).decode(), kind)


def in_stream_items(http, srv) -> float:
    """weftline_stream_backlog_items, refreshed by a scrape of /metrics."""
    return outcome_totals(http.get(f"{srv.url}/metrics").text, "agent")["in_stream"]


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(after) | set(before)}


def test_every_accepted_item_has_one_fate(settings, valkey, vk, ch, serve, http):
    settings.max_deliveries = 1
    # Both apps here share this process's counters: only the test publishes a snapshot
    # for the alert's metric (a real replica is one process).
    settings.alerts_enabled = False
    before = totals("agent")
    ingest = serve(settings, valkey.url, ch=ch, run_workers=False)
    p1 = settings.projects[0]
    # 3 items that a dying consumer holds until they go to the DLQ, 5 stored, a resend of
    # 2 deduplicated, one request rejected.
    assert post(http, ingest, p1, [state("dead")] * 3).status_code == 202
    [[_, [(eid, _)]]] = vk.xreadgroup(GROUP, "dies", {in_stream("agent"): ">"}, count=1)
    vk.xclaim(in_stream("agent"), GROUP, "dies-again", 0, [eid])
    assert post(http, ingest, p1, [state("ok")] * 5).status_code == 202
    for _ in range(2):
        r = post(http, ingest, p1, [state("k")] * 2, **{"idempotency-key": "once"})
        assert r.status_code == 202
    assert post(http, ingest, p1, b"not json").status_code == 400
    mid = delta(totals("agent"), before)
    mid["in_stream"] = in_stream_items(http, ingest)
    assert mid["accepted"] == 12 and mid["deduplicated"] == 2 and mid["in_stream"] == 10
    assert unaccounted(mid) == 0

    serve(settings, valkey.url, ch=ch, run_workers=True)
    wait_for(lambda: vk.xlen(in_stream("agent")) == 0 and vk.xlen(dlq_stream("agent")) == 1)
    wait_for(lambda: count_agent_events(ch, 1) == 7)
    after = delta(totals("agent"), before)
    after["in_stream"] = in_stream_items(http, ingest)
    assert after["stored"] == 7 and after["dead_lettered"] == 3 and after["in_stream"] == 0
    assert after["rejected"] == 1
    assert unaccounted(after) == 0

    async def named() -> list:
        client = connect(valkey.url)
        try:
            await publish_counters(client, "test")
            return await NAMED_METRICS["unaccounted_items"].read(client, 60)
        finally:
            await client.aclose()

    # The alert's metric says the same as /metrics: accepted − fates − in stream (over
    # this process's counters, which include earlier tests' in a whole-suite run).
    samples = {lb["kind"]: v for lb, v in asyncio.run(named())}
    full = totals("agent")
    full["in_stream"] = in_stream_items(http, ingest)
    assert samples["agent"] == unaccounted(full)
