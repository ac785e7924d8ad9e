"""Reliability of the service under hostile input and outages (issue 15)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from service_testkit import ADMIN_TOKEN, metric, wait_until, write_bundle

pytestmark = pytest.mark.service

HOUR_MS = 3_600_000


def test_far_future_event_is_422_naming_the_field(client: TestClient) -> None:
    now = int(time.time() * 1000)
    poisoned = {"timestamp": 4_070_908_800_000, "visitorid": 1, "event": "view", "itemid": 100}
    reply = client.post("/events", json=poisoned)  # 2099-01-01: inside the contract's range
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["field"] == "body.timestamp"
    assert "in the future" in reply.json()["detail"]
    ok = {"visitorid": 1, "event": "view", "itemid": 100}
    batch = [ok | {"timestamp": now}, ok | {"timestamp": now + HOUR_MS}]
    reply = client.post("/events", json=batch)
    assert reply.status_code == 422 and reply.json()["errors"][0]["field"] == "body[1].timestamp"
    # within the tolerance (clocks of clients drift a little): accepted
    assert client.post("/events", json=ok | {"timestamp": now + 60_000}).status_code == 202


def test_future_tolerance_is_a_setting(client_factory) -> None:  # type: ignore[no-untyped-def]
    client = client_factory(future_tolerance_s=7200)
    now = int(time.time() * 1000)
    event = {"timestamp": now + HOUR_MS, "visitorid": 1, "event": "view", "itemid": 100}
    assert client.post("/events", json=event).status_code == 202


#: JSON values pydantic would coerce to an integer outside strict mode
LAX = [("visitorid", True), ("visitorid", "123"), ("itemid", "5"), ("itemid", 5.0)]
LAX += [("transactionid", False), ("timestamp", "1431226800000")]


def test_ids_and_timestamps_are_strict_integers(client: TestClient) -> None:
    for field, value in LAX:
        event = {"visitorid": 1, "event": "view", "itemid": 100} | {field: value}
        reply = client.post("/events", json=event)
        assert reply.status_code == 422, (field, value, reply.text)
        assert reply.json()["errors"][0]["field"] == f"body.{field}"


def test_id_range_is_the_events_contract(client: TestClient) -> None:
    from recsys.data.schema import MAX_ID

    event = {"visitorid": MAX_ID, "event": "transaction", "itemid": MAX_ID}
    assert client.post("/events", json=event | {"transactionid": MAX_ID}).status_code == 202
    reply = client.post("/events", json=event | {"transactionid": MAX_ID + 1})
    assert reply.status_code == 422 and reply.json()["errors"][0]["field"] == "body.transactionid"


def _no_internals(body: str, *secrets: str) -> None:
    for secret in (*secrets, "Error", "Traceback", "/tmp", "sqlite"):
        assert secret not in body, (secret, body)


def test_client_facing_bodies_show_no_paths_nor_driver_errors(
    client_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "not-yet"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    client = client_factory(
        ready=False, model_uri=str(missing), db_url=f"sqlite:///{blocker}/events.db"
    )
    wait_until(lambda: client.get("/health/ready").json()["code"] is not None, 10, "a problem")
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["code"] == "model_load_failed"
    assert ready.json()["model_uri"] == "local bundle"
    _no_internals(ready.text, str(tmp_path))
    reply = client.get("/model")
    assert reply.status_code == 503 and reply.json()["code"] == "model_not_ready"
    reply = client.post("/events", json={"visitorid": 1, "event": "view", "itemid": 100})
    assert reply.status_code == 503 and reply.json()["code"] == "store_unavailable"
    _no_internals(reply.text, str(tmp_path))

    write_bundle(missing, version="late")
    assert client.post(
        "/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).is_success
    model = client.get("/model")
    assert model.status_code == 200 and "path" not in model.json()
    _no_internals(model.text, str(tmp_path))
    _no_internals(client.get("/health/ready").text, str(tmp_path))


@pytest.fixture
def pg_database(pg_admin_dsn: str) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A unique PostgreSQL database name (not created) and a function running admin SQL;
    the database is dropped after the test."""
    name = f"i15_{uuid.uuid4().hex[:10]}"

    def admin(statement: str) -> None:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(statement.format(db=name))  # type: ignore[arg-type]

    try:
        yield name, admin
    finally:
        admin("DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _recovery_s(client: TestClient, event: dict[str, object]) -> float:
    """Seconds until POST /events is taken again (posting every 20 ms, at most 10 s)."""
    started = time.perf_counter()
    while client.post("/events", json=event).status_code != 202:
        assert time.perf_counter() - started < 10, "POST /events did not recover within 10 s"
        time.sleep(0.02)
    return time.perf_counter() - started


@pytest.mark.postgres
def test_post_events_recovers_when_the_database_comes_back(
    client_factory: Callable[..., TestClient], pg_database: tuple[str, Callable[[str], None]]
) -> None:
    name, admin = pg_database
    client = client_factory(db_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    event = {"visitorid": 1, "event": "view", "itemid": 100}
    # unreachable at start (no such database): still ready to recommend, the store reported
    ready = client.get("/health/ready").json()
    assert ready["ready"] is True and ready["event_store"] == "unavailable", ready
    assert metric(client.get("/metrics").text, "recsys_event_store_up") == 0
    reply = client.post("/events", json=event)
    assert reply.status_code == 503 and reply.json()["code"] == "store_unavailable"

    admin("CREATE DATABASE {db}")
    after_start = _recovery_s(client, event)
    assert client.get("/health/ready").json()["event_store"] == "ok"
    assert metric(client.get("/metrics").text, "recsys_event_store_up") == 1

    admin("DROP DATABASE {db} WITH (FORCE)")  # also kills the pooled connections
    assert client.post("/events", json=event).status_code == 503
    admin("CREATE DATABASE {db}")
    after_recreate = _recovery_s(client, event)  # the schema is created again

    admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    )
    after_kill = _recovery_s(client, event)  # pre-ping: the next request just works
    print(
        f"\nPOST /events recovery: database created after start {after_start:.3f} s, "
        f"dropped and re-created {after_recreate:.3f} s, connections killed {after_kill:.3f} s"
    )
    assert after_kill < 0.5


def test_exposures_older_than_the_retention_are_deleted(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(exposure_retention_days=1)
    service = client.app.state.service  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    old = ("old", now - 2 * 86_400_000, 1, "default", "control", "v1", "1,2")
    kept = ("kept", now - 3_600_000, 1, "default", "control", "v1", "1,2")
    service.store.log_exposures([old, kept])
    reply = client.get("/recommendations?user_id=1")
    assert client.portal is not None
    client.portal.call(service.flush_exposures)  # writes, then deletes the expired ones
    stored = set(service.store.read_exposures()["request_id"])
    assert stored == {"kept", reply.json()["request_id"]}
    assert metric(client.get("/metrics").text, "recsys_exposures_expired_total") == 1
