"""Symbolication of minified JavaScript frames with uploaded source maps (`symbolic`).

For each frame of a `javascript` event with a URL, a line and a column, the source map
is found like Sentry does (reference/sentry.md §14.1):
1. by **debug id**: `debug_meta.images` of type `sourcemap` whose `code_file` is the
   frame's URL name the map; release and URL do not matter;
2. by **release + URL**: the frame URL in `~/path` form names the minified file; its
   `sourceMappingURL` names the map, else `<file>.map` is tried.
Then the frame gets the original file, line, column and function, and its context
lines from the map's `sourcesContent`; the minified position is kept in
`data.minified`, and the untouched stack in the exception's `raw_stacktrace`.
A frame with no map, or a position the map does not cover, stays as it was.

Lines and columns: SDK frames are 1-based, and so is `SourceMapCache.lookup` (unlike
`SourceMapView.lookup`, 0-based), so positions pass through unchanged.

Loaded maps are kept in a bounded LRU (entries and bytes); misses are remembered for
`miss_ttl` seconds so a frame without a map costs no query per event, and an upload in
this process forgets them at once.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from weftline.ground.metrics import SOURCEMAP_CACHE, SOURCEMAP_FRAMES
from weftline.storage.sourcemap_store import (
    MINIFIED,
    SOURCE_MAP,
    Artifact,
    normalize_debug_id,
    tilde_url,
)

log = logging.getLogger("weftline.sourcemaps")

CONTEXT_LINES = 5
JS_PLATFORMS = frozenset({"javascript"})
UNKNOWN_FUNCTIONS = frozenset({"", "<unknown>", "?"})

# Lookups the symbolicator needs from storage (storage/sourcemap_store.py).
ByUrl = Callable[[int, str, list[str]], list[Artifact]]
ByDebugId = Callable[[int, str], list[Artifact]]


@dataclass
class Loaded:
    cache: Any  # symbolic.sourcemapcache.SourceMapCache
    map_url: str
    size: int


class MapCache:
    """LRU of loaded maps by key; `None` values are misses with an expiry."""

    def __init__(self, max_entries: int, max_bytes: int, miss_ttl: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.miss_ttl = miss_ttl
        self._hits: OrderedDict[tuple[Any, ...], Loaded] = OrderedDict()
        self._misses: dict[tuple[Any, ...], float] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[bool, Loaded | None]:
        """(known, value): known=False means ask storage."""
        with self._lock:
            if key in self._hits:
                self._hits.move_to_end(key)
                return True, self._hits[key]
            expiry = self._misses.get(key)
            if expiry is not None:
                if expiry > time.monotonic():
                    return True, None
                del self._misses[key]
            return False, None

    def put(self, key: tuple[Any, ...], value: Loaded | None) -> None:
        with self._lock:
            if value is None:
                if len(self._misses) >= self.max_entries * 10:
                    self._misses.clear()
                self._misses[key] = time.monotonic() + self.miss_ttl
                return
            if key in self._hits:
                self._bytes -= self._hits.pop(key).size
            self._hits[key] = value
            self._bytes += value.size
            while self._hits and (
                len(self._hits) > self.max_entries or self._bytes > self.max_bytes
            ):
                _, old = self._hits.popitem(last=False)
                self._bytes -= old.size

    def forget_misses(self, project_id: int) -> None:
        with self._lock:
            for k in [k for k in self._misses if k[0] == project_id]:
                del self._misses[k]

    def __len__(self) -> int:
        return len(self._hits)


def _load(minified: Artifact | None, smap: Artifact) -> Loaded | None:
    from symbolic.sourcemapcache import SourceMapCache

    try:
        # The minified source lets symbolic name the function from its scope; without
        # it (only the map uploaded) names come from the map's `names` alone.
        cache = SourceMapCache.from_bytes(minified.content if minified else b"", smap.content)
    except Exception as e:  # a map that symbolic cannot read is a miss, not a crash
        SOURCEMAP_FRAMES.labels("bad_map").inc()
        log.warning("source map %s (%s) unreadable: %s", smap.url, smap.release, e)
        return None
    size = len(smap.content) + (len(minified.content) if minified else 0)
    return Loaded(cache, smap.url, size)


class Symbolicator:
    def __init__(
        self,
        by_url: ByUrl,
        by_debug_id: ByDebugId,
        *,
        max_entries: int = 64,
        max_bytes: int = 256 * 1024 * 1024,
        miss_ttl: float = 30.0,
    ) -> None:
        self.by_url = by_url
        self.by_debug_id = by_debug_id
        self.cache = MapCache(max_entries, max_bytes, miss_ttl)

    # ---------- finding a map ----------

    def _by_debug_id(self, project_id: int, debug_id: str) -> Loaded | None:
        key = (project_id, "debug_id", debug_id)
        known, value = self.cache.get(key)
        SOURCEMAP_CACHE.labels("hit" if known else "miss").inc()
        if known:
            return value
        try:
            found = self.by_debug_id(project_id, debug_id)
        except Exception as e:
            return self._lookup_failed(e)
        smap = next((a for a in found if a.kind == SOURCE_MAP), None)
        minified = next((a for a in found if a.kind == MINIFIED), None)
        value = _load(minified, smap) if smap else None
        self.cache.put(key, value)
        return value

    def _by_url(self, project_id: int, release: str, url: str) -> Loaded | None:
        key = (project_id, release, url)
        known, value = self.cache.get(key)
        SOURCEMAP_CACHE.labels("hit" if known else "miss").inc()
        if known:
            return value
        try:
            found = self.by_url(project_id, release, [url, url + ".map"])
            minified = next((a for a in found if a.url == url and a.kind == MINIFIED), None)
            maps = {a.url: a for a in found if a.kind == SOURCE_MAP}
            ref = minified.sourcemap_url if minified else ""
            if ref and ref not in maps:
                maps.update(
                    (a.url, a)
                    for a in self.by_url(project_id, release, [ref])
                    if a.kind == SOURCE_MAP
                )
        except Exception as e:
            return self._lookup_failed(e)
        smap = maps.get(ref) or maps.get(url + ".map")
        value = _load(minified, smap) if smap else None
        self.cache.put(key, value)
        return value

    def forget_misses(self, project_id: int) -> None:
        self.cache.forget_misses(project_id)

    def _lookup_failed(self, e: Exception) -> None:
        # Storage unreachable: this event keeps its minified frames (not cached, so the
        # next event tries again); failing the decode would dead-letter the event.
        SOURCEMAP_FRAMES.labels("lookup_error").inc()
        log.warning("source map lookup failed: %s", e)
        return None

    # ---------- rewriting an event ----------

    def __call__(self, event: dict[str, Any], project_id: int) -> dict[str, Any]:
        """The event with its minified JS frames symbolicated (a new dict when anything
        changed; the input is never mutated)."""
        if event.get("platform") not in JS_PLATFORMS:
            return event
        exc = event.get("exception")
        values = exc.get("values") if isinstance(exc, dict) else exc
        if not isinstance(values, list):
            return event
        release = event.get("release") if isinstance(event.get("release"), str) else ""
        debug_ids = _debug_images(event)
        changed = False
        new_values = []
        for e in values:
            st = e.get("stacktrace") if isinstance(e, dict) else None
            frames = st.get("frames") if isinstance(st, dict) else None
            if not isinstance(frames, list):
                new_values.append(e)
                continue
            new_frames = [
                self._frame(f, project_id, release, debug_ids) if isinstance(f, dict) else f
                for f in frames
            ]
            if any(a is not b for a, b in zip(new_frames, frames, strict=True)):
                changed = True
                e = {**e, "stacktrace": {**st, "frames": new_frames}, "raw_stacktrace": st}
            new_values.append(e)
        if not changed:
            return event
        return {
            **event,
            "exception": {**exc, "values": new_values} if isinstance(exc, dict) else new_values,
        }

    def _frame(
        self, frame: dict[str, Any], project_id: int, release: str, debug_ids: dict[str, str]
    ) -> dict[str, Any]:
        platform = frame.get("platform") or "javascript"
        abs_path = frame.get("abs_path") or frame.get("filename")
        line, col = frame.get("lineno"), frame.get("colno")
        if (
            platform not in JS_PLATFORMS
            or not isinstance(abs_path, str)
            or not abs_path
            or not isinstance(line, int)
            or not isinstance(col, int)
            or isinstance(line, bool)
            or line < 1
            or col < 1
            or (isinstance(frame.get("data"), dict) and frame["data"].get("sourcemap"))
        ):
            return frame
        loaded = None
        did = debug_ids.get(abs_path)
        if did:
            loaded = self._by_debug_id(project_id, did)
        if loaded is None and release and _is_url_like(abs_path):
            loaded = self._by_url(project_id, release, tilde_url(abs_path))
        if loaded is None:
            SOURCEMAP_FRAMES.labels("no_map").inc()
            return frame
        try:
            token = loaded.cache.lookup(line, col, CONTEXT_LINES)
        except Exception:  # a position outside the map, or symbolic's own error
            token = None
        if token is None or not token.src:
            SOURCEMAP_FRAMES.labels("no_token").inc()
            return frame
        SOURCEMAP_FRAMES.labels("symbolicated").inc()
        src = str(token.src)
        function = token.function_name or token.name
        if not function or function in UNKNOWN_FUNCTIONS:
            function = frame.get("function")
        out = {k: v for k, v in frame.items() if k not in ("pre_context", "post_context")}
        out.update(
            abs_path=_source_url(abs_path, loaded.map_url, src),
            filename=_display_name(src),
            lineno=token.line,
            colno=token.col,
            function=function,
            context_line=token.context_line,
            pre_context=list(token.pre_context or []),
            post_context=list(token.post_context or []),
        )
        while out["post_context"] and out["post_context"][-1] == "":
            out["post_context"].pop()  # the "line" after a source's final newline
        if out["context_line"] is None:
            out.pop("context_line")
        if "/node_modules/" in src or src.startswith("webpack/"):
            out["in_app"] = False
        data = dict(frame["data"]) if isinstance(frame.get("data"), dict) else {}
        data["sourcemap"] = loaded.map_url
        data["minified"] = {
            "abs_path": abs_path,
            "lineno": line,
            "colno": col,
            "function": frame.get("function"),
        }
        out["data"] = data
        return out


def _debug_images(event: dict[str, Any]) -> dict[str, str]:
    meta = event.get("debug_meta")
    images = meta.get("images") if isinstance(meta, dict) else None
    out: dict[str, str] = {}
    for img in images if isinstance(images, list) else []:
        if isinstance(img, dict) and img.get("type") == "sourcemap":
            code_file, did = img.get("code_file"), normalize_debug_id(img.get("debug_id"))
            if isinstance(code_file, str) and did:
                out[code_file] = did
    return out


def _is_url_like(path: str) -> bool:
    return bool(urlsplit(path).scheme) or path.startswith(("/", "~"))


def _source_url(frame_url: str, map_url: str, src: str) -> str:
    """The original source's location: a URL in the map stays; a relative path is
    resolved against the map's directory on the frame's origin."""
    if urlsplit(src).scheme:
        return src
    parts = urlsplit(frame_url)
    base = posixpath.dirname(map_url[1:] if map_url.startswith("~") else map_url)
    path = posixpath.normpath(posixpath.join(base, src))
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}{path if path.startswith('/') else '/' + path}"
    return "~" + (path if path.startswith("/") else "/" + path)


def _display_name(src: str) -> str:
    """What the UI and grouping show: bundler prefixes and leading `../`, `./` removed."""
    parts = urlsplit(src)
    path = parts.path if parts.scheme else src
    if parts.scheme == "webpack":
        path = (parts.netloc + "/" + path.lstrip("/")) if parts.netloc else path
    while path.startswith(("../", "./")):
        path = path[3:] if path.startswith("../") else path[2:]
    return path.lstrip("/") or src
