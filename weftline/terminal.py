"""`weftline session|trace|issues`: the read API in a terminal.

They talk to a running Weftline over HTTP (in embedded mode the server owns the chDB
folder, so reading it directly would have to wait for it to stop).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from weftline.cli_args import CliError
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
        raise CliError(
            f"cannot reach Weftline at {url} ({e}): is `weftline up` running? (--url URL)", 3
        ) from e
    return check_answer(r, url)


def check_answer(r: httpx.Response, url: str, ok: tuple[int, ...] = (200,)) -> Any:
    """The JSON of a read API answer, or one line saying what to do."""
    if r.status_code in ok:
        return r.json()
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        detail = r.text[:200]
    if r.status_code in (401, 403):
        raise CliError(f"{url} refused the query token ({detail}): pass --token TOKEN", 2)
    if r.status_code == 404:
        raise CliError(f"not found: {detail}", 1)
    raise CliError(f"{url} answered {r.status_code}: {detail}", 3 if r.status_code >= 500 else 1)


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


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict | list):
        import json

        return json.dumps(v, default=str)
    return str(v).replace("\n", " ")


def print_table(
    rows: list[dict[str, Any]],
    color: bool,
    columns: list[str] | None = None,
    headers: list[str] | None = None,
    out=sys.stdout,
    paint_row=None,
    max_width: int = 80,
) -> None:
    """Columns with a header line; `paint_row(row)` gives a colour code (terminals only)."""
    if columns is None:
        columns = list(rows[0]) if rows else []
    headers = headers or [c.upper() for c in columns]
    cells = [[_cell(r.get(c))[:max_width] for c in columns] for r in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for r, row in zip(rows, cells, strict=True):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        print(_paint(line, paint_row(r) if paint_row else None, color), file=out)


def print_issues(doc: dict[str, Any], color: bool, out=sys.stdout) -> None:
    issues = [
        {**g, "flag": "regressed" if g.get("regressed") else ""} for g in doc.get("issues", [])
    ]
    print_table(
        issues,
        color,
        ["count", "status", "flag", "level", "title", "culprit", "last_seen", "group_id"],
        ["COUNT", "STATUS", "FLAG", "LEVEL", "TITLE", "CULPRIT", "LAST SEEN", "GROUP"],
        out=out,
        paint_row=lambda g: COLORS["error"] if g.get("regressed") else None,
        max_width=60,
    )
    print(f"{len(issues)} issues", file=out)


def add_client_options(p: argparse.ArgumentParser) -> None:
    """What every command that calls the read API of a running Weftline takes."""
    p.add_argument(
        "--url",
        help="URL of the running Weftline to ask (default: http://HOST:PORT from --host, "
        "--port or the configuration: http://127.0.0.1:8700)",
    )
    p.add_argument(
        "--token",
        help="the project's query token, sent as Bearer (default: WEFTLINE_TOKEN, the first "
        "configured project, or the demo project in --data-dir)",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of text")


def add_commands(sub: argparse._SubParsersAction, common) -> None:
    def reader(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_ + ". Talks to a running "
            "Weftline (--url, default from the configuration).",
        )
        common(p, client=True)
        add_client_options(p)
        p.add_argument(
            "--color",
            choices=["auto", "always", "never"],
            default="auto",
            help="auto (default): colour only on a terminal, and never with NO_COLOR set",
        )
        return p

    p = reader("session", "print one session's timeline")
    p.add_argument("session_id", help="the OpenReplay session id")
    p.set_defaults(func=cmd_session)
    p = reader("trace", "print one trace as a tree")
    p.add_argument("trace_id", help="32 hex characters")
    p.set_defaults(func=cmd_trace)
    p = reader("issues", "list error issues (Sentry groups)")
    p.add_argument(
        "--status", choices=["unresolved", "resolved", "ignored"], help="only issues in this state"
    )
    p.set_defaults(func=cmd_issues)


def _color(args: argparse.Namespace) -> bool:
    import os

    if args.color == "auto":
        return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    return args.color == "always"


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
