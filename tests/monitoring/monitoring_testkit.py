"""Helpers of the monitoring tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from monitoring.servers import RULES, Daemon

from fastapi_service.metrics import ServiceMetrics
from tests.fastapi_service.service_testkit import Server

#: scrape and rule evaluation interval of the test Prometheus servers
SCRAPE = "1s"
#: Grafana's $__rate_interval for that scrape interval, with room for a slow scrape
RATE_INTERVAL = "20s"


@dataclass
class Live:
    """A scraped service after traffic: the service and the Prometheus that scraped it."""

    service: Server
    prometheus: Daemon
    statuses: dict[int, int]

    @property
    def url(self) -> str:
        return self.prometheus.url


def rules() -> list[dict[str, Any]]:
    """Every rule (alerting and recording) of the committed rule file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_names() -> set[str]:
    """Sample names the service exports (counters with ``_total``, histograms with ``_bucket``)."""
    metrics = ServiceMetrics()
    metrics.set_model("v1", "local", 0.0, None, catalogue_items=10)
    metrics.observe_recommendation("popular", "control", [0.5], [1])
    metrics.requests.labels("/recommendations", "GET", "200").inc()
    metrics.request_duration.labels("/recommendations", "GET").observe(0.01)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}
