"""The source map upload parser (fuzzed) and the endpoint's answers."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weftline.ingest.sourcemaps import UploadError, parse_multipart, parse_upload, tilde_url

MAP = json.dumps(
    {
        "version": 3,
        "sources": ["../src/a.js"],
        "sourcesContent": ["function a() {\n  throw new Error('x');\n}\n"],
        "names": ["a"],
        "mappings": "AAAA,SAASA,IACP",
        "debugId": "C0FFEE00-1234-4ABC-8DEF-0123456789AB",
    }
).encode()
MINIFIED = b"function a(){throw new Error('x')}\n//# sourceMappingURL=a.min.js.map\n"


def form(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    body = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def test_tilde_urls():
    for u in (
        "~/static/a.js",
        "/static/a.js",
        "static/a.js",
        "https://cdn.x:8443/static/a.js?v=1#h",
    ):
        assert tilde_url(u) == "~/static/a.js"
    assert tilde_url("~/static/js/../a.js") == "~/static/a.js"


def test_multipart_map_and_minified():
    body = form(
        "xyz",
        [
            ("release", None, b"web@1"),
            ("url_prefix", None, b"https://cdn.x/js/"),
            ("file", "dist/a.min.js.map", MAP),
            ("file", "a.min.js", MINIFIED),
        ],
    )
    release, arts = parse_upload('multipart/form-data; boundary="xyz"', body, {})
    assert release == "web@1"
    smap, js = arts
    assert (smap.url, smap.kind, smap.debug_id) == (
        "~/js/a.min.js.map",
        "source_map",
        "c0ffee00-1234-4abc-8def-0123456789ab",
    )
    assert (js.url, js.kind, js.sourcemap_url) == (
        "~/js/a.min.js",
        "minified_source",
        "~/js/a.min.js.map",
    )
    assert smap.content == MAP


@pytest.mark.parametrize(
    ("ctype", "body", "query", "reason"),
    [
        (
            "application/json",
            b'{"version":3,"mappings":"!!!"}',
            {"url": "a.map", "release": "r"},
            "bad_sourcemap",
        ),
        ("application/json", MAP, {"release": "r"}, "bad_url"),
        ("application/octet-stream", b"\xff\xfe", {"url": "a.js", "release": "r"}, "bad_file"),
        ("text/javascript", b"var a;", {"url": "a.js"}, "no_release"),
        ("text/javascript", b"var a;", {"url": "a.js", "debug_id": "nope"}, "bad_debug_id"),
        ("multipart/form-data", b"", {}, "bad_multipart"),
        ("multipart/form-data; boundary=b", b"--b\r\nX\r\n--b--", {}, "bad_multipart"),
        ("multipart/form-data; boundary=b", b"--b--\r\n", {"release": "r"}, "bad_multipart"),
    ],
)
def test_bad_uploads(ctype, body, query, reason):
    with pytest.raises(UploadError) as e:
        parse_upload(ctype, body, query)
    assert e.value.reason == reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boundary=st.text(alphabet="abcXYZ019-_", min_size=1, max_size=20),
    data=st.binary(max_size=400),
    raw=st.binary(max_size=400),
)
def test_fuzz_parser_raises_only_upload_error(boundary, data, raw):
    for ctype, body in (
        (f"multipart/form-data; boundary={boundary}", raw),
        (f"multipart/form-data; boundary={boundary}", form(boundary, [("file", "a.js", data)])),
        (
            f"multipart/form-data; boundary={boundary}",
            form(boundary, [("file", "a.js", data)])[:-3] + raw,
        ),
        ("application/json", data),
    ):
        try:
            parse_upload(ctype, body, {"release": "r", "url": "~/a.js"})
        except UploadError:
            pass
    try:
        parse_multipart(f"multipart/form-data; boundary={boundary}", raw)
    except UploadError:
        pass


def test_endpoint(settings, valkey, ch, serve, http):
    settings.sourcemap_max_upload_bytes = 4096
    app = serve(settings, valkey.url, ch=ch)
    url = f"{app.url}/api/v1/sourcemaps"
    auth = {"authorization": f"Bearer {settings.projects[0].query_token}"}
    r = http.post(url, content=MAP, params={"url": "~/a.min.js.map", "release": "r"})
    assert r.status_code == 401
    r = http.post(url, content=MAP, params={"url": "~/a.min.js.map", "release": "r"}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["files"][0]["kind"] == "source_map"
    r = http.post(url, content=b"x" * 5000, params={"url": "~/b.js", "release": "r"}, headers=auth)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    r = http.post(
        url, content=b'{"mappings": 1}', params={"url": "~/c.map", "release": "r"}, headers=auth
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_sourcemap"
    metrics = http.get(f"{app.url}/metrics").text
    assert 'weftline_sourcemap_uploads_total{outcome="bad_sourcemap"}' in metrics
    listed = http.get(url, params={"release": "r"}, headers=auth).json()["artifacts"]
    assert [(a["url"], a["kind"], a["debug_id"]) for a in listed] == [
        ("~/a.min.js.map", "source_map", "c0ffee00-1234-4abc-8def-0123456789ab")
    ]
