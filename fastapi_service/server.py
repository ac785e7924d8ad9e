"""The HTTP protocol the service runs under uvicorn: httptools with a request-header timeout.

uvicorn arms its keep-alive timer only once a response is complete and cancels it on the
first byte received: a client that connects and sends nothing, or an incomplete request
header, holds its connection (and a file descriptor) forever. This protocol closes such a
connection ``header_timeout_s`` after it was opened or after its previous response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that closes a connection whose request header is late.

    Parameters
    ----------
    *args, **kwargs
        What uvicorn passes to its protocol class (``config``, ``server_state``, ...).
    header_timeout_s
        Seconds a connection has to complete a request header, from its opening or from its
        previous response. A request body is not timed here (a reverse proxy does that).
    """

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout_s, self.transport.close)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection now waits for its next request
        if self.timeout_keep_alive_task is not None:
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)
