"""Reload requests and alerts against real loopback HTTP servers."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from recsys.notify import post_alert, request_reload

#: nothing listens on the discard port
DOWN = "http://127.0.0.1:9"


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[str, dict[str, str], Any]]]]:
    """A loopback server answering POST /admin/reload (token ``t0k``) and POST /alerts."""
    seen: list[tuple[str, dict[str, str], Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.append((self.path, dict(self.headers), body))
            ok = self.path == "/alerts" or self.headers["Authorization"] == "Bearer t0k"
            payload = json.dumps({"status": "reloaded", "model_version": "2"}).encode()
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def test_reload_posts_the_bearer_token(endpoint: tuple[str, list]) -> None:
    url, seen = endpoint
    assert request_reload(url + "/", "t0k") == {"status": "reloaded", "model_version": "2"}
    assert seen[0][0] == "/admin/reload" and seen[0][1]["Authorization"] == "Bearer t0k"


def test_reload_never_raises(endpoint: tuple[str, list], caplog: pytest.LogCaptureFixture) -> None:
    """A service that is down, refuses, or has no token configured: warnings, not errors."""
    url, seen = endpoint
    with caplog.at_level(logging.WARNING, logger="recsys.notify"):
        assert request_reload(DOWN, "t0k", timeout_s=2) is None
        assert request_reload(url, "wrong") is None
        assert request_reload(url, None) is None
    assert len(seen) == 1  # no request without a token
    text = caplog.text
    assert "service not reached" in text and "answered 403" in text and "no admin token" in text


def test_alert_posts_json_and_tolerates_a_dead_webhook(endpoint: tuple[str, list]) -> None:
    url, seen = endpoint
    assert post_alert(url + "/alerts", {"task_id": "check_store"}) is True
    assert seen[-1][0] == "/alerts" and seen[-1][2] == {"task_id": "check_store"}
    assert post_alert(DOWN, {"task_id": "x"}) is False
    assert post_alert(None, {"task_id": "x"}) is False
