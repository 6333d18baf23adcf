"""Weftline's alert loop: every process runs it, one leader evaluates and notifies.

- Leadership is a Valkey lease (`SET NX PX`, renewed while held). Every write the
  leader makes (alert state, notification groups) goes through a script that first
  checks the lease is still its own, and notifications are only sent after that
  check, so a replica that lost the lease (a pause, a partition) stops writing.
- State (pending/firing instances, notification groups) lives in Valkey, so a new
  leader continues where the old one stopped: nothing firing is notified twice, and
  a resolve that was not yet delivered is still delivered.
- Transitions (firing, resolved) are written to ClickHouse `alert_history` with an
  insert token derived from the transition, so a retry collapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from weftline.dashboards.alerting.metrics import NAMED_METRICS, publish_counters
from weftline.dashboards.alerting.notify import AlertInstance, Notification, send
from weftline.dashboards.alerting.rules import Rule, render_summary
from weftline.dashboards.grafana.macros import TimeRange, expand_alert_query
from weftline.ground.config import Settings
from weftline.ground.metrics import (
    ALERT_EVALUATIONS,
    ALERT_LEADER,
    ALERT_NOTIFICATIONS,
    ALERTS_FIRING,
)
from weftline.ground.times import ch_ms
from weftline.storage.clickhouse import ClickHouse, StorageError
from weftline.storage.keys import alert_groups_key, alert_leader_key, alert_state_key

log = logging.getLogger("weftline.alerts")

ACQUIRE_OR_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: leader, state hash, groups hash. ARGV: me, lease ms, JSON of changes.
APPLY_IF_LEADER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local c = cjson.decode(ARGV[3])
for f, v in pairs(c.state_set) do redis.call('HSET', KEYS[2], f, v) end
for _, f in ipairs(c.state_del) do redis.call('HDEL', KEYS[2], f) end
for f, v in pairs(c.groups_set) do redis.call('HSET', KEYS[3], f, v) end
for _, f in ipairs(c.groups_del) do redis.call('HDEL', KEYS[3], f) end
return 1
"""


class LostLeadership(Exception):
    pass


@dataclass
class RuleOutcome:
    rule: str
    status: str  # ok | error | skipped | not_due
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    breaching: list[tuple[dict[str, str], float]] = field(default_factory=list)
    error: str | None = None
    detail: str = ""


@dataclass
class CycleReport:
    leader: bool
    outcomes: dict[str, RuleOutcome] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    notifications: int = 0
    failed_notifications: int = 0


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    text = rule + "\x1f" + "\x1f".join(f"{k}={labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _j(v: Any) -> str:
    return orjson.dumps(v).decode()


class AlertLoop:
    def __init__(
        self,
        settings: Settings,
        rules: list[Rule],
        ch: ClickHouse | None,
        client: aioredis.Redis,
        *,
        instance_id: str | None = None,
        http: httpx.AsyncClient | None = None,
        can_lead: bool | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.ch = ch
        self.client = client
        self.id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.http = http
        # A process without ClickHouse (`weftline api --ingest-only`) would have to skip
        # every SQL rule, so by default it only publishes its counters and never leads.
        self.can_lead = ch is not None if can_lead is None else can_lead
        self.lease_ms = settings.alerts_lock_ttl_ms
        self.leader = False
        self._last_eval: dict[str, float] = {}
        self._unsaved_history: list[tuple[dict[str, Any], str]] = []
        self._acquire = client.register_script(ACQUIRE_OR_RENEW)
        self._release = client.register_script(RELEASE)
        self._apply = client.register_script(APPLY_IF_LEADER)
        self.external_url = f"http://{settings.host}:{settings.port}"

    # ---- leadership -------------------------------------------------------------------

    async def lead(self) -> bool:
        got = await self._acquire(keys=[alert_leader_key()], args=[self.id, self.lease_ms])
        was, self.leader = self.leader, bool(got)
        if self.leader != was:
            log.info("alert loop %s: %s leadership", self.id, "took" if self.leader else "lost")
        ALERT_LEADER.set(1 if self.leader else 0)
        return self.leader

    async def resign(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[alert_leader_key()], args=[self.id])
        self.leader = False
        ALERT_LEADER.set(0)

    async def _still_leader(self) -> bool:
        cur = await self.client.get(alert_leader_key())
        return cur is not None and cur.decode() == self.id

    # ---- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        own_http = self.http is None
        if own_http:
            self.http = httpx.AsyncClient()
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except (RedisError, OSError, StorageError) as e:
                    log.warning("alert loop %s: %s: %s", self.id, type(e).__name__, e)
                except LostLeadership:
                    log.warning("alert loop %s: lease lost mid-cycle; stepping down", self.id)
                    self.leader = False
                    ALERT_LEADER.set(0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.alerts_interval_seconds)
        finally:
            await self.resign()
            if own_http and self.http is not None:
                await self.http.aclose()
                self.http = None

    async def tick(self, now: float | None = None) -> CycleReport:
        await publish_counters(self.client, self.id)
        if not self.can_lead or not await self.lead():
            return CycleReport(leader=False)
        return await self.cycle(now)

    # ---- evaluation (no side effects) ------------------------------------------------

    async def existing_tables(self) -> set[str]:
        if self.ch is None:
            return set()
        rows = await asyncio.to_thread(
            self.ch.query,
            "SELECT name FROM system.tables WHERE database = {db:String}",
            {"db": self.ch.database},
        )
        return {r["name"] for r in rows}

    async def evaluate_rule(self, rule: Rule, now: float, tables: set[str]) -> RuleOutcome:
        out = RuleOutcome(rule.name, "ok")
        try:
            if rule.sql is not None:
                missing = [t for t in rule.tables if t not in tables]
                if self.ch is None or missing:
                    out.status = "skipped"
                    out.detail = (
                        f"missing tables: {', '.join(missing)}" if missing else "no ClickHouse"
                    )
                    return out
                rng = TimeRange.last(rule.window_s, now=_dt(now), interval_s=60)
                sql = expand_alert_query(rule.sql_for(self.ch.database), rng)
                rows = await asyncio.to_thread(self.ch.query, sql)
                for row in rows:
                    value = row.pop("value", None)
                    if value is None:
                        continue
                    out.samples.append(({k: str(v) for k, v in row.items()}, float(value)))
            else:
                assert rule.metric is not None
                out.samples = await NAMED_METRICS[rule.metric].read(self.client, rule.window_s)
        except (StorageError, ValueError, RedisError, OSError) as e:
            out.status, out.error = "error", f"{type(e).__name__}: {e}"
            return out
        out.breaching = [(lb, v) for lb, v in out.samples if rule.threshold.holds(v)]
        return out

    # ---- one leader cycle -------------------------------------------------------------

    async def cycle(self, now: float | None = None) -> CycleReport:
        now = time.time() if now is None else now
        now_ms = int(now * 1000)
        report = CycleReport(leader=True)
        tables = await self.existing_tables()
        raw_state = await self.client.hgetall(alert_state_key())
        state = {k.decode(): orjson.loads(v) for k, v in raw_state.items()}
        raw_groups = await self.client.hgetall(alert_groups_key())
        groups = {k.decode(): orjson.loads(v) for k, v in raw_groups.items()}
        state_set: dict[str, str] = {}
        state_del: list[str] = []
        changed_groups: set[str] = set()
        resolved_now: list[AlertInstance] = []
        history: list[tuple[dict[str, Any], str]] = []
        known = {r.name for r in self.rules}
        for key, cur in list(state.items()):
            if cur["rule"] not in known:  # a rule that was removed from the files
                state_del.append(key)
                del state[key]

        for rule in self.rules:
            if now - self._last_eval.get(rule.name, 0.0) < rule.interval_s:
                report.outcomes[rule.name] = RuleOutcome(rule.name, "not_due")
                continue
            self._last_eval[rule.name] = now
            outcome = await self.evaluate_rule(rule, now, tables)
            report.outcomes[rule.name] = outcome
            ALERT_EVALUATIONS.labels(rule.name, outcome.status).inc()
            if outcome.status != "ok":
                # Errors and skips keep the current state (Grafana's KeepLast).
                continue
            seen: set[str] = set()
            for labels, value in outcome.breaching:
                all_labels = {**rule.all_labels(), **labels}
                fp = fingerprint(rule.name, all_labels)
                key = f"{rule.name}|{fp}"
                seen.add(key)
                cur = state.get(key)
                if cur is None:
                    cur = {"rule": rule.name, "fp": fp, "labels": all_labels, "state": "pending"}
                    cur["since_ms"] = now_ms
                cur["value"] = value
                if cur["state"] == "pending" and now_ms - cur["since_ms"] >= rule.for_s * 1000:
                    cur["state"] = "firing"
                    cur["fired_ms"] = now_ms
                    inst = self._instance(rule, cur, "firing")
                    history.append(self._history_row(inst, now_ms))
                    changed_groups.add(self.group_key(all_labels))
                    report.fired.append(key)
                state_set[key] = _j(cur)
                state[key] = cur
            for key, cur in list(state.items()):
                if cur["rule"] != rule.name or key in seen:
                    continue
                state_del.append(key)
                del state[key]
                if cur["state"] == "firing":
                    inst = self._instance(rule, cur, "resolved", ends_ms=now_ms)
                    resolved_now.append(inst)
                    history.append(self._history_row(inst, now_ms))
                    changed_groups.add(self.group_key(cur["labels"]))
                    report.resolved.append(key)

        rules_by_name = {r.name: r for r in self.rules}
        for rule in self.rules:
            ALERTS_FIRING.labels(rule.name).set(
                sum(1 for s in state.values() if s["rule"] == rule.name and s["state"] == "firing")
            )

        # Mark groups for every receiver before anything is sent: if this leader dies
        # right after, the next one still delivers (resolves included).
        groups_set: dict[str, str] = {}
        for hook in self.settings.alert_webhooks:
            for gk in changed_groups:
                fkey = f"{hook.name}|{gk}"
                g = groups.get(fkey) or {"last_sent_ms": 0, "resolved": []}
                g["dirty"] = True
                g["resolved"] = g.get("resolved", []) + [
                    a.to_json() for a in resolved_now if self.group_key(a.labels) == gk
                ]
                groups[fkey] = g
                groups_set[fkey] = _j(g)
        await self._commit(state_set, state_del, groups_set, [])

        self._unsaved_history.extend(history)
        await self._save_history()

        firing_by_group: dict[str, list[AlertInstance]] = {}
        for cur in state.values():
            rule = rules_by_name.get(cur["rule"])
            if rule is None or cur["state"] != "firing":
                continue
            firing_by_group.setdefault(self.group_key(cur["labels"]), []).append(
                self._instance(rule, cur, "firing")
            )
        await self._notify(groups, firing_by_group, now_ms, report)
        return report

    def group_key(self, labels: dict[str, str]) -> str:
        parts = ",".join(f'{k}="{labels.get(k, "")}"' for k in self.settings.alerts_group_by)
        return "{" + parts + "}"

    def _instance(
        self, rule: Rule, cur: dict[str, Any], status: str, ends_ms: int | None = None
    ) -> AlertInstance:
        labels = cur["labels"]
        value = cur.get("value")
        return AlertInstance(
            rule=rule.name,
            title=rule.title,
            fingerprint=cur["fp"],
            status=status,
            labels=labels,
            value=value,
            threshold=rule.threshold.value,
            op=rule.threshold.op,
            summary=render_summary(rule.summary, labels, value),
            runbook=rule.runbook,
            severity=rule.severity,
            starts_at_ms=cur.get("fired_ms", cur["since_ms"]),
            ends_at_ms=ends_ms,
        )

    def _history_row(self, a: AlertInstance, now_ms: int) -> tuple[dict[str, Any], str]:
        row = {
            "ts": ch_ms(now_ms),
            "rule": a.rule,
            "title": a.title,
            "fingerprint": a.fingerprint,
            "state": a.status,
            "severity": a.severity,
            "labels": a.labels,
            "value": a.value,
            "threshold": a.threshold,
            "started_at": ch_ms(a.starts_at_ms),
            "summary": a.summary,
            "runbook": a.runbook,
            "evaluator": self.id,
        }
        return row, f"alert:{a.rule}:{a.fingerprint}:{a.status}:{a.starts_at_ms}"

    async def _save_history(self) -> None:
        if self.ch is None or not self._unsaved_history:
            return
        pending, self._unsaved_history = self._unsaved_history, []
        for i, (row, token) in enumerate(pending):
            try:
                await asyncio.to_thread(self.ch.insert, "alert_history", [row], token)
            except StorageError as e:
                log.warning("alert history not written yet (%s); retrying next cycle", e)
                self._unsaved_history = pending[i:] + self._unsaved_history
                return

    async def _commit(
        self,
        state_set: dict[str, str],
        state_del: list[str],
        groups_set: dict[str, str],
        groups_del: list[str],
    ) -> None:
        # cjson turns an empty table into {} either way; send objects for both kinds.
        changes = {
            "state_set": state_set or {},
            "state_del": state_del,
            "groups_set": groups_set or {},
            "groups_del": groups_del,
        }
        if not (state_set or state_del or groups_set or groups_del):
            if not await self._still_leader():
                raise LostLeadership
            return
        ok = await self._apply(
            keys=[alert_leader_key(), alert_state_key(), alert_groups_key()],
            args=[self.id, self.lease_ms, _j(changes)],
        )
        if not ok:
            raise LostLeadership

    async def _notify(
        self,
        groups: dict[str, dict[str, Any]],
        firing_by_group: dict[str, list[AlertInstance]],
        now_ms: int,
        report: CycleReport,
    ) -> None:
        if not self.settings.alert_webhooks:
            return
        repeat_ms = self.settings.alerts_repeat_interval_seconds * 1000
        for hook in self.settings.alert_webhooks:
            keys = {gk for gk in firing_by_group} | {
                k.split("|", 1)[1] for k in groups if k.startswith(hook.name + "|")
            }
            for gk in sorted(keys):
                fkey = f"{hook.name}|{gk}"
                g = groups.get(fkey) or {"last_sent_ms": 0, "resolved": [], "dirty": False}
                firing = firing_by_group.get(gk, [])
                resolved = [AlertInstance.from_json(a) for a in g.get("resolved", [])]
                due = g.get("dirty") or (firing and now_ms - g["last_sent_ms"] >= repeat_ms)
                if not due:
                    continue
                if not firing and not resolved:
                    await self._commit({}, [], {}, [fkey])
                    continue
                if not await self._still_leader():
                    raise LostLeadership
                alerts = firing + resolved
                n = Notification(
                    receiver=hook.name,
                    group_key=gk,
                    group_labels={
                        k: alerts[0].labels.get(k, "") for k in self.settings.alerts_group_by
                    },
                    alerts=alerts,
                    external_url=self.external_url,
                )
                assert self.http is not None
                try:
                    await send(self.http, hook, n)
                except (httpx.HTTPError, OSError) as e:
                    ALERT_NOTIFICATIONS.labels(hook.name, "error").inc()
                    report.failed_notifications += 1
                    log.warning("alert webhook %s failed (%s); retrying next cycle", hook.name, e)
                    continue
                ALERT_NOTIFICATIONS.labels(hook.name, "sent").inc()
                report.notifications += 1
                if firing:
                    g = {"last_sent_ms": now_ms, "resolved": [], "dirty": False}
                    await self._commit({}, [], {fkey: _j(g)}, [])
                else:
                    await self._commit({}, [], {}, [fkey])


def _dt(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)
