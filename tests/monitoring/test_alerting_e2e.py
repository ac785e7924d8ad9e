"""End to end: a real Prometheus scrapes a real service, the service stops, and RecsysServiceDown
travels through a real Alertmanager to a webhook receiver started by the test."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring.servers import (
    RULES,
    free_port,
    query,
    render_alertmanager_config,
    render_prometheus_config,
    start_alertmanager,
    start_prometheus,
    wait_for_scrapes,
)

from tests.fastapi_service.service_testkit import start_server, write_bundle
from tests.monitoring.monitoring_testkit import SCRAPE

pytestmark = [pytest.mark.monitoring, pytest.mark.slow, pytest.mark.usefixtures("tools")]

#: the test's wait for the alert's `for` (the production rule waits 1 minute)
FOR = "3s"


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    """An HTTP receiver on loopback; yields its URL and the queue of payloads it received."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.put(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _fast_rules(path: Path) -> Path:
    """The committed rules with RecsysServiceDown's `for` shortened to :data:`FOR`."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "RecsysServiceDown":
                rule["for"] = FOR
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def test_service_down_alert_reaches_the_webhook(
    tmp_path: Path, webhook: tuple[str, queue.Queue[dict[str, Any]]]
) -> None:
    url, received = webhook
    bundle = write_bundle(tmp_path / "bundle")
    service = start_server(tmp_path / "service", {"RECSYS_MODEL_URI": str(bundle)})
    daemons = []
    try:
        am_port, prom_port = free_port(), free_port()
        alertmanager = start_alertmanager(
            render_alertmanager_config(url, group_wait="1s"), tmp_path / "am", am_port
        )
        daemons.append(alertmanager)
        config = render_prometheus_config(
            [service.url.removeprefix("http://")],
            f"127.0.0.1:{prom_port}",
            alertmanager=f"127.0.0.1:{am_port}",
            scrape_interval=SCRAPE,
            rule_files=[_fast_rules(tmp_path / "rules.yml")],
        )
        prometheus = start_prometheus(config, tmp_path / "prometheus", prom_port)
        daemons.append(prometheus)
        wait_for_scrapes(prometheus.url, "recsys-api", samples=2)
        assert not query(prometheus.url, 'ALERTS{alertname="RecsysServiceDown"}')

        stopped = time.monotonic()
        service.stop()
        payload = _next_firing(received, "RecsysServiceDown", timeout=60)
        delay = time.monotonic() - stopped
        print(f"RecsysServiceDown reached the webhook {delay:.1f} s after the service stopped")
        (alert,) = [a for a in payload["alerts"] if a["labels"]["alertname"] == "RecsysServiceDown"]
        assert alert["labels"]["instance"] == service.url.removeprefix("http://")
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook"] == "Monitoring.md#recsysservicedown"
        assert payload["receiver"] == "webhook" and payload["status"] == "firing"
        # grouped as configured: by alert name and job
        assert payload["groupLabels"] == {"alertname": "RecsysServiceDown", "job": "recsys-api"}
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        service.stop()


def _next_firing(
    received: queue.Queue[dict[str, Any]], alertname: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"{alertname} never reached the webhook in {timeout} s")
        try:
            payload = received.get(timeout=remaining)
        except queue.Empty:
            continue
        names = {a["labels"]["alertname"] for a in payload["alerts"] if a["status"] == "firing"}
        if alertname in names:
            return payload
