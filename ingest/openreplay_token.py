"""Signed session tokens for the OpenReplay tracker.

The token carries the session's claims and an HMAC-SHA256 over them, so a batch
request is authenticated without a Valkey round trip. Shape (all ASCII, never
`_$_`, which the tracker uses as a separator in sessionStorage):

    <session_id>.<project_id>.<started_ms>.<expires_ms>.<delay_ms>.<base64url sig>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

FLAKE_EPOCH_MS = 1_550_000_000_000


@dataclass(frozen=True)
class SessionClaims:
    session_id: str
    project_id: int
    started_ms: int
    expires_ms: int
    delay_ms: int  # server clock minus the tracker's clock at the last start


Verdict = Literal["ok", "missing", "malformed", "bad_signature", "expired"]


def new_session_id(now_ms: int | None = None) -> str:
    """Milliseconds since 2019-02-12 in the high bits, 24 random bits below: sortable by
    start time, unique without coordination, and fits a UInt64 for centuries."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return str(((ms - FLAKE_EPOCH_MS) << 24) | secrets.randbits(24))


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _sig(self, payload: str) -> str:
        mac = hmac.new(self._key, b"wl-or1|" + payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def issue(self, c: SessionClaims) -> str:
        payload = f"{c.session_id}.{c.project_id}.{c.started_ms}.{c.expires_ms}.{c.delay_ms}"
        return f"{payload}.{self._sig(payload)}"

    def verify(
        self, token: str | None, now_ms: int | None = None
    ) -> tuple[SessionClaims | None, Verdict]:
        if not token:
            return None, "missing"
        if len(token) > 300:
            return None, "malformed"
        payload, _, sig = token.rpartition(".")
        parts = payload.split(".")
        if len(parts) != 5 or not sig:
            return None, "malformed"
        if not hmac.compare_digest(sig, self._sig(payload)):
            return None, "bad_signature"
        try:
            sid, pid, started, expires, delay = parts
            claims = SessionClaims(sid, int(pid), int(started), int(expires), int(delay))
        except ValueError:
            return None, "malformed"
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if now >= claims.expires_ms:
            return claims, "expired"
        return claims, "ok"
