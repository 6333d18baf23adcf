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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dashboards.api import ApiError, authorize
from ingest.auth import Projects
from ingest.limits import LimitExceeded, read_body
from storage import sourcemap_store as store
from storage.clickhouse import ClickHouse, StorageError
from storage.sourcemap_store import MINIFIED, SOURCE_MAP, Artifact
from weftline.metrics import SOURCEMAP_UPLOADS

MAX_FILES = 1000
MAX_URL = 2000
MAX_RELEASE = 200
_BOUNDARY_RE = re.compile(r"""boundary=(?:"([^"]{1,200})"|([^\s;]{1,200}))""", re.I)
_DISPOSITION_PARAM_RE = re.compile(r"""\b(name|filename)=(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))""")
_SOURCEMAP_COMMENT_RE = re.compile(rb"//[#@]\s*sourceMappingURL=(\S+)\s*$", re.M)
_DEBUG_ID_COMMENT_RE = re.compile(rb"//[#@]\s*debugId=([0-9a-fA-F-]{32,36})\s*$", re.M)


class UploadError(Exception):
    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    data: bytes


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


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """RFC 7578 form data → parts. Strict on structure, lenient on a missing final CRLF."""
    m = _BOUNDARY_RE.search(content_type)
    if not m:
        raise UploadError("bad_multipart", "multipart/form-data without a boundary")
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise UploadError("bad_multipart", "multipart body has no parts or no closing boundary")
    # chunks[0] is the preamble; the last chunk must start with "--" (the close).
    if not chunks[-1].startswith(b"--"):
        raise UploadError("bad_multipart", "multipart body has no closing boundary")
    parts: list[Part] = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n"):
            raise UploadError("bad_multipart", "boundary not followed by CRLF")
        head, sep, data = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            raise UploadError("bad_multipart", "part without a blank line after its headers")
        if not data.endswith(b"\r\n"):
            raise UploadError("bad_multipart", "part data not followed by CRLF")
        name, filename = None, None
        for line in head.split(b"\r\n"):
            key, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise UploadError("bad_multipart", "malformed part header")
            if key.strip().lower() == "content-disposition":
                for pm in _DISPOSITION_PARAM_RE.finditer(value):
                    v = pm.group(2) if pm.group(2) is not None else pm.group(3)
                    v = re.sub(r"\\(.)", r"\1", v)
                    if pm.group(1) == "name":
                        name = v
                    else:
                        filename = v
        if name is None:
            raise UploadError("bad_multipart", "part without a Content-Disposition name")
        parts.append(Part(name, filename, data[:-2]))
        if len(parts) > MAX_FILES:
            raise UploadError("too_many_files", f"more than {MAX_FILES} parts")
    return parts


def artifact_of(url: str, data: bytes, release: str, debug_id: str) -> Artifact:
    """One uploaded file → an artifact; raises `UploadError` if it is neither a valid
    source map nor UTF-8 text."""
    if not url or len(url) > MAX_URL:
        raise UploadError("bad_url", "each file needs a URL (url or url_prefix + file name)")
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
                "bad_file", f"{turl}: neither a source map nor UTF-8 JavaScript"
            ) from None
        kind = MINIFIED
        found = _DEBUG_ID_COMMENT_RE.findall(data[-4096:])
        did = debug_id or (normalize_debug_id(found[-1].decode()) if found else "")
        ref = sourcemap_ref(turl, data)
    if not release and not did:
        raise UploadError(
            "no_release", f"{turl}: give a release, or upload files that carry a debug id"
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
        raise UploadError("bad_sourcemap", f"{url}: not a valid source map: {e}") from None


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
                    raise UploadError("bad_field", f"form field {p.name!r} is not UTF-8") from None
        prefix = fields.get("url_prefix", "~/")
        for p in parts:
            if p.filename is not None:
                base = posixpath.basename(p.filename.replace("\\", "/"))
                if not base:
                    raise UploadError("bad_url", "a file part without a file name")
                files.append((prefix.rstrip("/") + "/" + base, p.data))
    else:
        files.append((fields.get("url", ""), body))
    release = fields.get("release", "").strip()
    if len(release) > MAX_RELEASE:
        raise UploadError("bad_release", f"release longer than {MAX_RELEASE} characters")
    debug_id = ""
    if fields.get("debug_id"):
        debug_id = normalize_debug_id(fields["debug_id"])
        if not debug_id:
            raise UploadError("bad_debug_id", "debug_id must be a UUID")
    if not files:
        raise UploadError("no_files", "no file in the request")
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
                raise ApiError(503, "storage_unavailable", "this process has no ClickHouse")
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
        except LimitExceeded as e:
            SOURCEMAP_UPLOADS.labels(e.reason).inc()
            return ApiError(e.status, e.reason, e.message).response()
        except UploadError as e:
            SOURCEMAP_UPLOADS.labels(e.reason).inc()
            return ApiError(e.status, e.reason, e.message).response()
        except StorageError as e:
            SOURCEMAP_UPLOADS.labels("storage_unavailable").inc()
            return ApiError(503, "storage_unavailable", str(e)[:500]).response()
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
