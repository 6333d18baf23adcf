"""`python -m tests.fault_injection ARGS…` runs `weftline ARGS…` with the crash tests'
fault injection installed; the production consumer loop has no hook for it.

With WEFTLINE_TEST_PAUSE=before_insert (or after_insert), every consumer's handler is
wrapped so that the worker writes WEFTLINE_TEST_PAUSE_FILE (its pid) and freezes just
before (or just after) its first insert, until the test SIGKILLs it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from weftline.enrich import stream_consumer


class PausingHandler:
    """Delegates to the real handler; freezes the whole process around `store`."""

    def __init__(self, inner: Any, point: str, marker: str | None) -> None:
        self._inner = inner
        self._point = point
        self._marker = marker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _pause(self) -> None:
        if self._marker:
            Path(self._marker).write_text(str(os.getpid()))
        while True:  # a blocking sleep: the whole process freezes here, like a hang
            time.sleep(3600)

    async def store(self, rows: Any, token: str) -> Any:
        if self._point == "before_insert":
            self._pause()
        out = await self._inner.store(rows, token)
        if self._point == "after_insert":
            self._pause()
        return out


def install(point: str, marker: str | None) -> None:
    cls = stream_consumer.StreamConsumer
    original = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.handler = PausingHandler(self.handler, point, marker)

    cls.__init__ = init  # type: ignore[method-assign]


def main() -> int:
    point = os.environ.get("WEFTLINE_TEST_PAUSE")
    if point:
        install(point, os.environ.get("WEFTLINE_TEST_PAUSE_FILE"))
    from weftline.cli import main as weftline_main

    sys.argv = ["weftline", *sys.argv[1:]]
    return weftline_main()


if __name__ == "__main__":
    sys.exit(main())
