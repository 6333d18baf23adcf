"""Compile the rule files to Grafana's alerting file provisioning (reference §4.6-§4.9):
rule groups, one contact point per webhook, and the notification policy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from weftline.dashboards.alerting.metrics import NAMED_METRICS
from weftline.dashboards.alerting.rules import Rule, migrated_tables
from weftline.dashboards.grafana.build import CH, CLICKHOUSE_UID, GRAFANA_DIR, PROMETHEUS_UID
from weftline.ground.config import Settings, WebhookConfig

ALERTING_FILE = GRAFANA_DIR / "provisioning" / "alerting" / "weftline.yaml"
# With no webhook configured, the generated file points at an environment variable.
ENV_RECEIVER = {
    "uid": "weftline-webhook",
    "type": "webhook",
    "settings": {"url": "${WEFTLINE_ALERT_WEBHOOK_URL}", "httpMethod": "POST"},
}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def prom_duration(seconds: float) -> str:
    s = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0 and s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def grafana_template(summary: str) -> str:
    """`{{label}}` / `{{value}}` → Grafana's `{{ $labels.label }}` / `{{ $values.B.Value }}`."""

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        return "{{ $values.B.Value }}" if key == "value" else "{{ $labels." + key + " }}"

    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", repl, summary)


def compile_rule(rule: Rule, database: str) -> dict[str, Any]:
    window = int(rule.window_s)
    if rule.sql is not None:
        query = {
            "refId": "A",
            "relativeTimeRange": {"from": window, "to": 0},
            "datasourceUid": CLICKHOUSE_UID,
            "model": {
                "refId": "A",
                "datasource": CH,
                "editorType": "sql",
                # Table format: Grafana turns each row into a series, string columns
                # into labels, the one numeric column into the value.
                "format": 1,
                "rawSql": rule.sql_for(database),
                "intervalMs": 60000,
                "maxDataPoints": 43200,
            },
        }
    else:
        assert rule.metric is not None
        query = {
            "refId": "A",
            "relativeTimeRange": {"from": max(window, 60), "to": 0},
            "datasourceUid": PROMETHEUS_UID,
            "model": {
                "refId": "A",
                "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID},
                "expr": NAMED_METRICS[rule.metric].promql(prom_duration(rule.window_s)),
                "instant": True,
                "range": False,
                "intervalMs": 60000,
                "maxDataPoints": 43200,
            },
        }
    reduce = {
        "refId": "B",
        "datasourceUid": "__expr__",
        "model": {
            "refId": "B",
            "type": "reduce",
            "expression": "A",
            "reducer": "last",
            "settings": {"mode": "dropNN"},
        },
    }
    threshold = {
        "refId": "C",
        "datasourceUid": "__expr__",
        "model": {
            "refId": "C",
            "type": "threshold",
            "expression": "B",
            "conditions": [
                {"evaluator": {"type": rule.threshold.op, "params": [rule.threshold.value]}}
            ],
        },
    }
    annotations = {"summary": grafana_template(rule.summary or rule.title)}
    if rule.runbook:
        annotations["runbook_url"] = rule.runbook
    return {
        "uid": rule.uid,
        "title": rule.title,
        "condition": "C",
        "data": [query, reduce, threshold],
        "for": prom_duration(rule.for_s) if rule.for_s else "0s",
        "noDataState": "OK",
        "execErrState": "Error",
        "labels": {"severity": rule.severity, "weftline_rule": rule.name, **rule.labels},
        "annotations": annotations,
        "isPaused": False,
    }


def compile_rules(
    rules: list[Rule], settings: Settings, *, available_tables: set[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The provisioning document and the names of rules left out (tables not created by
    any migration in this tree)."""
    tables = migrated_tables() if available_tables is None else available_tables
    database = settings.clickhouse_database
    groups: dict[str, dict[str, Any]] = {}
    left_out: list[str] = []
    for rule in rules:
        if any(t not in tables for t in rule.tables):
            left_out.append(rule.name)
            continue
        g = groups.setdefault(
            rule.group,
            {
                "orgId": 1,
                "name": rule.group,
                "folder": rule.folder,
                "interval": prom_duration(rule.interval_s),
                "rules": [],
            },
        )
        g["rules"].append(compile_rule(rule, database))
    receivers = [_receiver(h) for h in settings.alert_webhooks] or [ENV_RECEIVER]
    contact_point = "weftline"
    doc = {
        "apiVersion": 1,
        "groups": list(groups.values()),
        "contactPoints": [{"orgId": 1, "name": contact_point, "receivers": receivers}],
        "policies": [
            {
                "orgId": 1,
                "receiver": contact_point,
                "group_by": ["grafana_folder", *settings.alerts_group_by],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": prom_duration(settings.alerts_repeat_interval_seconds),
            }
        ],
    }
    return doc, left_out


def _receiver(h: WebhookConfig) -> dict[str, Any]:
    if h.format == "slack":
        return {"uid": f"weftline-{h.name}", "type": "slack", "settings": {"url": h.url}}
    return {
        "uid": f"weftline-{h.name}",
        "type": "webhook",
        "settings": {"url": h.url, "httpMethod": "POST"},
    }


HEADER = (
    "# Generated by `weftline alerts compile` from dashboards/alerting/rules/*.yaml; do not edit.\n"
    "# Grafana expands ${WEFTLINE_ALERT_WEBHOOK_URL} from its environment.\n"
)


def render(rules: list[Rule], settings: Settings) -> str:
    doc, _ = compile_rules(rules, settings)
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def write(rules: list[Rule], settings: Settings, path: Path = ALERTING_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(rules, settings))
    return path
