"""Issue grouping: which events are "the same bug". Pure functions over the event JSON.

The strategy is Sentry's default (`newstyle`), simplified. Written down:

1. A custom `fingerprint` without `{{ default }}` is the whole key: its entries, with
   variables (`{{ type }}`, `{{ message }}`, `{{ tags.x }}`, …) resolved.
2. Otherwise the default key is built from the first strategy that yields anything:
   - **exception** (events with `exception` values): for each exception in the chain
     (oldest first, as sent), its `type` (not for a synthetic exception, e.g. the JS
     `captureMessage` stack) and its stack's frame components; the exception `value`,
     parameterized, counts only when no frame of that exception contributes.
     A frame contributes: `module` (else the lowercased basename of the file, with
     bundler content hashes stripped, and not for URL files), `function` (JS: last
     dotted part; not for anonymous names), and the whitespace-collapsed `context_line`
     (for python/javascript/node/php/ruby, at most 120 characters, so minified lines
     never count). Line numbers never count: they move with unrelated edits. A frame
     identical to the one before it (recursion) is skipped.
     Two variants: `app` uses in-app frames only, `system` all frames; `app` wins when
     it has any frame, since a library frame change must not split an app's issue.
   - **message**: `logentry.message` (the template, e.g. `"log error %s"`), else
     `logentry.formatted`, else `message`; parameterized (numbers, ids, hashes, dates,
     IPs, emails and URLs become `<int>`, `<uuid>`, …).
3. A fingerprint with `{{ default }}` hashes its entries with that entry replaced by
   the default key.
4. The group id is the MD5 of the grouping config id and the key's values joined by a
   separator (unlike Sentry's unseparated concatenation, "ab"+"c" ≠ "a"+"bc").

Unlike Sentry, an event has one hash (no secondary-hash matching): the group id is a
pure function of the event, so a redelivered event lands in the same group without
reading any state, and grouping is exactly-once by construction. Changing any rule
here means changing `CONFIG_ID`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

CONFIG_ID = "weftline:2025-01"

JS_PLATFORMS = frozenset({"javascript", "node"})
CONTEXT_LINE_PLATFORMS = frozenset({"javascript", "node", "python", "php", "ruby"})
JS_ANONYMOUS = frozenset({"?", "<anonymous function>", "<anonymous>", "Anonymous function"})
JS_IGNORED_PATHS = frozenset({"[native code]", "native code", "eval code", "<anonymous>"})
SEP = "\x1f"

# Message parameterization: the alternatives are tried left to right at each position,
# most specific first (an email before a hostname, a UUID before a hex run, a float
# before an int).
_PARAM_PATTERNS: list[tuple[str, str]] = [
    ("email", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("url", r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+"),
    ("ip", r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"),
    (
        "uuid",
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    ),
    ("sha1", r"\b[0-9a-fA-F]{40}\b"),
    ("md5", r"\b[0-9a-fA-F]{32}\b"),
    (
        "date",
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
    ),
    ("duration", r"\b\d+(?:\.\d+)?(?:ms|s)\b"),
    ("hex", r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,128}\b"),
    ("float", r"(?<![\w.])-?\d+\.\d+\b"),
    ("int", r"(?<![\w.])-?\d+\b"),
    ("quoted_str", r"(?<==)(?:'[^']*'|\"[^\"]*\")"),
    ("bool", r"(?<==)(?:true|false|True|False)\b"),
]
_PARAM_RE = re.compile("|".join(f"(?P<{n}>{p})" for n, p in _PARAM_PATTERNS))
_WS_RE = re.compile(r"\s+")
_CONTENT_HASH_RE = re.compile(r"[.-][0-9a-f]{6,}(?=\.[a-z]+$)", re.I)
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_VAR_RE = re.compile(r"^\{\{\s*(\S+?)\s*\}\}$")


def parameterize(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = "\n".join(lines[:2])
    if len(lines) > 2:
        head += "..."
    return _PARAM_RE.sub(lambda m: f"<{m.lastgroup}>", head)


def _values(obj: Any, key: str = "values") -> list[Any]:
    """`{"values": [...]}` or a bare list (both shapes occur)."""
    if isinstance(obj, dict):
        obj = obj.get(key)
    return [v for v in obj if isinstance(v, dict)] if isinstance(obj, list) else []


def exceptions_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    return _values(event.get("exception"))


def frames_of(exc: dict[str, Any]) -> list[dict[str, Any]]:
    st = exc.get("stacktrace")
    return _values(st, "frames") if isinstance(st, dict) else []


def message_template(event: dict[str, Any]) -> str:
    """The template when there is one (stable across arguments), else the text."""
    le = event.get("logentry")
    if isinstance(le, dict):
        for k in ("message", "formatted"):
            if isinstance(le.get(k), str) and le[k]:
                return le[k]
    msg = event.get("message")
    if isinstance(msg, dict):  # legacy interface shape
        for k in ("message", "formatted"):
            if isinstance(msg.get(k), str) and msg[k]:
                return msg[k]
    return msg if isinstance(msg, str) else ""


def message_text(event: dict[str, Any]) -> str:
    """The formatted text, for titles."""
    le = event.get("logentry")
    if isinstance(le, dict) and isinstance(le.get("formatted"), str) and le["formatted"]:
        return le["formatted"]
    msg = event.get("message")
    if isinstance(msg, dict):
        msg = msg.get("formatted") or msg.get("message")
    if isinstance(msg, str) and msg:
        return msg
    return message_template(event)


def _is_synthetic(exc: dict[str, Any]) -> bool:
    mech = exc.get("mechanism")
    return isinstance(mech, dict) and bool(mech.get("synthetic"))


def _in_app(frame: dict[str, Any]) -> bool:
    v = frame.get("in_app")
    if isinstance(v, bool):
        return v
    # Absent: library paths are not the app's code.
    path = str(frame.get("abs_path") or frame.get("filename") or "")
    return not any(s in path for s in ("/node_modules/", "/site-packages/", "/dist-packages/"))


def _platform(frame: dict[str, Any], event_platform: str) -> str:
    p = frame.get("platform")
    return p if isinstance(p, str) and p else event_platform


def frame_values(frame: dict[str, Any], event_platform: str) -> list[str]:
    """The contributing values of one frame; empty when the frame contributes nothing."""
    platform = _platform(frame, event_platform)
    js = platform in JS_PLATFORMS
    abs_path = str(frame.get("abs_path") or frame.get("filename") or "")
    if js and (frame.get("function") == "eval" or abs_path in JS_IGNORED_PATHS):
        return []
    url_file = bool(_URL_RE.match(abs_path)) and not abs_path.startswith("file:")
    out: list[str] = []
    module = frame.get("module")
    module_counts = isinstance(module, str) and bool(module)
    if module_counts and js and ("/" in module and abs_path.endswith(module)):
        module_counts = False
    if module_counts:
        out.append(f"module:{module}")
    else:
        filename = frame.get("filename") or frame.get("abs_path")
        if isinstance(filename, str) and filename and not url_file:
            base = re.split(r"[/\\]", filename)[-1].lower()
            if base not in ("<anonymous>", "[native code]"):
                out.append("file:" + _CONTENT_HASH_RE.sub("", base))
    func = frame.get("function") or frame.get("raw_function")
    context = frame.get("context_line")
    context_counts = (
        isinstance(context, str)
        and platform in CONTEXT_LINE_PLATFORMS
        and len(context) <= 120
        and bool(context.strip())
        and not (js and not func and url_file)
    )
    if isinstance(func, str) and func:
        if js:
            func = func.split(".")[-1]
            anonymous = func in JS_ANONYMOUS or func.endswith("/<")
            mapped = isinstance(frame.get("data"), dict) and frame["data"].get("sourcemap")
            if not anonymous and not (mapped and context_counts):
                out.append(f"function:{func}")
        elif not func.startswith("lambda$") and func not in ("<redacted>", "<unknown>"):
            out.append(f"function:{func}")
    if context_counts:
        out.append("context:" + _WS_RE.sub(" ", str(context)).strip())
    return out


def stack_values(frames: list[dict[str, Any]], platform: str, app_only: bool) -> list[str]:
    out: list[str] = []
    prev: tuple[Any, ...] | None = None
    for f in frames:
        ident = tuple(
            f.get(k)
            for k in ("abs_path", "package", "module", "filename", "function", "lineno", "colno")
        )
        if ident == prev:
            continue  # recursion
        prev = ident
        if app_only and not _in_app(f):
            continue
        fv = frame_values(f, platform)
        if fv:
            out.append("frame(" + SEP.join(fv) + ")")
    return out


def _exception_values(event: dict[str, Any], app_only: bool) -> list[str]:
    platform = str(event.get("platform") or "other")
    out: list[str] = []
    for exc in exceptions_of(event):
        part: list[str] = []
        typ = exc.get("type")
        if isinstance(typ, str) and typ and not _is_synthetic(exc):
            part.append(f"type:{typ}")
        stack = stack_values(frames_of(exc), platform, app_only)
        if stack:
            part.extend(stack)
        else:
            value = exc.get("value")
            if isinstance(value, str) and value:
                part.append("value:" + parameterize(value))
        out.extend(part)
    return out


@dataclass(frozen=True)
class Grouping:
    group_id: str
    variant: str  # app | system | message | custom | fallback (+ "+fingerprint")
    values: tuple[str, ...]
    title: str
    culprit: str
    config: str = CONFIG_ID


def default_key(event: dict[str, Any]) -> tuple[str, list[str]]:
    if exceptions_of(event):
        app = _exception_values(event, app_only=True)
        system = _exception_values(event, app_only=False)
        app_frames = any(v.startswith("frame(") for v in app)
        if app and app_frames:
            return "app", app
        if system:
            return "system", system
    msg = message_template(event)
    if msg:
        return "message", ["message:" + parameterize(msg)]
    return "fallback", []


def _crash_frame(event: dict[str, Any]) -> dict[str, Any] | None:
    excs = exceptions_of(event)
    frames = frames_of(excs[-1]) if excs else []
    for f in reversed(frames):
        if _in_app(f):
            return f
    return frames[-1] if frames else None


def _tags(event: dict[str, Any]) -> dict[str, str]:
    t = event.get("tags")
    if isinstance(t, dict):
        return {str(k): str(v) for k, v in t.items()}
    if isinstance(t, list):
        return {str(p[0]): str(p[1]) for p in t if isinstance(p, list | tuple) and len(p) == 2}
    return {}


def resolve_variable(name: str, event: dict[str, Any]) -> str:
    excs = exceptions_of(event)
    last = excs[-1] if excs else {}
    crash = _crash_frame(event) or {}
    name = name.lower()
    simple = {
        "transaction": (event.get("transaction"), "<no-transaction>"),
        "message": (parameterize(message_text(event)) or None, "<no-message>"),
        "type": (last.get("type"), "<no-type>"),
        "error.type": (last.get("type"), "<no-type>"),
        "value": (last.get("value"), "<no-value>"),
        "error.value": (last.get("value"), "<no-value>"),
        "function": (crash.get("function"), "<no-function>"),
        "stack.function": (crash.get("function"), "<no-function>"),
        "module": (crash.get("module"), "<no-module>"),
        "stack.module": (crash.get("module"), "<no-module>"),
        "package": (crash.get("package"), "<no-package>"),
        "path": (crash.get("abs_path") or crash.get("filename"), "<no-path>"),
        "stack.abs_path": (crash.get("abs_path") or crash.get("filename"), "<no-path>"),
        "stack.filename": (crash.get("filename"), "<no-filename>"),
        "level": (event.get("level"), "<no-level>"),
        "logger": (event.get("logger"), "<no-logger>"),
    }
    if name in simple:
        v, missing = simple[name]
        return str(v) if v not in (None, "") else missing
    if name.startswith("tags."):
        return _tags(event).get(name[5:], f"<no-value-for-tag-{name[5:]}>")
    return "{{ " + name + " }}"


def title_of(event: dict[str, Any]) -> str:
    excs = exceptions_of(event)
    if excs:
        last = excs[-1]
        value = str(last.get("value") or "").strip().splitlines()
        first = value[0][:200] if value else ""
        typ = last.get("type")
        if _is_synthetic(last) or not typ:
            text = message_text(event) or first
            if text:
                return text.strip().splitlines()[0][:200] if text.strip() else "<untitled>"
            crash = _crash_frame(event) or {}
            return str(crash.get("function") or "<unknown>")
        return f"{typ}: {first}" if first else str(typ)
    text = message_text(event).strip()
    return text.splitlines()[0][:200] if text else "<untitled>"


def culprit_of(event: dict[str, Any]) -> str:
    frame = _crash_frame(event)
    if frame:
        where = str(frame.get("module") or frame.get("filename") or frame.get("abs_path") or "")
        if _URL_RE.match(where):  # the path says where; query and host are noise
            where = urlsplit(where).path or where
        func = frame.get("function") or "?"
        if str(event.get("platform") or "") in JS_PLATFORMS:
            return f"{func}({where})"[:200]
        return f"{where} in {func}"[:200]
    if isinstance(event.get("transaction"), str) and event["transaction"]:
        return event["transaction"][:200]
    req = event.get("request")
    if isinstance(req, dict) and isinstance(req.get("url"), str):
        return req["url"][:200]
    return ""


def _md5(parts: list[str]) -> str:
    h = hashlib.md5(usedforsecurity=False)
    h.update(CONFIG_ID.encode())
    for p in parts:
        h.update(SEP.encode())
        h.update(p.encode("utf-8", "replace"))
    return h.hexdigest()


def group_event(event: dict[str, Any]) -> Grouping:
    """Group id, the key it came from, title and culprit of one error event."""
    title, culprit = title_of(event), culprit_of(event)
    checksum = event.get("checksum")
    if isinstance(checksum, str) and re.fullmatch(r"[0-9a-fA-F]{32}", checksum):
        return Grouping(checksum.lower(), "checksum", (checksum,), title, culprit)
    variant, values = default_key(event)
    fp = event.get("fingerprint")
    if isinstance(fp, list) and fp and all(isinstance(x, str | int | float) for x in fp):
        resolved: list[str] = []
        has_default = False
        for entry in map(str, fp):
            m = _VAR_RE.match(entry)
            if m and m.group(1).lower() == "default":
                has_default = True
                resolved.extend(values)
            elif m:
                resolved.append("fp:" + resolve_variable(m.group(1), event))
            else:
                resolved.append("fp:" + entry)
        kind = f"{variant}+fingerprint" if has_default else "custom"
        return Grouping(_md5(resolved), kind, tuple(resolved), title, culprit)
    return Grouping(_md5(values), variant, tuple(values), title, culprit)
