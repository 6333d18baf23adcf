"""Reads and writes of `sentry_artifacts` (migration 0009): uploaded source maps and
minified files, by release + `~/` URL or by debug id."""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from weftline.ground.times import ch_time
from weftline.storage.clickhouse import ClickHouse

TABLE = "sentry_artifacts"
SOURCE_MAP = "source_map"
MINIFIED = "minified_source"


@dataclass(frozen=True)
class Artifact:
    release: str
    url: str
    kind: str
    debug_id: str
    sourcemap_url: str
    sha1: str
    content: bytes


def insert_artifacts(ch: ClickHouse, project_id: int, artifacts: list[Artifact]) -> None:
    stamp = ch_time(datetime.now(UTC))
    rows = [
        {
            "project_id": project_id,
            "release": a.release,
            "url": a.url,
            "kind": a.kind,
            "debug_id": a.debug_id,
            "sourcemap_url": a.sourcemap_url,
            "sha1": a.sha1,
            "size": len(a.content),
            # Text: maps are JSON and minified files JavaScript (checked at upload).
            "content": a.content.decode("utf-8"),
            "uploaded_at": stamp,
        }
        for a in artifacts
    ]
    # One token per upload: a new upload of the same files must be stored (it is the
    # newest), which a content-derived token would deduplicate away.
    ch.insert(TABLE, rows, f"artifacts:{project_id}:{uuid.uuid4().hex}")


_COLUMNS = "release, url, kind, debug_id, sourcemap_url, sha1, content"


def _artifact(row: dict[str, Any]) -> Artifact:
    content = row["content"]
    return Artifact(
        release=row["release"],
        url=row["url"],
        kind=row["kind"],
        debug_id=row["debug_id"],
        sourcemap_url=row["sourcemap_url"],
        sha1=row["sha1"],
        content=content.encode("utf-8") if isinstance(content, str) else bytes(content),
    )


def by_url(ch: ClickHouse, project_id: int, release: str, urls: list[str]) -> list[Artifact]:
    rows = ch.query(
        f"SELECT {_COLUMNS} FROM {ch.database}.{TABLE} FINAL "
        "WHERE project_id = {p:UInt32} AND release = {r:String} AND url IN {u:Array(String)}",
        {"p": project_id, "r": release, "u": urls},
    )
    return [_artifact(r) for r in rows]


def by_debug_id(ch: ClickHouse, project_id: int, debug_id: str) -> list[Artifact]:
    rows = ch.query(
        f"SELECT {_COLUMNS} FROM {ch.database}.{TABLE} FINAL "
        "WHERE project_id = {p:UInt32} AND debug_id = {d:String}",
        {"p": project_id, "d": debug_id},
    )
    return [_artifact(r) for r in rows]


def list_artifacts(ch: ClickHouse, project_id: int, release: str | None) -> list[dict[str, Any]]:
    where = "project_id = {p:UInt32}" + ("" if release is None else " AND release = {r:String}")
    return ch.query(
        "SELECT release, url, kind, debug_id, sourcemap_url, sha1, size, "
        "toString(uploaded_at) AS uploaded_at "
        f"FROM {ch.database}.{TABLE} FINAL WHERE {where} ORDER BY release, url, kind LIMIT 10000",
        {"p": project_id, **({} if release is None else {"r": release})},
    )


def tilde_url(url: str) -> str:
    """A file's URL in Sentry's release-artifact form: scheme and host become `~`, query
    and fragment go. `~/a.js`, `/a.js`, `a.js` and `http://h/a.js` all give `~/a.js`."""
    url = url.strip()
    if url.startswith("~"):
        path = url[1:]
    else:
        parts = urlsplit(url)
        path = parts.path if (parts.scheme or parts.netloc) else url.split("?", 1)[0]
        path = path.split("#", 1)[0]
    path = "/" + path.lstrip("/")
    return "~" + posixpath.normpath(unquote(path)).replace("//", "/")


def normalize_debug_id(raw: object) -> str:
    """Dashed lowercase UUID, or '' when `raw` is not one (32 hex digits, dashes optional)."""
    if not isinstance(raw, str):
        return ""
    text = raw.strip().lower()
    if len(text) > 36:  # Sentry debug ids may carry an appendix after the UUID
        text = text[:36]
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return ""
