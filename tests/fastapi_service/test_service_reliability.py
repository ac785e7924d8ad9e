"""Reliability of the service under hostile input and outages (issue 15)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

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
