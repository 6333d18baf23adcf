"""`weftline sourcemaps upload|list`: send built source maps to a running Weftline.

    weftline sourcemaps upload --release web@1.2.3 --url-prefix '~/static/js' dist/*.js.map

Each map goes up with its minified file beside it (`app.min.js` for `app.min.js.map`,
when it exists), which lets symbolication name functions from the minified scopes;
the files' URLs are the prefix + their names. One request per map, so the server's
size cap applies to one pair at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx

from weftline.cli_args import CliError
from weftline.cli_args import query_token as _token
from weftline.cli_args import settings_from_args as _settings
from weftline.terminal import add_client_options, check_answer, print_table

LIST_COLUMNS = (
    ["release", "kind", "url", "debug_id", "size", "uploaded_at"],
    ["RELEASE", "KIND", "URL", "DEBUG ID", "BYTES", "UPLOADED"],
)


def _prefix(raw: str) -> str:
    # An unquoted `~/static/js` reaches us expanded by the shell to $HOME/static/js;
    # a URL prefix never means the home folder, so the `~` is put back.
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (raw == home or raw.startswith(home + "/")):
        raw = "~" + raw[len(home) :]
    return raw


def add_commands(sub: argparse._SubParsersAction, common) -> None:
    p = sub.add_parser(
        "sourcemaps",
        help="upload JavaScript source maps (for Sentry browser errors)",
        description="Upload source maps to a running Weftline (--url, default from the "
        "configuration), or list the uploaded ones.",
    )
    ssub = p.add_subparsers(
        dest="sourcemaps_command", required=True, metavar="ACTION", help="upload or list"
    )
    for name, help_ in (("upload", "upload .map files"), ("list", "list uploaded files")):
        q = ssub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        common(q, client=True)
        add_client_options(q)
        q.add_argument("--release", help="the release the files belong to (Sentry `release`)")
        if name == "upload":
            q.add_argument(
                "--url-prefix",
                default="~/",
                help="URL of the folder the files are served from, '~/' standing for "
                "any scheme and host (default '~/')",
            )
            q.add_argument("--debug-id", help="debug id, if not in the files themselves")
            q.add_argument("files", nargs="+", type=Path, help=".map files")
            q.set_defaults(func=cmd_upload)
        else:
            q.set_defaults(func=cmd_list)


def _client(args: argparse.Namespace) -> tuple[str, dict[str, str]]:

    settings = _settings(args)
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    return url, {"authorization": f"Bearer {_token(args, settings)}"}


def _check(r: httpx.Response, url: str) -> dict:
    return check_answer(r, url, ok=(200, 201))


def _unreachable(url: str, e: Exception) -> CliError:
    return CliError(f"cannot reach Weftline at {url} ({e}): is it running? (--url URL)", 3)


def cmd_upload(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    data = {"url_prefix": _prefix(args.url_prefix)}
    if args.release:
        data["release"] = args.release
    if args.debug_id:
        data["debug_id"] = args.debug_id
    total = 0
    for path in args.files:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
        pair = [path]
        if path.name.endswith(".map"):
            minified = path.with_name(path.name[: -len(".map")])
            if minified.is_file():
                pair.append(minified)
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in pair]
        try:
            r = httpx.post(
                url + "/api/v1/sourcemaps", data=data, files=files, headers=headers, timeout=120
            )
        except httpx.HTTPError as e:
            raise _unreachable(url, e) from e
        answer = _check(r, url)
        if args.json:
            print(json.dumps(answer))
            total += len(answer["files"])
            continue
        for f in answer["files"]:
            total += 1
            did = f"  debug id {f['debug_id']}" if f["debug_id"] else ""
            print(f"{f['kind']:<16} {f['url']}  ({f['size']} bytes){did}")
    done = f"{total} files uploaded" + (f" for release {args.release}" if args.release else "")
    print(done, file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    url, headers = _client(args)
    params = {"release": args.release} if args.release else {}
    try:
        r = httpx.get(url + "/api/v1/sourcemaps", params=params, headers=headers, timeout=30)
    except httpx.HTTPError as e:
        raise _unreachable(url, e) from e
    doc = _check(r, url)
    if args.json:
        print(json.dumps(doc["artifacts"], indent=2))
        return 0
    print_table(doc["artifacts"], color=False, columns=LIST_COLUMNS[0], headers=LIST_COLUMNS[1])
    print(f"{len(doc['artifacts'])} files")
    return 0
