"""PII scrubbing before storage (Relay's default "data scrubber", key filter + card numbers).

- A value under a key that contains a sensitive word is replaced by `[Filtered]`
  (headers too, also when given as `[name, value]` pairs). Numbers and booleans under
  such keys are kept: `total_tokens` or `auth_attempts` counts are not secrets, and
  agent apps need them.
- A credit-card-like number (13-19 digits, spaces or dashes allowed, Luhn-valid) is
  replaced inside the string; the rest of the string stays.
"""

from __future__ import annotations

import re
from typing import Any

FILTERED = "[Filtered]"
SENSITIVE = (
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "auth",
    "credentials",
    "mysql_pwd",
    "privatekey",
    "private_key",
    "set-cookie",
    "cookie",
    "token",
    "session_key",
)
# Correlation keys that look sensitive by name but are ids Weftline joins on.
KEEP_KEYS = frozenset(
    {"openreplaysessiontoken", "openreplaysession.id", "openreplaysessionurl", "sentry_key"}
)
_CARD_RE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
MAX_DEPTH = 64


def sensitive_key(key: str) -> bool:
    k = key.lower()
    return k not in KEEP_KEYS and any(s in k for s in SENSITIVE)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def scrub_string(s: str) -> str:
    if len(s) < 13:
        return s

    def repl(m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        return FILTERED if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)

    return _CARD_RE.sub(repl, s)


def _filtered(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return FILTERED


def scrub(obj: Any, depth: int = 0) -> Any:
    """A scrubbed copy of a JSON value."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(obj, str):
        return scrub_string(obj)
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            ks = str(k)
            out[ks] = _filtered(v) if sensitive_key(ks) else scrub(v, depth + 1)
        return out
    if isinstance(obj, list):
        res = []
        for v in obj:
            if (
                isinstance(v, list)
                and len(v) == 2
                and isinstance(v[0], str)
                and sensitive_key(v[0])
            ):
                res.append([v[0], _filtered(v[1])])  # header pairs
            else:
                res.append(scrub(v, depth + 1))
        return res
    return obj
