"""Webhook payloads for a notification group: generic JSON, Alertmanager's webhook
payload (version 4), Alertmanager's v2 alerts API, and a Slack-style `{text}`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from weftline.ground.config import WebhookConfig


@dataclass
class AlertInstance:
    rule: str
    title: str
    fingerprint: str
    status: str  # firing | resolved
    labels: dict[str, str]
    value: float | None
    threshold: float
    op: str
    summary: str
    runbook: str
    severity: str
    starts_at_ms: int
    ends_at_ms: int | None = None

    def annotations(self) -> dict[str, str]:
        out = {"summary": self.summary or self.title, "title": self.title}
        if self.runbook:
            out["runbook_url"] = self.runbook
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "value": self.value,
            "threshold": {"op": self.op, "value": self.threshold},
            "severity": self.severity,
            "summary": self.summary,
            "runbook": self.runbook,
            "starts_at": iso(self.starts_at_ms),
            "ends_at": iso(self.ends_at_ms) if self.ends_at_ms else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AlertInstance:
        return cls(
            rule=d["rule"],
            title=d["title"],
            fingerprint=d["fingerprint"],
            status=d["status"],
            labels=d["labels"],
            value=d["value"],
            threshold=d["threshold"]["value"],
            op=d["threshold"]["op"],
            summary=d["summary"],
            runbook=d["runbook"],
            severity=d["severity"],
            starts_at_ms=parse_iso_ms(d["starts_at"]),
            ends_at_ms=parse_iso_ms(d["ends_at"]) if d.get("ends_at") else None,
        )


@dataclass
class Notification:
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[AlertInstance] = field(default_factory=list)
    external_url: str = ""

    @property
    def status(self) -> str:
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    def common_labels(self) -> dict[str, str]:
        if not self.alerts:
            return {}
        common = dict(self.alerts[0].labels)
        for a in self.alerts[1:]:
            common = {k: v for k, v in common.items() if a.labels.get(k) == v}
        return common


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def parse_iso_ms(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def generic_payload(n: Notification) -> dict[str, Any]:
    return {
        "version": "weftline.alerts/1",
        "receiver": n.receiver,
        "status": n.status,
        "group_key": n.group_key,
        "group_labels": n.group_labels,
        "common_labels": n.common_labels(),
        "firing": sum(a.status == "firing" for a in n.alerts),
        "resolved": sum(a.status == "resolved" for a in n.alerts),
        "alerts": [a.to_json() for a in n.alerts],
    }


def _am_alert(a: AlertInstance, external_url: str) -> dict[str, Any]:
    return {
        "status": a.status,
        "labels": a.labels,
        "annotations": a.annotations(),
        "startsAt": iso(a.starts_at_ms),
        # Alertmanager's zero time for "still firing".
        "endsAt": iso(a.ends_at_ms) if a.ends_at_ms else "0001-01-01T00:00:00Z",
        "generatorURL": external_url,
        "fingerprint": a.fingerprint,
    }


def alertmanager_payload(n: Notification) -> dict[str, Any]:
    common = n.common_labels()
    annotations = [a.annotations() for a in n.alerts]
    common_ann = dict(annotations[0]) if annotations else {}
    for ann in annotations[1:]:
        common_ann = {k: v for k, v in common_ann.items() if ann.get(k) == v}
    return {
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common,
        "commonAnnotations": common_ann,
        "externalURL": n.external_url,
        "alerts": [_am_alert(a, n.external_url) for a in n.alerts],
    }


def alertmanager_api_payload(n: Notification) -> list[dict[str, Any]]:
    out = []
    for a in n.alerts:
        item: dict[str, Any] = {
            "labels": a.labels,
            "annotations": a.annotations(),
            "startsAt": iso(a.starts_at_ms),
            "generatorURL": n.external_url,
        }
        if a.ends_at_ms:
            item["endsAt"] = iso(a.ends_at_ms)
        out.append(item)
    return out


def slack_payload(n: Notification) -> dict[str, Any]:
    lines = [f"*[{n.status.upper()}]* " + ", ".join(f"{k}={v}" for k, v in n.group_labels.items())]
    for a in n.alerts:
        mark = "🔥" if a.status == "firing" else "✅"
        line = f"{mark} {a.title}: {a.summary or a.labels}"
        if a.runbook:
            line += f" (<{a.runbook}|runbook>)"
        lines.append(line)
    return {"text": "\n".join(lines)}


def payload_for(fmt: str, n: Notification) -> Any:
    if fmt == "alertmanager":
        return alertmanager_payload(n)
    if fmt == "alertmanager_api":
        return alertmanager_api_payload(n)
    if fmt == "slack":
        return slack_payload(n)
    return generic_payload(n)


async def send(http: httpx.AsyncClient, hook: WebhookConfig, n: Notification) -> None:
    """Raises on a network error or a non-2xx answer (the group is retried next cycle)."""
    resp = await http.post(
        hook.url,
        json=payload_for(hook.format, n),
        headers=hook.headers,
        timeout=hook.timeout_seconds,
    )
    resp.raise_for_status()
