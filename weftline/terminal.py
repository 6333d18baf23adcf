"""`weftline session|trace|issues`: the read API in a terminal.

They talk to a running Weftline over HTTP (in embedded mode the server owns the chDB
folder, so reading it directly would have to wait for it to stop).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from weftline.cli_args import query_token as _token
from weftline.cli_args import settings_from_args as _settings
from weftline.dashboards.debug.ui import ICONS as BADGES
from weftline.ground.config import Settings

COLORS = {
    "error": "31",
    "warning": "33",
    "agent": "35",
    "span": "36",
    "click": "34",
    "network": "32",
    "page": "37",
    "log": "90",
}
ICONS = BADGES  # the same short badges as the web view


def _paint(text: str, code: str | None, on: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if on and code else text


def _get(args: argparse.Namespace, settings: Settings, path: str, **params: Any) -> Any:
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    try:
        r = httpx.get(
            url + path,
            params={k: v for k, v in params.items() if v is not None},
            headers={"authorization": f"Bearer {_token(args, settings)}"},
            timeout=30,
        )
    except httpx.HTTPError as e:
        raise SystemExit(f"weftline: cannot reach {url}: {e} (is `weftline up` running?)") from e
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise SystemExit(f"weftline: {r.status_code}: {detail}")
    return r.json()


def print_session(doc: dict[str, Any], color: bool, out=sys.stdout) -> None:
    items = doc["items"]
    print(f"session {doc['session_id']}: {len(items)} items, {len(doc['traces'])} traces", file=out)
    for t in doc["traces"]:
        print(f"  trace {t['trace_id']}  ({t['reason']})", file=out)
    for i in items:
        code = COLORS["error"] if i["severity"] == "error" else COLORS.get(i["kind"])
        line = f"{i['ts'][11:23]}  {ICONS.get(i['kind'], i['kind'][:3].upper())}  {i['title']}"
        print(
            _paint(line, code, color) + _paint(f"  [{i['source']}: {i['reason']}]", "90", color),
            file=out,
        )


def print_trace(doc: dict[str, Any], color: bool, out=sys.stdout) -> None:
    print(
        f"trace {doc['trace_id']}: {doc['span_count']} spans, {doc['duration_ms']:.1f} ms, "
        f"services {', '.join(doc['services'])}",
        file=out,
    )
    for s in doc.get("sessions", []):
        print(f"  session {s['session_id']}  ({s['reason']})", file=out)
    for s in doc["spans"]:
        bad = s.get("status") == "error" or s.get("status_code") == "error"
        line = (
            f"{'  ' * s['depth']}{s['service']}: {s['name']}  "
            f"+{s['offset_ms']:.1f} ms  {s['duration_ms']:.1f} ms"
        )
        print(_paint(line, COLORS["error"] if bad else None, color), file=out)


def print_issues(doc: dict[str, Any], color: bool, out=sys.stdout) -> None:
    issues = doc.get("issues", [])
    print(f"{len(issues)} issues", file=out)
    for g in issues:
        line = (
            f"{g.get('count', 0):>6}  {g.get('status', ''):<10}  {g.get('level', ''):<7}  "
            f"{g.get('title', '')}  ({g.get('culprit', '')})  {g.get('group_id', '')}"
        )
        print(_paint(line, COLORS["error"] if g.get("regressed") else None, color), file=out)


def add_commands(sub: argparse._SubParsersAction, common) -> None:
    def reader(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_ + ". Talks to a running "
            "Weftline (--url, default from the configuration).",
        )
        common(p, http=True)
        p.add_argument("--url", help="Weftline's URL (default http://HOST:PORT)")
        p.add_argument(
            "--token",
            help="query token (default: WEFTLINE_TOKEN, the first "
            "configured project, or the demo project)",
        )
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
        return p

    p = reader("session", "print one session's timeline")
    p.add_argument("session_id")
    p.set_defaults(func=cmd_session)
    p = reader("trace", "print one trace as a tree")
    p.add_argument("trace_id")
    p.set_defaults(func=cmd_trace)
    p = reader("issues", "list error issues (Sentry groups)")
    p.add_argument("--status", choices=["unresolved", "resolved", "ignored"])
    p.set_defaults(func=cmd_issues)


def _color(args: argparse.Namespace) -> bool:
    return args.color == "always" or (args.color == "auto" and sys.stdout.isatty())


def _run(args: argparse.Namespace, path: str, printer, **params: Any) -> int:

    settings = _settings(args)
    doc = _get(args, settings, path, **params)
    if args.json:
        import json

        print(json.dumps(doc, indent=2))
    else:
        printer(doc, _color(args))
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    return _run(args, f"/api/v1/sessions/{args.session_id}", print_session)


def cmd_trace(args: argparse.Namespace) -> int:
    return _run(args, f"/api/v1/traces/{args.trace_id}", print_trace)


def cmd_issues(args: argparse.Namespace) -> int:
    return _run(args, "/api/v1/issues", print_issues, status=args.status)
