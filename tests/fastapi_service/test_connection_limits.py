"""Connection limits of the real service process (issue 15): silent and half-open clients are
closed after the header timeout, idle keep-alive ones after the keep-alive timeout, and past
``RECSYS_LIMIT_CONCURRENCY`` requests get a 503 at once instead of waiting."""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from service_testkit import wait_until

pytestmark = [pytest.mark.service, pytest.mark.slow]

HEADER_TIMEOUT_S = 2.0
KEEP_ALIVE_TIMEOUT_S = 1
#: what a client may wait beyond a timeout for the close, on 2 busy cores
SLACK_S = 3.0
PARTIAL = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"  # no blank line: the header never ends
REQUEST = PARTIAL + b"\r\n"


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=5)


def _read_response(sock: socket.socket) -> bytes:
    """The bytes of one small response (``/health/live``: headers and a short JSON body)."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    return data


def _closed_after(
    url: str, socks: dict[str, socket.socket], start: float, deadline: float
) -> dict[str, float]:
    """Seconds from ``start`` at which the server closed each socket (EOF or reset).

    Meanwhile a normal client keeps asking ``url``'s ``/health/live``, which must answer 200
    throughout.
    """
    closed: dict[str, float] = {}
    with selectors.DefaultSelector() as selector:
        for name, sock in socks.items():
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, name)
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(1)  # type: ignore[union-attr]
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"{key.data}: the server answered {data!r} instead of closing"
                closed[key.data] = time.monotonic() - start
                selector.unregister(key.fileobj)
            assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
    return closed


def test_silent_half_open_and_idle_connections_are_closed(server_factory, bundle_dir: Path) -> None:
    server = server_factory(
        {
            "RECSYS_MODEL_URI": str(bundle_dir),
            "RECSYS_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "RECSYS_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_TIMEOUT_S),
        }
    )
    start = time.monotonic()
    socks = {f"silent-{i}": _connect(server.url) for i in range(100)}
    for i in range(100):
        socks[f"partial-{i}"] = sock = _connect(server.url)
        sock.sendall(PARTIAL)
    # a keep-alive client answered once, then idle: uvicorn's own keep-alive timeout
    socks["idle"] = idle = _connect(server.url)
    idle.sendall(REQUEST)
    assert _read_response(idle).startswith(b"HTTP/1.1 200")
    # answered once, then a header that never ends: uvicorn's keep-alive timer stopped at
    # its first byte, the header timeout counts from the previous response
    socks["answered-then-partial"] = again = _connect(server.url)
    again.sendall(REQUEST)
    assert _read_response(again).startswith(b"HTTP/1.1 200")
    again.sendall(PARTIAL)
    # a slow client that completes its header in time is served
    slow = _connect(server.url)
    slow.sendall(PARTIAL)
    time.sleep(HEADER_TIMEOUT_S / 2)
    slow.sendall(b"\r\n")
    assert _read_response(slow).startswith(b"HTTP/1.1 200")
    slow.close()

    try:
        closed = _closed_after(server.url, socks, start, start + HEADER_TIMEOUT_S + SLACK_S)
    finally:
        for sock in socks.values():
            sock.close()
    assert set(closed) == set(socks), f"still open: {sorted(set(socks) - set(closed))[:5]}..."
    assert closed["idle"] < HEADER_TIMEOUT_S  # the keep-alive timeout (1 s) closed it first
    # nothing is closed before its timeout
    assert min(closed.values()) >= KEEP_ALIVE_TIMEOUT_S - 0.1
    assert min(t for name, t in closed.items() if name != "idle") >= HEADER_TIMEOUT_S - 0.1


def test_requests_beyond_the_concurrency_limit_get_503_at_once(
    server_factory, bundle_dir: Path
) -> None:
    server = server_factory({"RECSYS_MODEL_URI": str(bundle_dir), "RECSYS_LIMIT_CONCURRENCY": "20"})
    idle = [_connect(server.url) for _ in range(40)]
    try:
        # uvicorn counts open connections, idle ones included: the next request is refused
        with httpx.Client(base_url=server.url, timeout=5) as client:
            reply = wait_until(
                lambda: (r := client.get("/health/live")).status_code == 503 and r,
                10,
                "a 503 beyond 20 connections",
            )
            assert reply.text == "Service Unavailable"
    finally:
        for sock in idle:
            sock.close()
    wait_until(
        lambda: httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200,
        10,
        "200 once the idle connections are gone",
    )
