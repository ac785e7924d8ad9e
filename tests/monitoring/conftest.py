"""Fixtures of the monitoring tests: real Prometheus, Alertmanager and service processes.

``live``: a service serving a small real LightFM bundle under a two-variant experiment, scraped every second by Prometheus
with the repository's rules, after a bounded run of mixed traffic: what the dashboards' live
check queries. Binaries missing on the machine are installed by ``monitoring/install.sh``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monitoring.bundle import ensure_bundle
from monitoring.servers import (
    ToolMissing,
    free_port,
    program,
    render_prometheus_config,
    start_prometheus,
    wait_for_scrapes,
)

from monitoring import traffic
from recsys.bundle import Bundle
from tests.fastapi_service.service_testkit import start_server
from tests.monitoring.monitoring_testkit import SCRAPE, Live

#: a two-variant experiment, so the business dashboard's A/B panels have series to show
EXPERIMENT = """
experiments:
  - name: live-check
    salt: live-check-1
    variants:
      - {name: control, weight: 50, model: champion}
      - {name: popular, weight: 50, policy: popular}
"""


@pytest.fixture(scope="session")
def tools() -> None:
    """promtool, prometheus, amtool and alertmanager, installed when missing (root)."""
    try:
        for name in ("prometheus", "promtool", "alertmanager", "amtool"):
            program(name)
    except ToolMissing as exc:
        pytest.fail(str(exc))  # never a skip: CI installs them through install.sh


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small real LightFM bundle of ``make monitor`` (trained once per session)."""
    return ensure_bundle(tmp_path_factory.mktemp("monitoring") / "bundle")


@pytest.fixture(scope="session")
def live(
    tools: None, demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live")
    experiments = root / "experiments.yaml"
    experiments.write_text(EXPERIMENT)
    settings = {
        "RECSYS_MODEL_URI": str(demo_bundle),
        "RECSYS_EXPERIMENTS_FILE": str(experiments),
        "RECSYS_AB_METRICS_INTERVAL_S": "1",
    }
    service = start_server(root / "service", settings)
    prometheus = None
    try:
        target = service.url.removeprefix("http://")
        port = free_port()
        config = render_prometheus_config([target], f"127.0.0.1:{port}", scrape_interval=SCRAPE)
        prometheus = start_prometheus(config, root / "prometheus", port)
        bundle = Bundle.load(demo_bundle)
        statuses = traffic.run(
            service.url,
            bundle.user_ids[:500].tolist(),
            bundle.item_ids[:200].tolist(),
            duration_s=6,
            rate=60,
        )
        wait_for_scrapes(prometheus.url, "recsys-api", samples=8)
        yield Live(service, prometheus, dict(statuses))
    finally:
        if prometheus is not None:
            prometheus.stop()
        service.stop()
