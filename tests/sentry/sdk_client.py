"""The real, unmodified `sentry-sdk`, run in its own process against a Weftline DSN.

Usage: python sdk_client.py DSN SCENARIO COMPRESSION(br|gzip)
Prints one JSON object: what it sent (event ids by name) and transport facts.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import sentry_sdk

DSN, SCENARIO, ALGO = sys.argv[1], sys.argv[2], sys.argv[3]

responses: list[dict] = []


def main() -> None:
    sentry_sdk.init(
        dsn=DSN,
        release="pyapp@1.2.3",
        environment="test",
        traces_sample_rate=1.0,
        send_default_pii=True,
        auto_session_tracking=False,
        # Not needed here, and they import the agent frameworks the test extra installs.
        auto_enabling_integrations=False,
        _experiments={"transport_compression_algo": ALGO},
    )
    transport = sentry_sdk.get_client().transport
    out: dict = {"compression": transport._compression_algo, "ids": {}}
    ids = out["ids"]
    sentry_sdk.set_user({"id": "42", "email": "u@example.com"})
    sentry_sdk.set_tag("openReplaySession.id", "7733000000000001")

    if SCENARIO == "basic":
        scope = sentry_sdk.get_isolation_scope()
        scope.start_session()

        def divide(x: int) -> float:
            return 1 / x

        for n in range(2):  # the same bug twice
            try:
                divide(0)
            except ZeroDivisionError:
                ids[f"zero_{n}"] = sentry_sdk.capture_exception()

        def lookup(d: dict, k: str) -> object:
            return d[k]

        try:  # a different bug
            lookup({}, "missing-key-123")
        except KeyError:
            ids["keyerror"] = sentry_sdk.capture_exception()

        def load_config() -> None:
            try:
                int("not a number")
            except ValueError as e:
                raise RuntimeError("config is broken") from e

        try:  # chained
            load_config()
        except RuntimeError:
            ids["chained"] = sentry_sdk.capture_exception()

        ids["msg_a"] = sentry_sdk.capture_message("hello world", level="warning")
        log = logging.getLogger("orders")
        log.error("order %s failed for user %s", 1001, "ann")
        log.error("order %s failed for user %s", 2002, "bob")

        with sentry_sdk.start_transaction(op="task", name="nightly-job") as txn:
            ids["txn_trace"] = txn.trace_id
            with sentry_sdk.start_span(op="db", name="SELECT 1"):
                time.sleep(0.01)
            with sentry_sdk.start_span(op="http.client", name="GET http://example.com"):
                time.sleep(0.01)
            ids["in_txn"] = sentry_sdk.capture_message("inside txn")
        scope.end_session()
    elif SCENARIO == "ratelimit":
        # The first error gets through; the server then answers 429 with
        # X-Sentry-Rate-Limits and the SDK must stop sending errors and report them.
        for n in range(4):
            try:
                raise ValueError(f"limited {n}")
            except ValueError:
                ids[f"err_{n}"] = sentry_sdk.capture_exception()
            sentry_sdk.flush(timeout=5)
        out["disabled_until"] = {
            str(k): v.isoformat() for k, v in transport._disabled_until.items()
        }
        # Client reports are sent at most every 30 s with other items, or on close.
    sentry_sdk.flush(timeout=10)
    sentry_sdk.get_client().close(timeout=10)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
