"""PII scrubbing before storage (Relay's default "data scrubber", key filter + card numbers).

- A value under a key that contains a sensitive word is replaced by `[Filtered]`
  (headers too, also when given as `[name, value]` pairs). Numbers and booleans under
  such keys are kept: `total_tokens` or `auth_attempts` counts are not secrets, and
  agent apps need them.
- A credit-card-like number (13-19 digits, spaces or dashes allowed, Luhn-valid) is
  replaced inside the string; the rest of the string stays. So are `Bearer …` / `Basic …`
  credentials and the values of sensitive query parameters (`?access_token=…`) in any
  string (URLs, messages, bodies).
- `scrub_text` does the same to text that is not parsed (a raw item, a DLQ payload):
  `"password": "…"` pairs in JSON text included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    "api-key",
    "bearer",
    "jwt",
    "card_number",
    "cvv",
    "cvc",
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


_CREDENTIAL_RE = re.compile(r"\b(Bearer|Basic|Token)(\s+)[A-Za-z0-9._~+/=-]{8,}", re.I)
_QUERY_RE = re.compile(r"((?:^|[?&;\s])([^=&#?\s\"'<>]{1,100})=)([^&#\s\"'<>]*)")
_PY_PAIR_RE = re.compile(r"'([^'\\]{1,100})'(\s*:\s*)'((?:[^'\\]|\\.)*)'")
_JSON_PAIR_RE = re.compile(r'"([^"\\]{1,100})"(\s*:\s*)"((?:[^"\\]|\\.)*)"')


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return FILTERED if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)


def _query(m: re.Match[str]) -> str:
    return m.group(1) + FILTERED if m.group(3) and sensitive_key(m.group(2)) else m.group(0)


def scrub_string(s: str) -> str:
    if len(s) < 8:
        return s
    if "=" in s:
        s = _QUERY_RE.sub(_query, s)
    if " " in s or "\t" in s:
        s = _CREDENTIAL_RE.sub(lambda m: m.group(1) + m.group(2) + FILTERED, s)
    if len(s) >= 13:
        s = _CARD_RE.sub(_card, s)
    return s


def _pair(q: str) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        if not sensitive_key(m.group(1)):
            return m.group(0)
        return f"{q}{m.group(1)}{q}{m.group(2)}{q}{FILTERED}{q}"

    return repl


def scrub_text(text: str) -> str:
    """Text that is not parsed: `"key": "value"` pairs with a sensitive key (JSON, and
    Python reprs, which error messages quote), then what `scrub_string` replaces."""
    if ":" in text:
        text = _JSON_PAIR_RE.sub(_pair('"'), text)
        text = _PY_PAIR_RE.sub(_pair("'"), text)
    return scrub_string(text)


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


# The same patterns over raw bytes that must keep their framing (tracker batches: every
# string is length-prefixed): what matches is overwritten with `*` of the same length,
# so every length stays true and the batch still decodes and replays.
_B_CARD = re.compile(rb"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_B_CREDENTIAL = re.compile(rb"\b(?:Bearer|Basic|Token)\s+([A-Za-z0-9._~+/=-]{8,})", re.I)
_B_QUERY = re.compile(rb"[?&;]([A-Za-z0-9_.\-\[\]]{1,100})=([^&#\s\"'<>\\\x00-\x1f]+)")
_B_PAIR = re.compile(
    rb"(?:password|passwd|secret|token|api[_-]?key|auth\w*|cookie|card_number|cvv|cvc)"
    rb"\\?\"\s*:\s*\\?\"((?:[^\"\\]|\\[^\"])*)",
    re.I,
)


def _stars(data: bytearray, start: int, end: int) -> None:
    data[start:end] = b"*" * (end - start)


def mask_bytes(payload: bytes) -> bytes:
    """`payload` with card numbers, credentials, secret query parameters and values under
    secret keys overwritten in place (same length)."""
    data = bytearray(payload)
    for m in _B_CARD.finditer(payload):
        digits = re.sub(rb"[ -]", b"", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits.decode()):
            _stars(data, m.start(), m.end())
    for m in _B_CREDENTIAL.finditer(payload):
        _stars(data, m.start(1), m.end(1))
    for m in _B_QUERY.finditer(payload):
        if sensitive_key(m.group(1).decode(errors="replace")):
            _stars(data, m.start(2), m.end(2))
    for m in _B_PAIR.finditer(payload):
        _stars(data, m.start(1), m.end(1))
    return bytes(data)
