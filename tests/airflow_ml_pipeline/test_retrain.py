"""The retraining DAG end to end with ``dag.test()``: tiny synthetic data in a real SQLite
event store, a real MLflow store and a real service process that the DAG asks to reload.

One scenario, in order: the first run promotes and the service loads it; a visitor unknown
to the champion posts events to the service, the next run trains on them and the service
then answers that visitor from the model (the loop closes); a worse candidate leaves the
champion; stale or missing data fails at the check and registers nothing (and alerts).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from airflow_testkit import CRIPPLED_CONF, FAST_CONF, migrate, run_dag
from mlflow.tracking import MlflowClient

from recsys.columns import ADDTOCART, DAY_MS, VIEW
from recsys.config import MODEL_NAME
from recsys.data import EventStore
from recsys.names import FALLBACK_SOURCES
from tests.fastapi_service.service_testkit import ADMIN_TOKEN, Server, start_server
from tests.helpers import copy_store

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.service]

#: a visitor id the synthetic data never uses
NEW_VISITOR = 987_654_321_012


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home whose SQLite metadata database is migrated."""
    home = tmp_path_factory.mktemp("airflow-home")
    migrate(home)
    return home


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP endpoint recording the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []
    handler = type("Webhook", (_Webhook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_store: str,
    airflow_home: Path,
    webhook: tuple[str, list[dict[str, Any]]],
) -> Iterator[dict[str, Any]]:
    """The stores, a running service on them (no model yet) and the DAG's settings."""
    root = tmp_path_factory.mktemp("loop")
    var = root / "var"
    db = copy_store(tiny_store, var)
    tracking = f"sqlite:///{var / 'mlflow.db'}"
    service = start_server(
        root / "service",
        {
            "RECSYS_MODEL_URI": f"models:/{MODEL_NAME}@champion",
            "RECSYS_TRACKING_URI": tracking,
            "RECSYS_DB_URL": db,
            "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
        },
        wait="/health/live",
    )
    settings = {
        "RECSYS_VAR_DIR": str(var),
        "RECSYS_DB_URL": db,
        "RECSYS_SERVICE_URL": service.url,
        "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECSYS_ALERT_WEBHOOK_URL": webhook[0],
    }
    yield {
        "root": root,
        "home": airflow_home,
        "service": service,
        "settings": settings,
        "db": db,
        "client": MlflowClient(tracking, tracking),
        "newest": EventStore(db).newest_event_ms(),
    }
    service.stop()


def _run(world: dict[str, Any], conf: dict[str, Any], name: str, **settings: str) -> Any:
    log = world["root"] / f"{name}.log"
    return run_dag(world["home"], conf, log, **(world["settings"] | settings))


def _champion(world: dict[str, Any]) -> str:
    return str(world["client"].get_model_version_by_alias(MODEL_NAME, "champion").version)


def _versions(world: dict[str, Any]) -> int:
    return len(world["client"].search_model_versions(f"name = '{MODEL_NAME}'"))


def _recommend(service: Server, visitor: int) -> dict[str, Any]:
    reply = service.client().get("/recommendations", params={"user_id": visitor})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_first_run_promotes_serves_fresh_model_and_reloads_the_service(world: dict) -> None:
    service: Server = world["service"]
    assert service.client().get("/health/ready").status_code == 503  # nothing to serve yet
    run = _run(world, FAST_CONF, "first")
    assert run["state"] == "success", run
    assert set(run["tasks"].values()) == {"success"}
    assert _champion(world) == "1"
    # the service process was asked to reload (it does not poll here): it serves version 1
    ready = service.client().get("/health/ready").json()
    assert ready["ready"] and ready["model_version"] == "1"
    meta = service.client().get("/model").json()["metadata"]
    end = world["newest"] + 1  # a manual run's interval end: the newest event + 1 ms
    assert meta["cutoff_ms"] == meta["data_end_ms"] == end
    assert meta["evaluated_cutoff_ms"] == end - 7 * DAY_MS
    assert meta["metrics"]["precision@5"] > 0 and "beats every rival" in meta["gate"]


def test_the_loop_closes_a_new_visitors_events_reach_the_served_model(world: dict) -> None:
    service: Server = world["service"]
    popular = _recommend(service, NEW_VISITOR)
    assert popular["source"] in FALLBACK_SOURCES and popular["model_version"] == "1"
    start = world["newest"] + 60_000
    items = popular["recommendations"][:3]
    events = [
        {"timestamp": start + i * 60_000, "visitorid": NEW_VISITOR, "event": VIEW, "itemid": item}
        for i, item in enumerate(items)
    ] + [
        {
            "timestamp": start + 300_000,
            "visitorid": NEW_VISITOR,
            "event": ADDTOCART,
            "itemid": items[0],
        }
    ]
    assert service.client().post("/events", json=events).status_code == 202
    folded = _recommend(service, NEW_VISITOR)
    assert folded["source"] in FALLBACK_SOURCES  # known only from its posted events

    run = _run(world, FAST_CONF, "loop")
    assert run["state"] == "success", run
    assert _champion(world) == "2"
    warm = _recommend(service, NEW_VISITOR)
    assert warm["model_version"] == "2"
    assert warm["source"] in ("ranker", "blend", "model"), warm
    meta = service.client().get("/model").json()["metadata"]
    assert meta["cutoff_ms"] == start + 300_000 + 1  # trained through the visitor's events


def test_a_worse_candidate_leaves_the_champion(world: dict) -> None:
    run = _run(world, CRIPPLED_CONF, "worse")
    assert run["state"] == "success", run
    assert run["tasks"]["reload_service"] == "skipped"
    assert _champion(world) == "2"
    challenger = world["client"].get_model_version_by_alias(MODEL_NAME, "challenger")
    assert str(challenger.version) == "3" and "does not beat" in challenger.tags["gate"]
    assert world["service"].client().get("/health/ready").json()["model_version"] == "2"


def test_stale_data_fails_at_the_check_registers_nothing_and_alerts(
    world: dict, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    before = _versions(world)
    three_days_later = datetime.fromtimestamp((world["newest"] + 3 * DAY_MS) / 1000, UTC)
    run = _run(world, FAST_CONF | {"interval_end": three_days_later.isoformat()}, "stale")
    assert run["state"] == "failed"
    assert run["tasks"]["check_store"] == "failed"
    assert {s for t, s in run["tasks"].items() if t != "check_store"} == {"upstream_failed"}
    assert _versions(world) == before
    assert "stale data" in (world["root"] / "stale.log").read_text()
    alert = webhook[1][-1]
    assert alert["task_id"] == "check_store" and "stale data" in alert["error"]


def test_an_empty_store_fails_at_the_check(world: dict) -> None:
    before = _versions(world)
    empty = f"sqlite:///{world['root'] / 'empty' / 'events.db'}"
    run = _run(world, FAST_CONF, "empty", RECSYS_DB_URL=empty)
    assert run["state"] == "failed" and run["tasks"]["check_store"] == "failed"
    assert _versions(world) == before
    assert "holds no events" in (world["root"] / "empty.log").read_text()
