"""What every `weftline` subcommand reads from its arguments: the settings (config file,
data folder, address) and, for the commands that call the read API, the query token."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

from weftline.ground.config import DEMO_FILE, Settings, load_settings


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def query_token(args: argparse.Namespace, settings: Settings) -> str:
    if args.token or os.environ.get("WEFTLINE_TOKEN"):
        return args.token or os.environ["WEFTLINE_TOKEN"]
    if settings.projects:
        return settings.projects[0].query_token
    demo = Path(settings.data_dir) / DEMO_FILE
    if demo.exists():
        with open(demo, "rb") as f:
            return tomllib.load(f)["query_token"]
    raise SystemExit("weftline: no query token: pass --token or set WEFTLINE_TOKEN")
