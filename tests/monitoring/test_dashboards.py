"""Grafana dashboards as code: generated JSON is committed, structurally sound, provisioned with
the datasource it names, and every panel query returns data from a real Prometheus that scraped
a real service under traffic."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from monitoring.dashboards import DASHBOARDS_DIR, DATASOURCE_UID, dashboards, render
from monitoring.livecheck import (
    Result,
    check,
    load_dashboards,
    metric_names,
    panel_queries,
    report,
)
from monitoring.servers import (
    Daemon,
    free_port,
    query,
    render_prometheus_config,
    start_prometheus,
    wait_for_scrapes,
)

from monitoring import abcontract
from tests.monitoring.monitoring_testkit import RATE_INTERVAL, SCRAPE, Live, exported_names, rules

pytestmark = pytest.mark.monitoring

PROVISIONING = DASHBOARDS_DIR.parent / "provisioning"


def test_committed_dashboards_are_what_the_code_builds() -> None:
    built = dashboards()
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(built)
    for name, board in built.items():
        assert (DASHBOARDS_DIR / name).read_text() == render(board), (
            f"{name} is stale: run python -m monitoring.dashboards"
        )


@pytest.mark.parametrize("name", sorted(load_dashboards()))
def test_dashboard_structure(name: str) -> None:
    board = load_dashboards()[name]
    panels = board["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert board["uid"] == name and board["title"].startswith("recsys / ")
    for panel in panels:
        where = f"{name} #{panel['id']} {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, where
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel.get("description"), where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, where
            assert target["expr"].strip(), where
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE_UID
    # panels do not overlap on Grafana's 24-column grid
    cells = [
        (x, y)
        for p in panels
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))


def test_provisioning_names_the_datasource_uid_and_the_dashboards_folder() -> None:
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "recsys.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = (DASHBOARDS_DIR.parents[1] / "compose.yaml").read_text()
    assert f"./grafana/dashboards:{path}" in compose


def test_issue_panels_are_there() -> None:
    titles = {name: [p["title"] for p in b["panels"]] for name, b in load_dashboards().items()}
    wanted = {
        "recsys-service": ["Requests per second", "latency p50 / p95 / p99", "Error ratio",
                           "in flight", "CPU", "memory", "GC"],
        "recsys-model": ["version", "age", "reloads", "source mix", "Fallback share",
                         "Score distribution", "coverage", "Registry"],
        "recsys-business": ["Add-to-cart conversion", "items added per user",
                            "Cart-to-purchase", "Exposures", "Events ingested",
                            "Recommended-item share"],
    }  # fmt: skip
    for name, words in wanted.items():
        for word in words:
            assert any(word.lower() in t.lower() for t in titles[name]), (name, word)


def _results(live: Live, names: tuple[str, ...]) -> list[Result]:
    boards = {n: b for n, b in load_dashboards().items() if n in names}
    return check(live.url, boards, RATE_INTERVAL)


@pytest.mark.slow
def test_service_and_model_panels_return_data_from_a_live_prometheus(live: Live) -> None:
    assert live.statuses.get(200, 0) > 100 and live.statuses.get(202, 0) > 10, live.statuses
    results = _results(live, ("recsys-service", "recsys-model"))
    print(report(results))  # the live-check output (pytest -s / -rP shows it)
    failed = [r for r in results if not r.ok]
    assert not failed, report(failed)
    assert len(results) >= 25


@pytest.mark.slow
def test_a_misspelled_metric_fails_the_live_check(live: Live) -> None:
    board = load_dashboards()["recsys-service"]
    first = board["panels"][0]["targets"][0]
    misspelled = first["expr"].replace("recsys_http_requests_total", "recsys_http_request_total")
    broken = {
        **board,
        "panels": [{**board["panels"][0], "targets": [{**first, "expr": misspelled}]}],
    }
    (result,) = check(live.url, {"recsys-service": broken}, RATE_INTERVAL)
    assert not result.ok and result.series == 0
    unparsable = {**first, "expr": "sum(rate(recsys_http_requests_total[1m]"}
    broken["panels"][0]["targets"] = [unparsable]
    (result,) = check(live.url, {"recsys-service": broken}, RATE_INTERVAL)
    assert not result.ok and result.error and "parse error" in result.error


@pytest.mark.slow
def test_business_panels_against_the_service(live: Live) -> None:
    """Every business query returns data from a service running an experiment."""
    results = _results(live, ("recsys-business",))
    assert all(r.error is None for r in results), report(results)
    service_only = [r for r in results if not any("recsys_ab_" in n or "experiment_variant:" in n
                                                  for n in metric_names(r.query.expr))]  # fmt: skip
    assert service_only and all(r.ok for r in service_only), report(service_only)
    failed = [r for r in results if not r.ok]
    assert not failed, report(failed)


@pytest.fixture(scope="module")
def contract_prometheus(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A Prometheus scraping the stand-in exporter of the A/B metric contract."""
    server = abcontract.serve()
    port = free_port()
    target = f"127.0.0.1:{server.server_port}"
    config = render_prometheus_config([target], f"127.0.0.1:{port}", scrape_interval=SCRAPE)
    prometheus = start_prometheus(config, tmp_path_factory.mktemp("contract"), port)
    try:
        wait_for_scrapes(prometheus.url, "recsys-api", samples=3)
        # the recording rules (z statistic) need one evaluation after a scrape
        deadline = time.monotonic() + 10
        while not query(prometheus.url, "experiment_variant:recsys_ab_addtocart_conversion:ratio"):
            assert time.monotonic() < deadline, "recording rules never evaluated"
            time.sleep(0.2)
        yield prometheus
    finally:
        prometheus.stop()
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_business_panels_return_data_for_the_ab_metric_contract(
    contract_prometheus: Daemon,
) -> None:
    boards = {"recsys-business": load_dashboards()["recsys-business"]}
    results = [
        r
        for r in check(contract_prometheus.url, boards, RATE_INTERVAL)
        if "recsys_events_ingested_total" not in r.query.expr  # a service metric
    ]
    print(report(results))
    assert results and all(r.ok for r in results), report(results)


def test_dashboards_read_only_metrics_that_exist() -> None:
    """A static guard beside the live check: every metric name a panel reads is exported by the
    service, its collectors, the A/B contract or a recording rule."""
    known = (
        exported_names()
        | set(abcontract.CONTRACT)
        | {abcontract.UPDATED, "up"}
        | {rule["record"] for rule in rules() if "record" in rule}
    )
    for name, board in load_dashboards().items():
        for panel_query in panel_queries(name, board):
            unknown = metric_names(panel_query.expr) - known
            assert not unknown, (name, panel_query.title, unknown)


def test_substitution_leaves_no_grafana_variable() -> None:
    from monitoring.livecheck import substitute

    for name, board in load_dashboards().items():
        for panel_query in panel_queries(name, board):
            promql = substitute(panel_query.expr, board, "1m")
            assert not re.search(r"\$\w", promql), (name, promql)


@pytest.mark.slow
def test_bundle_folder_is_reused(demo_bundle: Path) -> None:
    from monitoring.bundle import ensure_bundle

    stamp = (demo_bundle / "metadata.json").stat().st_mtime
    assert ensure_bundle(demo_bundle) == demo_bundle
    assert (demo_bundle / "metadata.json").stat().st_mtime == stamp
    assert Path(demo_bundle).is_dir()
