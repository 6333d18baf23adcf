"""Source map upload: `POST /api/v1/sourcemaps` (the project's query token as Bearer).

Two body forms:
- raw: one file; `?url=` names it (`~/static/js/app.min.js.map` or a full URL) and
  `?release=` the release it belongs to; `?debug_id=` optionally.
- `multipart/form-data`: any number of file parts; each file's URL is
  `url_prefix` + `/` + its file name. `release`, `url_prefix` and `debug_id` come from
  form fields or the query string.

A file whose bytes are a JSON object with `mappings` (or `sections`) is a source map
and must parse as one; anything else is a minified file and must be UTF-8. Debug ids
are read from the map's `debug_id`/`debugId` and the minified file's `//# debugId=`
comment. At least a release or a debug id is required, or the worker could never find
the file. The request is stored before the answer (no queue: an upload is a deploy
step, and the caller wants to know it is in).

The parsing functions are pure (bytes → artifacts, or `UploadError`), fuzzed in
tests/test_sourcemaps_upload.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weftline.ground.metrics import SOURCEMAP_UPLOADS
from weftline.ground.projects import ApiError, Projects, authorize, storage_unavailable
from weftline.ground.rejections import Reason, Rejected
from weftline.ingest.limits import read_body
from weftline.storage import sourcemap_store as store
from weftline.storage.clickhouse import ClickHouse, StorageError
from weftline.storage.sourcemap_store import (
    MINIFIED,
    SOURCE_MAP,
    Artifact,
    normalize_debug_id,
    tilde_url,
)

MAX_FILES = 1000
MAX_URL = 2000
MAX_RELEASE = 200
_SOURCEMAP_COMMENT_RE = re.compile(rb"//[#@]\s*sourceMappingURL=(\S+)\s*$", re.M)
_DEBUG_ID_COMMENT_RE = re.compile(rb"//[#@]\s*debugId=([0-9a-fA-F-]{32,36})\s*$", re.M)


class UploadError(Rejected):
    """An upload that can never be stored (what the pure parsing functions raise)."""


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """RFC 7578 form data → parts, parsed by python-multipart (a body without its closing
    boundary, or with a part that names no field, is refused)."""
    _ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(Reason.BAD_MULTIPART, "multipart/form-data without a boundary")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    field: list[bytes] = []
    value: list[bytes] = []
    data: list[bytes] = []
    ended = False

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_end() -> None:
        headers[b"".join(field).strip().lower()] = b"".join(value)
        field.clear()
        value.clear()

    def on_part_end() -> None:
        _disp, opts = parse_options_header(headers.get(b"content-disposition", b""))
        name = opts.get(b"name")
        if name is None:
            raise UploadError(Reason.BAD_MULTIPART, "part without a Content-Disposition name")
        filename = opts.get(b"filename")
        parts.append(
            Part(
                name.decode("utf-8", "replace"),
                filename.decode("utf-8", "replace") if filename is not None else None,
                b"".join(data),
            )
        )
        if len(parts) > MAX_FILES:
            raise UploadError(Reason.TOO_MANY_FILES, f"more than {MAX_FILES} parts")

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": lambda b, s, e: field.append(b[s:e]),
            "on_header_value": lambda b, s, e: value.append(b[s:e]),
            "on_header_end": on_header_end,
            "on_part_data": lambda b, s, e: data.append(b[s:e]),
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise UploadError(Reason.BAD_MULTIPART, f"malformed multipart body: {e}") from None
    if not ended or not parts:
        raise UploadError(
            Reason.BAD_MULTIPART, "multipart body has no parts or no closing boundary"
        )
    return parts


def artifact_of(url: str, data: bytes, release: str, debug_id: str) -> Artifact:
    """One uploaded file → an artifact; raises `UploadError` if it is neither a valid
    source map nor UTF-8 text."""
    if not url or len(url) > MAX_URL:
        raise UploadError(Reason.BAD_URL, "each file needs a URL (url or url_prefix + file name)")
    turl = tilde_url(url)
    obj = None
    stripped = data.lstrip()
    if stripped.startswith(b"{"):
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
    if isinstance(obj, dict) and ("mappings" in obj or "sections" in obj):
        _check_sourcemap(data, turl)
        did = debug_id or normalize_debug_id(obj.get("debug_id") or obj.get("debugId"))
        kind, ref = SOURCE_MAP, ""
    else:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(
                Reason.BAD_FILE, f"{turl}: neither a source map nor UTF-8 JavaScript"
            ) from None
        kind = MINIFIED
        found = _DEBUG_ID_COMMENT_RE.findall(data[-4096:])
        did = debug_id or (normalize_debug_id(found[-1].decode()) if found else "")
        ref = sourcemap_ref(turl, data)
    if not release and not did:
        raise UploadError(
            Reason.NO_RELEASE, f"{turl}: give a release, or upload files that carry a debug id"
        )
    return Artifact(
        release=release,
        url=turl,
        kind=kind,
        debug_id=did,
        sourcemap_url=ref,
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        content=data,
    )


def _check_sourcemap(data: bytes, url: str) -> None:
    from symbolic.sourcemap import SourceMapView

    try:
        SourceMapView.from_json_bytes(data)
    except Exception as e:  # symbolic raises its own error classes
        raise UploadError(Reason.BAD_SOURCEMAP, f"{url}: not a valid source map: {e}") from None


def sourcemap_ref(file_url: str, minified: bytes) -> str:
    """The minified file's `sourceMappingURL`, resolved against its own `~/` URL;
    '' when absent or inline (`data:`)."""
    found = _SOURCEMAP_COMMENT_RE.findall(minified[-4096:])
    if not found:
        return ""
    ref = found[-1].decode("utf-8", "replace")
    if ref.startswith("data:"):
        return ""
    if urlsplit(ref).scheme or ref.startswith(("/", "~")):
        return tilde_url(ref)
    return tilde_url(posixpath.join(posixpath.dirname(file_url[1:]), ref))


def parse_upload(
    content_type: str, body: bytes, query: dict[str, str]
) -> tuple[str, list[Artifact]]:
    """Pure: the request (content type, body, query parameters) → (release, artifacts)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    fields = dict(query)
    files: list[tuple[str, bytes]] = []
    if ctype == "multipart/form-data":
        parts = parse_multipart(content_type, body)
        for p in parts:
            if p.filename is None:
                try:
                    fields[p.name] = p.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise UploadError(
                        Reason.BAD_FIELD, f"form field {p.name!r} is not UTF-8"
                    ) from None
        prefix = fields.get("url_prefix", "~/")
        for p in parts:
            if p.filename is not None:
                base = posixpath.basename(p.filename.replace("\\", "/"))
                if not base:
                    raise UploadError(Reason.BAD_URL, "a file part without a file name")
                files.append((prefix.rstrip("/") + "/" + base, p.data))
    else:
        files.append((fields.get("url", ""), body))
    release = fields.get("release", "").strip()
    if len(release) > MAX_RELEASE:
        raise UploadError(Reason.BAD_RELEASE, f"release longer than {MAX_RELEASE} characters")
    debug_id = ""
    if fields.get("debug_id"):
        debug_id = normalize_debug_id(fields["debug_id"])
        if not debug_id:
            raise UploadError(Reason.BAD_DEBUG_ID, "debug_id must be a UUID")
    if not files:
        raise UploadError(Reason.NO_FILES, "no file in the request")
    return release, [artifact_of(url, data, release, debug_id) for url, data in files]


class SourcemapUpload:
    def __init__(
        self,
        projects: Projects,
        ch: Callable[[], ClickHouse | None],
        max_bytes: int,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self.projects = projects
        self._ch = ch
        self.max_bytes = max_bytes
        self.on_stored = on_stored

    def routes(self) -> list[Route]:
        return [Route("/api/v1/sourcemaps", self.handle, methods=["GET", "POST"])]

    async def handle(self, request: Request) -> Response:
        try:
            project = authorize(request, self.projects)
            ch = self._ch()
            if ch is None:
                raise ApiError(Reason.STORAGE_UNAVAILABLE, "this process has no ClickHouse")
            if request.method == "GET":
                release = request.query_params.get("release")
                rows = await asyncio.to_thread(store.list_artifacts, ch, project.id, release)
                return JSONResponse({"project_id": project.id, "artifacts": rows})
            body = await read_body(request, self.max_bytes)
            release, artifacts = parse_upload(
                request.headers.get("content-type", ""), body, dict(request.query_params)
            )
            await asyncio.to_thread(store.insert_artifacts, ch, project.id, artifacts)
        except ApiError as e:
            SOURCEMAP_UPLOADS.labels(e.error).inc()
            return e.response()
        except Rejected as e:  # UploadError included
            SOURCEMAP_UPLOADS.labels(e.reason).inc()
            return ApiError(e.reason, e.message, status=e.status).response()
        except StorageError as e:
            SOURCEMAP_UPLOADS.labels("storage_unavailable").inc()
            return storage_unavailable(e).response()
        SOURCEMAP_UPLOADS.labels("stored").inc(len(artifacts))
        if self.on_stored is not None:
            self.on_stored(project.id)
        return JSONResponse(
            {
                "project_id": project.id,
                "release": release,
                "files": [
                    {
                        "url": a.url,
                        "kind": a.kind,
                        "debug_id": a.debug_id,
                        "sourcemap_url": a.sourcemap_url,
                        "sha1": a.sha1,
                        "size": len(a.content),
                    }
                    for a in artifacts
                ],
            },
            status_code=201,
        )
