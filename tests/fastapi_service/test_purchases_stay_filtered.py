"""A bought item never comes back: across a restart, between uvicorn workers, after the
visitor was evicted from the in-process history, beyond any per-visitor cap, and for
purchases other processes wrote to the store (an import after the model's cutoff).

The in-process history is a cache of the event store's log: rebuilt at start, and kept up to
date by every worker reading what any process wrote (``RECSYS_HISTORY_POLL_S``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testkit import N_SERVABLE, Server, wait_until

from recsys.data.store import EventStore
from tests.helpers import T0, make_events

pytestmark = pytest.mark.service

_transactions = itertools.count(1)


def top(client: httpx.Client | TestClient, user: int) -> list[int]:
    reply = client.get("/recommendations", params={"user_id": user, "k": N_SERVABLE})
    assert reply.status_code == 200, reply.text
    items: list[int] = reply.json()["recommendations"]
    return items


def post(client: httpx.Client | TestClient, events: list[dict[str, Any]]) -> None:
    reply = client.post("/events", json=events)
    assert reply.status_code == 202, reply.text


def buy(client: httpx.Client | TestClient, user: int, item: int) -> None:
    post(
        client,
        [
            {
                "visitorid": user,
                "event": "transaction",
                "itemid": item,
                "transactionid": next(_transactions),
            }
        ],
    )


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_purchases_and_views_are_rebuilt_after_a_restart(
    server_factory: Callable[..., Server],
    bundle_dir: Path,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    settings = {"RECSYS_MODEL_URI": str(bundle_dir)}
    if backend == "postgresql":
        settings["RECSYS_DB_URL"] = request.getfixturevalue("pg_url")
    server = server_factory(settings, name="svc")
    bought: dict[int, int] = {}
    with server.client() as http:
        post(http, [{"visitorid": 7, "event": "view", "itemid": i} for i in (105, 111)])
        before_views = top(http, 7)
        for user in (2, 3, 7):  # warm visitors and one the model does not know
            bought[user] = top(http, user)[0]
            buy(http, user, bought[user])
            assert bought[user] not in top(http, user)
        answers = {user: top(http, user) for user in bought}
    assert before_views != top(server.client(), 1234)  # the views changed visitor 7's answer
    server.stop()

    again = server_factory(settings, name="svc")  # same folder: the same SQLite store
    with again.client() as http:
        for user, item in bought.items():
            assert item not in top(http, user), f"visitor {user} is offered item {item} again"
        # the rebuilt history gives the answers of before the restart
        assert {user: top(http, user) for user in bought} == answers
        assert http.get("/health/ready").json()["online_history"] == "ok"


def test_a_purchase_posted_to_one_worker_is_filtered_by_the_other(
    server_factory: Callable[..., Server], bundle_dir: Path
) -> None:
    server = server_factory({"RECSYS_MODEL_URI": str(bundle_dir), "RECSYS_WORKERS": "2"})
    with server.client() as http:
        item = top(http, 2)[0]
        buy(http, 2, item)
    poll_s = 0.2  # RECSYS_HISTORY_POLL_S: the other worker reads the store this often

    def answers() -> list[list[int]]:  # a new connection each: both workers answer
        return [top(server.client(), 2) for _ in range(40)]

    wait_until(lambda: all(item not in a for a in answers()), 5 * poll_s + 5)
    assert all(item not in a for a in answers())


def test_eviction_and_caps_never_bring_a_purchase_back(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(history_visitors=2, history_items=2)
    bought = top(client, 2)[:12]  # more purchases than any per-visitor cap of recent items
    for item in bought:
        buy(client, 2, item)
    for visitor in range(500, 520):  # many other visitors push visitor 2 out of the LRU
        post(client, [{"visitorid": visitor, "event": "view", "itemid": 101}])
    assert not set(bought) & set(top(client, 2))


def test_purchases_written_by_another_process_are_filtered(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    store.append_events(make_events([(T0, 3, "transaction", 104)]))  # before the start
    client = client_factory()
    assert 104 not in top(client, 3)
    first = top(client, 3)[0]
    store.append_events(make_events([(T0 + 1, 3, "transaction", first)]))  # while it runs
    wait_until(lambda: first not in top(client, 3), 5)
