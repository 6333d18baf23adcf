"""OTLP metrics from the unmodified OpenTelemetry metrics SDK and its OTLP/HTTP exporter,
stored in the four metric tables of a running Weftline (real valkey-server, real chDB)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.conftest import wait_for
from weftline.dashboards.grafana.check import load_dashboards, run_dashboard
from weftline.dashboards.grafana.macros import TimeRange, Variable
from weftline.ground.metrics import REGISTRY


@pytest.fixture
def app(settings, valkey, ch, serve):
    return serve(settings, valkey.url, ch=ch)


def count(ch, table: str) -> int:
    return int(ch.query(f"SELECT count() AS n FROM {ch.database}.{table} FINAL")[0]["n"])


def sdk_metrics(temporality: AggregationTemporality):
    reader = InMemoryMetricReader(
        preferred_temporality={
            Counter: temporality,
            UpDownCounter: AggregationTemporality.CUMULATIVE,
            Histogram: temporality,
        }
    )
    mp = MeterProvider(
        resource=Resource.create({"service.name": "agent-backend"}),
        metric_readers=[reader],
        views=[
            View(instrument_name="gen_ai.client.operation.duration"),
            View(
                instrument_name="latency.exp",
                aggregation=ExponentialBucketHistogramAggregation(max_size=20),
            ),
        ],
    )
    meter = mp.get_meter("genai.meter", "1.2.3")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(110, {"gen_ai.token.type": "input", "gen_ai.request.model": "test"})
    tokens.record(17, {"gen_ai.token.type": "output", "gen_ai.request.model": "test"})
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    for v in (0.2, 0.4, 1.5):
        duration.record(v, {"gen_ai.operation.name": "chat"})
    meter.create_counter("runs").add(3, {"agent": "planner"})
    meter.create_up_down_counter("queue.depth").add(-2)
    meter.create_observable_gauge(
        "cpu.usage", callbacks=[lambda _opts: [Observation(37.5, {"core": "0"})]]
    )
    exp = meter.create_histogram("latency.exp", unit="ms")
    for v in (1.0, 2.0, 4.0, 8.0, 1000.0):
        exp.record(v)
    return reader.get_metrics_data()


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_sdk_metrics_are_stored_by_type(app, settings, ch, temporality):
    key = settings.projects[0].public_key
    data = sdk_metrics(temporality)
    exporter = OTLPMetricExporter(endpoint=app.url + "/v1/metrics", headers={"x-weftline-key": key})
    labels = {"signal": "metrics", "reason": "summary data points are not stored"}
    before = REGISTRY.get_sample_value("weftline_otlp_rejected_records_total", labels) or 0
    assert exporter.export(data) == MetricExportResult.SUCCESS
    # An exporter retrying the same request: stored once.
    assert exporter.export(data) == MetricExportResult.SUCCESS
    exporter.shutdown()
    assert (
        REGISTRY.get_sample_value("weftline_otlp_rejected_records_total", labels) or 0
    ) == before

    wait_for(lambda: count(ch, "metrics_exp_histogram") == 1, timeout=20)
    wait_for(lambda: count(ch, "metrics_histogram") == 3 and count(ch, "metrics_sum") == 2)
    assert count(ch, "metrics_gauge") == 1
    db = ch.database

    tokens = ch.query(
        "SELECT attributes['gen_ai.token.type'] AS t, count, sum, min, max, bucket_counts,"
        " explicit_bounds, temporality, metric_unit, service_name, scope_name, scope_version,"
        f" resource_attributes['service.name'] AS svc FROM {db}.metrics_histogram FINAL"
        " WHERE metric_name = 'gen_ai.client.token.usage' ORDER BY t"
    )
    assert [(r["t"], r["count"], r["sum"]) for r in tokens] == [
        ("input", 1, 110),
        ("output", 1, 17),
    ]
    t = tokens[0]
    assert t["min"] == t["max"] == 110 and sum(t["bucket_counts"]) == 1
    assert len(t["bucket_counts"]) == len(t["explicit_bounds"]) + 1
    assert t["temporality"] == temporality.name.lower()
    assert (t["metric_unit"], t["service_name"], t["svc"]) == (
        "{token}",
        "agent-backend",
        "agent-backend",
    )
    assert (t["scope_name"], t["scope_version"]) == ("genai.meter", "1.2.3")

    sums = {
        r["metric_name"]: r
        for r in ch.query(
            "SELECT metric_name, value, temporality, is_monotonic, attributes"
            f" FROM {db}.metrics_sum FINAL"
        )
    }
    assert sums["runs"]["value"] == 3 and sums["runs"]["is_monotonic"] == 1
    assert sums["runs"]["attributes"] == {"agent": "planner"}
    assert sums["runs"]["temporality"] == temporality.name.lower()
    assert sums["queue.depth"]["value"] == -2 and sums["queue.depth"]["is_monotonic"] == 0
    assert sums["queue.depth"]["temporality"] == "cumulative"

    gauge = ch.query(f"SELECT value, attributes FROM {db}.metrics_gauge FINAL")[0]
    assert gauge == {"value": 37.5, "attributes": {"core": "0"}}

    e = ch.query(
        "SELECT count, sum, min, max, scale, zero_count, positive_offset, positive_bucket_counts,"
        f" negative_bucket_counts FROM {db}.metrics_exp_histogram FINAL"
    )[0]
    assert (e["count"], e["sum"], e["min"], e["max"]) == (5, 1015.0, 1.0, 1000.0)
    assert sum(e["positive_bucket_counts"]) == 5 and sum(e["negative_bucket_counts"]) == 0
    # The scale the SDK chose maps every value into max_size=20 buckets.
    assert -10 <= e["scale"] <= 20

    # A time-series read: p-less average operation duration per minute.
    per_min = ch.query(
        "SELECT toStartOfMinute(time) AS m, sum(sum) / sum(count) AS avg_s"
        f" FROM {db}.metrics_histogram FINAL WHERE metric_name = 'gen_ai.client.operation.duration'"
        " GROUP BY m"
    )
    assert len(per_min) == 1 and per_min[0]["avg_s"] == pytest.approx(0.7)

    # The agents dashboard's panel on the same metric (delta temporality only).
    dash = next(d for d in load_dashboards() if d["uid"] == "weftline-agents")
    rng = TimeRange.last(3600, now=datetime.now(UTC) + timedelta(seconds=5))
    res = next(
        r
        for r in run_dashboard(dash, ch, rng, {"db": Variable([ch.database])})
        if r.title == "gen_ai.client.token.usage (OTLP metric)"
    )
    assert res.error is None, res.error
    got = {r["token_type_model"]: r["tokens"] for r in res.rows}
    if temporality == AggregationTemporality.DELTA:
        assert got == {"input · test": 110, "output · test": 17}
    else:
        assert got == {}


def test_only_points_that_cannot_be_stored_are_rejected(app, settings, ch, http):
    """OTLP/JSON with a good gauge point, a summary, a histogram whose buckets do not match
    its bounds, and a point without a time: 1 stored, 3 in partial_success with reasons."""
    t = str(time.time_ns())  # within the retention: older rows are dropped on arrival
    body = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]
                },
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "ok.gauge",
                                "gauge": {"dataPoints": [{"timeUnixNano": t, "asInt": "7"}]},
                            },
                            {
                                "name": "old.summary",
                                "summary": {"dataPoints": [{"timeUnixNano": t, "count": "1"}]},
                            },
                            {
                                "name": "bad.hist",
                                "histogram": {
                                    "aggregationTemporality": 2,
                                    "dataPoints": [
                                        {
                                            "timeUnixNano": t,
                                            "count": "2",
                                            "bucketCounts": ["1", "1"],
                                            "explicitBounds": [1, 2],
                                        },
                                        {"count": "1"},
                                    ],
                                },
                            },
                        ]
                    }
                ],
            }
        ]
    }
    key = settings.projects[0].public_key
    r = http.post(
        app.url + "/v1/metrics",
        content=orjson.dumps(body),
        headers={"content-type": "application/json", "x-weftline-key": key},
    )
    assert r.status_code == 200
    ps = r.json()["partialSuccess"]
    assert ps["rejectedDataPoints"] == "3"
    msg = ps["errorMessage"]
    for reason in (
        "summary data points are not stored",
        "histogram bucket counts do not match its bounds",
        "invalid timestamp",
    ):
        assert reason in msg
    wait_for(lambda: count(ch, "metrics_gauge") == 1)
    assert ch.query(f"SELECT value FROM {ch.database}.metrics_gauge FINAL")[0]["value"] == 7
    assert count(ch, "metrics_histogram") == 0
