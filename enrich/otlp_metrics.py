"""OTLP metrics: a parsed ExportMetricsServiceRequest → rows for the four metric tables
(gauge, sum, histogram, exponential histogram). Pure.

The points the edge refused (weftline.ground.otlp_wire.metric_point_problem) are skipped
here by the same check. Each point's id hashes its content with its resource, scope and
metric, plus its occurrence among identical points of the request (as `logs_of` does):
an exporter retrying the same request produces the same ids, identical points sent
together stay distinct.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from weftline.enrich.otlp_decode import UNKNOWN_SERVICE, Decoded, attributes_map, record_uid
from weftline.ground.otlp_wire import metric_point_problem, parse_request
from weftline.ground.times import ch_ns

TABLES = {
    "gauge": "metrics_gauge",
    "sum": "metrics_sum",
    "histogram": "metrics_histogram",
    "exponential_histogram": "metrics_exp_histogram",
}
# AggregationTemporality: 0 unspecified, 1 delta, 2 cumulative.
TEMPORALITY = ("unspecified", "delta", "cumulative")


def _temporality(n: int) -> str:
    return TEMPORALITY[n] if 0 <= n < len(TEMPORALITY) else "unspecified"


def _opt(point: Any, name: str) -> float | None:
    return getattr(point, name) if point.HasField(name) else None


def _values(which: str, data: Any, p: Any) -> dict[str, Any]:
    if which in ("gauge", "sum"):
        v = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
        out: dict[str, Any] = {"value": v}
        if which == "sum":
            out["temporality"] = _temporality(data.aggregation_temporality)
            out["is_monotonic"] = 1 if data.is_monotonic else 0
        return out
    common = {
        "count": p.count,
        "sum": _opt(p, "sum"),
        "min": _opt(p, "min"),
        "max": _opt(p, "max"),
        "temporality": _temporality(data.aggregation_temporality),
    }
    if which == "histogram":
        return {
            **common,
            "bucket_counts": list(p.bucket_counts),
            "explicit_bounds": list(p.explicit_bounds),
        }
    return {
        **common,
        "scale": p.scale,
        "zero_count": p.zero_count,
        "zero_threshold": p.zero_threshold,
        "positive_offset": p.positive.offset,
        "positive_bucket_counts": list(p.positive.bucket_counts),
        "negative_offset": p.negative.offset,
        "negative_bucket_counts": list(p.negative.bucket_counts),
    }


def metrics_of(
    req: ExportMetricsServiceRequest, project_id: int, received: str, retention_days: int
) -> Decoded[tuple[str, dict[str, Any]]]:
    """(table, row) per storable data point, and the others counted by reason."""
    out: Decoded[tuple[str, dict[str, Any]]] = Decoded()
    seen: Counter[bytes] = Counter()
    for rm in req.resource_metrics:
        resource = attributes_map(rm.resource.attributes)
        service = resource.get("service.name") or UNKNOWN_SERVICE
        res_key = rm.resource.SerializeToString(deterministic=True)
        for sm in rm.scope_metrics:
            scope_key = sm.scope.SerializeToString(deterministic=True)
            for m in sm.metrics:
                which = m.WhichOneof("data")
                if which is None:
                    continue
                data = getattr(m, which)
                if not m.name:
                    out.problems["metric without a name"] += len(data.data_points)
                    continue
                metric_key = f"{m.name}\0{m.unit}\0{which}".encode()
                for p in data.data_points:
                    problem = metric_point_problem(which, p)
                    if problem is not None:
                        out.problems[problem] += 1
                        continue
                    uid = record_uid(
                        seen,
                        res_key,
                        scope_key,
                        metric_key,
                        p.SerializeToString(deterministic=True),
                    )
                    row = {
                        "project_id": project_id,
                        "point_uid": uid,
                        "service_name": service,
                        "metric_name": m.name,
                        "metric_description": m.description,
                        "metric_unit": m.unit,
                        "resource_attributes": resource,
                        "scope_name": sm.scope.name,
                        "scope_version": sm.scope.version,
                        "attributes": attributes_map(p.attributes),
                        # Gauges have no start time (0): ch_ns writes it as 1970-01-01,
                        # which "seconds.fraction" text of 0 would not parse as.
                        "start_time": ch_ns(p.start_time_unix_nano),
                        "time": ch_ns(p.time_unix_nano),
                        "flags": p.flags & 0xFFFFFFFF,
                        "received_at": received,
                        "retention_days": retention_days,
                        **_values(which, data, p),
                    }
                    out.records.append((TABLES[which], row))
    return out


def decode_metrics(
    body: bytes, project_id: int, received: str, retention_days: int
) -> Decoded[tuple[str, dict[str, Any]]]:
    req = parse_request("metrics", body, "protobuf")
    assert isinstance(req, ExportMetricsServiceRequest)
    return metrics_of(req, project_id, received, retention_days)
