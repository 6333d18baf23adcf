"""What every `weftline` subcommand reads from its arguments: the settings (config file,
data folder, address) and, for the commands that call the read API, the query token."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path

from weftline.ground.config import DEMO_FILE, Settings, load_settings

# Exit codes, the same for every command (README "Exit codes", `weftline --help`).
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command ran and found problems (a check failed, a rule breaches)
EXIT_USAGE = 2  # something to fix on this side: arguments, configuration, data folder, port
EXIT_UNREACHABLE = 3  # a service did not answer: Weftline, ClickHouse or Valkey
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    "exit codes: 0 ok; 1 the command found problems (a check failed); 2 something to fix "
    "here (arguments, configuration, data folder, port in use); 3 a service did not answer "
    "(Weftline, ClickHouse, Valkey); 130 interrupted (Ctrl-C). Errors are one line; "
    "--debug prints the traceback."
)


class CliError(Exception):
    """What went wrong and what to do, in one line; `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings, or one line naming the bad value (file, key, what is wrong)."""
    from pydantic import ValidationError

    path = args.config or os.environ.get("WEFTLINE_CONFIG")
    try:
        return load_settings(
            args.config,
            data_dir=getattr(args, "data_dir", None),
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
        )
    except FileNotFoundError:
        raise CliError(
            f"configuration file {path} not found: fix --config or WEFTLINE_CONFIG"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise CliError(f"{path} is not valid TOML ({e}): fix that line") from e
    except ValidationError as e:
        raise CliError(describe_validation(e, path)) from e


def describe_validation(e, path: str | None) -> str:
    """`port = "x"` → `weftline.toml: port: Input should be a valid integer (got 'x')`."""
    problems = []
    for err in e.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        problems.append(f"{where}: {err['msg']}{shown}")
    more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
    source = f"{path}: " if path else "configuration: "
    return (
        source + "; ".join(problems) + more + " — fix the value in the file or the "
        "WEFTLINE_* environment variable"
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
    raise CliError(
        f"no query token: pass --token, set WEFTLINE_TOKEN, or point --data-dir at the "
        f"folder of a `weftline up` (none found in {Path(settings.data_dir).resolve()})"
    )
