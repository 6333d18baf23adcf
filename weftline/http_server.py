"""How uvicorn serves Weftline's public port: a deadline for a request's headers, a cap
on open connections, and nothing else changed.

uvicorn times out idle keep-alive connections but not a request whose headers arrive a
byte at a time, nor a connection that never sends anything: 50 such connections held
their sockets for as long as they liked. Here every connection has
`http_header_timeout_seconds` to deliver the headers of each request (from its accept,
or from the first byte of the next request on a kept-alive connection), else it is
closed. Bodies are bounded in time where they are read (`ingest/limits.read_body`:
408). Past `http_max_connections` open connections and requests, uvicorn answers 503
at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from weftline.ground.config import Settings


def _protocol(header_timeout: float) -> Any:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # no httptools: uvicorn's h11 protocol, without the deadline
        return "auto"

    class HeaderDeadline(Base):  # type: ignore[misc, valid-type]
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            self._arm()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keyword arguments for the public port."""
    return {
        "http": _protocol(settings.http_header_timeout_seconds),
        "limit_concurrency": settings.http_max_connections,
        "timeout_keep_alive": 5,
    }
