"""Named metrics: rule sources that are not SQL, read from Valkey by Weftline's evaluator
and compiled to PromQL (over Weftline's /metrics) for Grafana.

Ingest counters live in each API process; every process running the alert loop
appends a snapshot of its own counters to one Valkey stream, so the leader sees the
sum over all replicas, and a new leader inherits the history.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from weftline.ground.metrics import ACCEPTED, ITEMS, REJECTED
from weftline.ground.outcomes import Outcome
from weftline.storage.keys import KINDS, alert_counters_stream, dlq_stream, retired_outcomes_key
from weftline.storage.valkey import stream_stats

Sample = tuple[dict[str, str], float]
COUNTER_HISTORY_S = 6 * 3600


@dataclass(frozen=True)
class NamedMetric:
    name: str
    description: str
    promql: Callable[[str], str]  # window as a Prometheus duration → expression
    read: Callable[[aioredis.Redis, float], Awaitable[list[Sample]]]


async def _stream_field(client: aioredis.Redis, key: str) -> list[Sample]:
    stats = await stream_stats(client)
    return [({"kind": kind}, float(s[key])) for kind, s in stats.items()]


async def _backlog(client: aioredis.Redis, window_s: float) -> list[Sample]:
    return await _stream_field(client, "backlog")


async def _oldest(client: aioredis.Redis, window_s: float) -> list[Sample]:
    return await _stream_field(client, "oldest_age_seconds")


async def _dlq_growth(client: aioredis.Redis, window_s: float) -> list[Sample]:
    """Entries dead-lettered within the window: DLQ entry ids are their append times."""
    since = int((time.time() - window_s) * 1000)
    pipe = client.pipeline(transaction=False)
    for kind in KINDS:
        pipe.xrange(dlq_stream(kind), min=f"{since}-0", max="+", count=100_000)
    found = await pipe.execute()
    pairs = zip(KINDS, found, strict=True)
    return [({"kind": kind}, float(len(entries))) for kind, entries in pairs]


def local_counters() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {"accepted": {}, "rejected": {}, "unaccounted": {}}
    for key, metric in (("accepted", ACCEPTED), ("rejected", REJECTED)):
        for family in metric.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    kind = s.labels.get("kind", "")
                    out[key][kind] = out[key].get(kind, 0.0) + s.value
    # Items accepted minus those with a final fate (weftline.ground.outcomes); what is
    # left must be in the stream.
    sign = {Outcome.ACCEPTED: 1.0, Outcome.STORED: -1.0, Outcome.DEDUPLICATED: -1.0}
    sign[Outcome.DEAD_LETTERED] = -1.0
    for family in ITEMS.collect():
        for s in family.samples:
            factor = sign.get(Outcome(s.labels["outcome"]), 0.0)
            if s.name.endswith("_total") and factor:
                kind = s.labels["kind"]
                out["unaccounted"][kind] = out["unaccounted"].get(kind, 0.0) + factor * s.value
    return out


async def publish_counters(client: aioredis.Redis, replica: str, final: bool = False) -> None:
    """Append this process's ingest counters (totals since it started). `final` (a clean
    stop, after the batch in hand): its outcome balance also moves to the retired sums."""
    now_ms = int(time.time() * 1000)
    snap = {"replica": replica, "final": final, **local_counters()}
    pipe = client.pipeline(transaction=True)
    pipe.xadd(
        alert_counters_stream(),
        {"s": orjson.dumps(snap)},
        minid=str(now_ms - COUNTER_HISTORY_S * 1000),
        approximate=True,
    )
    if final:
        for kind, v in snap["unaccounted"].items():
            if v:
                pipe.hincrbyfloat(retired_outcomes_key(), kind, v)
    await pipe.execute()


def _increase(first: float, last: float) -> float:
    # A replica that restarted starts again from zero.
    return last - first if last >= first else last


async def _rejected_ratio(client: aioredis.Redis, window_s: float) -> list[Sample]:
    since = int((time.time() - window_s) * 1000)
    entries = await client.xrange(alert_counters_stream(), min=f"{since}-0", max="+")
    per_replica: dict[str, list[dict[str, Any]]] = {}
    for _id, fields in entries:
        snap = orjson.loads(fields[b"s"])
        per_replica.setdefault(snap["replica"], []).append(snap)
    accepted: dict[str, float] = {}
    rejected: dict[str, float] = {}
    for snaps in per_replica.values():
        first, last = snaps[0], snaps[-1]
        for key, acc in (("accepted", accepted), ("rejected", rejected)):
            for kind, v in last[key].items():
                acc[kind] = acc.get(kind, 0.0) + _increase(first[key].get(kind, 0.0), v)
    out: list[Sample] = []
    for kind in sorted(set(accepted) | set(rejected)):
        total = accepted.get(kind, 0.0) + rejected.get(kind, 0.0)
        if total > 0:
            out.append(({"kind": kind}, rejected.get(kind, 0.0) / total))
    return out


async def _unaccounted(client: aioredis.Redis, window_s: float) -> list[Sample]:
    """Per kind: accepted − stored − deduplicated − dead-lettered − still in the stream,
    over every process: the latest snapshot of each running one (the counters stream keeps
    six hours) plus the retired sums of those that stopped cleanly. 0 when nothing is
    lost; never positive unless something is (a process killed outright makes it negative,
    or, six hours on, a killed worker's share is forgotten)."""
    since = int((time.time() - COUNTER_HISTORY_S) * 1000)
    entries = await client.xrange(alert_counters_stream(), min=f"{since}-0", max="+")
    latest: dict[str, dict[str, Any]] = {}
    for _id, fields in entries:
        snap = orjson.loads(fields[b"s"])
        latest[snap["replica"]] = snap
    if not latest:
        return []
    left: dict[str, float] = dict.fromkeys(KINDS, 0.0)
    for snap in latest.values():
        if snap.get("final"):
            continue  # counted in the retired sums
        for kind, v in snap.get("unaccounted", {}).items():
            left[kind] = left.get(kind, 0.0) + v
    for kind, v in (await client.hgetall(retired_outcomes_key())).items():
        k = kind.decode() if isinstance(kind, bytes) else str(kind)
        left[k] = left.get(k, 0.0) + float(v)
    stats = await stream_stats(client)
    return [({"kind": k}, v - stats.get(k, {}).get("items", 0.0)) for k, v in left.items()]


def _unaccounted_promql(w: str) -> str:
    def items(outcome: str) -> str:
        return f'sum by (kind) (weftline_items_total{{outcome="{outcome}"}})'

    fates = "|".join((Outcome.STORED, Outcome.DEDUPLICATED, Outcome.DEAD_LETTERED))
    return (
        f"{items(Outcome.ACCEPTED)} - "
        f'sum by (kind) (weftline_items_total{{outcome=~"{fates}"}}) - '
        "max by (kind) (weftline_stream_backlog_items)"
    )


def _ratio_promql(w: str) -> str:
    rej = f"sum by (kind) (increase(weftline_ingest_rejected_requests_total[{w}]))"
    acc = f"sum by (kind) (increase(weftline_ingest_accepted_requests_total[{w}]))"
    return f"{rej} / ({acc} + {rej})"


NAMED_METRICS: dict[str, NamedMetric] = {
    m.name: m
    for m in (
        NamedMetric(
            "stream_backlog",
            "entries accepted and not yet stored, per stream (kind)",
            lambda w: "max by (kind) (weftline_stream_backlog_entries)",
            _backlog,
        ),
        NamedMetric(
            "stream_oldest_age_seconds",
            "age of the oldest entry still in each stream",
            lambda w: "max by (kind) (weftline_stream_oldest_entry_age_seconds)",
            _oldest,
        ),
        NamedMetric(
            "dlq_growth",
            "entries dead-lettered within the window, per stream",
            lambda w: f"sum by (kind) (increase(weftline_worker_dead_lettered_entries_total[{w}]))",
            _dlq_growth,
        ),
        NamedMetric(
            "unaccounted_items",
            "accepted items neither stored, deduplicated, dead-lettered nor in the stream",
            _unaccounted_promql,
            _unaccounted,
        ),
        NamedMetric(
            "ingest_rejected_ratio",
            "rejected / (accepted + rejected) ingest requests within the window, per kind",
            _ratio_promql,
            _rejected_ratio,
        ),
    )
}
