"""One alert-loop process for the multi-process test: `python alert_runner.py VALKEY_URL
WEBHOOK_URL RULES_DIR SECONDS`. Valkey-only rules (named metrics), no ClickHouse."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from weftline.dashboards.alerting.evaluator import AlertLoop
from weftline.dashboards.alerting.rules import load_rules
from weftline.ground.config import Settings, WebhookConfig
from weftline.storage.valkey import connect


async def main(valkey_url: str, webhook: str, rules_dir: str, seconds: float) -> None:
    settings = Settings(
        alerts_interval_seconds=0.1,
        alerts_lock_ttl_ms=2000,
        alert_webhooks=[WebhookConfig(url=webhook + "/hook")],
    )
    client = connect(valkey_url)
    loop = AlertLoop(settings, load_rules(Path(rules_dir)), None, client, can_lead=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    print("ready", flush=True)
    await loop.run(stop)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
