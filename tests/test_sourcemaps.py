"""Source maps: real minified bundles built by esbuild at test time from
tests/browser/sentry/sm/src, uploaded through the CLI and the HTTP endpoint, and real
`@sentry/browser` errors from them in headless Chromium symbolicated by the worker.

Two builds of the same code: build 2 has an extra module, so every minified position
and mangled name differs. Unsymbolicated, the same bug would make two groups; with the
maps it makes one, whose frames point at the original source."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import orjson
import pytest

from tests.conftest import wait_for, weftline_cmd, weftline_env
from tests.test_sentry_browser import ARGS, CHROMIUM, build_bundle
from weftline.embedded import free_port
from weftline.enrich.sentry_grouping import group_event
from weftline.enrich.sourcemaps import Symbolicator
from weftline.ingest.sourcemaps import parse_upload
from weftline.storage import sentry_queries as q
from weftline.storage import sourcemap_store

PAGE_DIR = Path(__file__).parent / "browser" / "sentry"
SM_DIR = PAGE_DIR / "sm"
ESBUILD = PAGE_DIR / "node_modules" / ".bin" / "esbuild"
DEBUG_ID = str(uuid.UUID("c0ffee00-1234-4abc-8def-0123456789ab"))
# What sentry-cli's `sourcemaps inject` adds: the SDK maps stack file names to debug
# ids through this global and sends them as debug_meta images.
DEBUG_ID_SNIPPET = (
    "!function(){try{var e=globalThis,n=(new e.Error).stack;n&&(e._sentryDebugIds="
    'e._sentryDebugIds||{},e._sentryDebugIds[n]="' + DEBUG_ID + '")}catch(e){}}();'
)
THROW_LINE = '    throw new Error("Total too large: " + amount);\n'


def esbuild(build: str, debug_id: bool = False) -> tuple[Path, Path]:
    """Build `src/main-{build}.js` minified with a map into sm/out/{build}; → (js, map)."""
    if not ESBUILD.exists():
        subprocess.run(["npm", "ci"], cwd=PAGE_DIR, check=True, timeout=300)
    out = SM_DIR / "out" / build
    shutil.rmtree(out, ignore_errors=True)
    args = [
        str(ESBUILD),
        f"src/main-{build}.js",
        "--bundle",
        "--minify",
        "--sourcemap",
        "--format=iife",
        "--entry-names=app-[hash]",
        f"--outdir=out/{build}",
        "--log-level=warning",
    ]
    if debug_id:
        args.append("--banner:js=" + DEBUG_ID_SNIPPET)
    subprocess.run(args, cwd=SM_DIR, check=True, timeout=120)
    js = next(out.glob("*.js"))
    smap = js.with_name(js.name + ".map")
    if debug_id:
        doc = json.loads(smap.read_text())
        doc["debug_id"] = DEBUG_ID
        smap.write_text(json.dumps(doc))
        js.write_text(js.read_text() + f"\n//# debugId={DEBUG_ID}\n")
    return js, smap


def node_frame(js: Path) -> tuple[str, int, int]:
    """Run the real bundle in node; the crash frame's minified function, 1-based line
    and column."""
    script = (
        f"globalThis.window = globalThis; require({json.dumps(str(js))});"
        "try { runCheckout() } catch (e) { console.log(e.stack) }"
    )
    stack = subprocess.run(
        ["node", "-e", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    m = re.search(r"at (\S+) \(\S*" + re.escape(js.name) + r":(\d+):(\d+)\)", stack)
    assert m, stack
    return m.group(1), int(m.group(2)), int(m.group(3))


def js_event(url: str, frame: tuple[str, int, int], release: str, debug_meta: bool = False) -> dict:
    func, line, col = frame
    ev = {
        "platform": "javascript",
        "release": release,
        "exception": {
            "values": [
                {
                    "type": "Error",
                    "value": "Total too large: 550",
                    "stacktrace": {
                        "frames": [
                            {
                                "filename": "/page.html",
                                "abs_path": "http://h/page.html",
                                "function": "?",
                                "lineno": 3,
                                "colno": 1,
                                "in_app": True,
                            },
                            {
                                "filename": url,
                                "abs_path": url,
                                "function": func,
                                "lineno": line,
                                "colno": col,
                                "in_app": True,
                            },
                        ]
                    },
                }
            ]
        },
    }
    if debug_meta:
        ev["debug_meta"] = {
            "images": [{"type": "sourcemap", "code_file": url, "debug_id": DEBUG_ID}]
        }
    return ev


def in_memory(artifacts: list[sourcemap_store.Artifact]) -> Symbolicator:
    calls: list[str] = []

    def by_url(p: int, release: str, urls: list[str]):
        calls.append("url")
        return [a for a in artifacts if a.release == release and a.url in urls]

    def by_debug_id(p: int, did: str):
        calls.append("debug_id")
        return [a for a in artifacts if a.debug_id == did]

    sym = Symbolicator(by_url, by_debug_id)
    sym.calls = calls  # type: ignore[attr-defined]
    return sym


def upload(js: Path, smap: Path, release: str, prefix: str) -> list[sourcemap_store.Artifact]:
    """The upload parser's view of the CLI's request (map + minified file)."""
    boundary = "b0undary"
    body = b""
    for name, value in (("release", release), ("url_prefix", prefix)):
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for f in (smap, js):
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{f.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + f.read_bytes()
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return parse_upload(f"multipart/form-data; boundary={boundary}", body, {})[1]


def test_real_bundle_frames_symbolicated_and_grouped_across_builds():
    js1, map1 = esbuild("v1")
    js2, map2 = esbuild("v2", debug_id=True)
    f1, f2 = node_frame(js1), node_frame(js2)
    assert f1 != f2
    url1 = f"http://cdn.example/static/js/{js1.name}"
    url2 = f"http://cdn.example/assets/{js2.name}"
    arts = upload(js1, map1, "web@1", "~/static/js") + upload(js2, map2, "", "~/assets")
    assert {a.kind for a in arts} == {"source_map", "minified_source"}
    assert all(a.debug_id == DEBUG_ID for a in arts if a.url.startswith("~/assets"))
    sym = in_memory(arts)
    raw1 = js_event(url1, f1, "web@1")
    raw2 = js_event(url2, f2, "web@2", debug_meta=True)  # release has no files
    # Unsymbolicated, the two builds are two groups (other mangled names).
    assert group_event(raw1).group_id != group_event(raw2).group_id
    ev1, ev2 = sym(raw1, 1), sym(raw2, 1)
    for ev, url, (func, line, col) in ((ev1, url1, f1), (ev2, url2, f2)):
        exc = ev["exception"]["values"][0]
        crash = exc["stacktrace"]["frames"][-1]
        assert crash["filename"] == "src/app.js"
        assert (crash["lineno"], crash["colno"]) == (6, 11)  # `new Error` in the source
        assert crash["function"] == "checkout"
        assert crash["context_line"] == THROW_LINE
        assert crash["pre_context"][-1] == "  if (amount > 100) {\n"
        assert crash["post_context"][0] == "  }\n"
        assert crash["data"]["minified"] == {
            "abs_path": url,
            "lineno": line,
            "colno": col,
            "function": func,
        }
        assert exc["raw_stacktrace"]["frames"][-1]["lineno"] == line
        assert exc["stacktrace"]["frames"][0]["abs_path"] == "http://h/page.html"  # no map
    assert ev1["exception"]["values"][0]["stacktrace"]["frames"][-1]["abs_path"] == (
        "http://cdn.example/src/app.js"  # ../../src/app.js from the map
    )
    g1, g2 = group_event(ev1), group_event(ev2)
    assert g1.group_id == g2.group_id
    assert "context:" + THROW_LINE.strip() in "".join(g1.values)
    assert g1.culprit == "checkout(src/app.js)"
    # Both lookup paths were used; a second event is served from the cache.
    assert sorted(set(sym.calls)) == ["debug_id", "url"]
    n = len(sym.calls)
    sym(js_event(url1, f1, "web@1"), 1)
    assert len(sym.calls) == n
    # A release without files leaves the frame as sent, and the input is never mutated.
    other = js_event(url1, f1, "web@9")
    assert sym(other, 1) is other
    assert raw1 == js_event(url1, f1, "web@1")


def test_lru_is_bounded():
    js1, map1 = esbuild("v1")
    arts = upload(js1, map1, "r", "~/a") + upload(js1, map1, "s", "~/a")
    arts += upload(js1, map1, "t", "~/a")
    sym = in_memory(arts)
    sym.cache.max_entries = 2
    frame = node_frame(js1)
    for release in ("r", "s", "t"):
        out = sym(js_event(f"http://x/a/{js1.name}", frame, release), 1)
        assert out["exception"]["values"][0]["stacktrace"]["frames"][-1]["lineno"] == 6
    assert len(sym.cache) == 2


@pytest.fixture
def sm_server():
    build_bundle()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGE_DIR))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Chromium is not installed")
def test_browser_errors_from_two_builds_symbolicated_one_group(
    settings, valkey, ch, serve, http, sm_server
):
    from playwright.sync_api import sync_playwright

    app = serve(settings, valkey.url, ch=ch)
    p = settings.projects[0]
    js1, map1 = esbuild("v1")
    js2, map2 = esbuild("v2", debug_id=True)
    cli = ["--url", app.url, f"--token={p.query_token}"]
    # Build 1 by release + URL; `~/…` as the shell would hand it over unquoted.
    home_prefix = str(Path.home() / "sm" / "out" / "v1")
    for args in (
        ["--release", "web@1.0.0", "--url-prefix", home_prefix, str(map1)],
        ["--url-prefix", "~/sm/out/v2", str(map2)],  # by debug id: no release
    ):
        r = subprocess.run(
            weftline_cmd("sourcemaps", "upload", *cli, *args),
            env=weftline_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "2 files uploaded" in r.stdout
    listed = http.get(
        f"{app.url}/api/v1/sourcemaps",
        headers={"authorization": f"Bearer {p.query_token}"},
    ).json()["artifacts"]
    assert {(a["url"], a["kind"]) for a in listed} == {
        (f"~/sm/out/v1/{js1.name}", "minified_source"),
        (f"~/sm/out/v1/{js1.name}.map", "source_map"),
        (f"~/sm/out/v2/{js2.name}", "minified_source"),
        (f"~/sm/out/v2/{js2.name}.map", "source_map"),
    }
    dsn = f"http://{p.public_key}@127.0.0.1:{app.port}/{p.id}"
    failed: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for build, js, release in (("v1", js1, "web@1.0.0"), ("v2", js2, "web@2.0.0")):
                page = browser.new_page()
                page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
                page.goto(f"{sm_server}/sm/page.html?dsn={dsn}&release={release}")
                page.add_script_tag(url=f"{sm_server}/sm/out/{build}/{js.name}")
                page.evaluate(
                    "() => { try { runCheckout() } catch (e) { Sentry.captureException(e) } }"
                )
                assert page.evaluate("Sentry.flush(5000)")
                page.close()
        finally:
            browser.close()
    assert failed == []
    wait_for(lambda: q.count_errors(ch, p.id) == 2, timeout=20)
    issues = q.list_issues(ch, p.id, None, None, None, 10)
    # One bug, two builds: one group.
    assert len(issues) == 1 and issues[0]["count"] == 2, [
        q.latest_event(ch, p.id, i["group_id"])["exceptions"] for i in issues
    ]
    assert issues[0]["culprit"] == "checkout(src/app.js)"
    rows = ch.query(
        f"SELECT release, exceptions FROM {ch.database}.sentry_errors FINAL"
        " WHERE project_id = {p:UInt32} ORDER BY release",
        {"p": p.id},
    )
    assert [r["release"] for r in rows] == ["web@1.0.0", "web@2.0.0"]
    for r, build, js in zip(rows, ("v1", "v2"), (js1, js2), strict=True):
        exc = orjson.loads(r["exceptions"])[-1]
        crash = exc["stacktrace"]["frames"][-1]
        assert crash["filename"] == "src/app.js"
        assert crash["abs_path"] == f"{sm_server}/sm/src/app.js"
        assert (crash["lineno"], crash["colno"]) == (6, 11)
        assert crash["function"] == "checkout"
        assert crash["context_line"] == THROW_LINE
        assert len(crash["pre_context"]) == 5 and len(crash["post_context"]) == 3
        assert crash["data"]["sourcemap"] == f"~/sm/out/{build}/{js.name}.map"
        assert crash["data"]["minified"]["abs_path"] == f"{sm_server}/sm/out/{build}/{js.name}"
        caller = exc["stacktrace"]["frames"][-2]
        assert (caller["filename"], caller["lineno"], caller["function"]) == (
            "src/run.js",
            4,
            "runCheckout",
        )
        assert exc["raw_stacktrace"]["frames"][-1]["filename"].endswith(js.name)  # as sent
