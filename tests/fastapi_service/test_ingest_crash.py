"""Durability of ``POST /events``: a 202 means the events are committed.

Clients post single events concurrently (the group commit writes them in shared
transactions); the service is killed with SIGKILL mid-stream and restarted on the same store.
Every acknowledged event is in the store exactly once; an unacknowledged one at most once,
and once the clients retry what was not acknowledged, every event is there exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from service_testkit import start_server

from recsys import columns as C
from recsys.data import EventStore

pytestmark = [pytest.mark.slow, pytest.mark.service]

CLIENTS = 16
BASE_MS = 1_700_000_000_000
FIRST_VISITOR = 5_000_000


def event(n: int) -> dict[str, int | str]:
    """The n-th event: its own visitor and timestamp (so each is unique)."""
    return {
        "timestamp": BASE_MS + n,
        "visitorid": FIRST_VISITOR + n,
        "event": "view",
        "itemid": 100 + n % 19,
    }


async def post_until_dead(url: str, acked: set[int], sent: set[int]) -> None:
    """CLIENTS concurrent clients post one event per request until the server is gone."""
    numbers = iter(range(10**6))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for n in numbers:
                sent.add(n)
                try:
                    response = await http.post("/events", json=event(n))
                except httpx.TransportError:
                    return
                assert response.status_code == 202, response.text
                assert response.json() == {"received": 1, "stored": 1}
                acked.add(n)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_every_acknowledged_event_survives_a_kill_9_exactly_once(
    tmp_path: Path, bundle_dir: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db_url = (
        f"sqlite:///{tmp_path / 'events.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    settings = {"RECSYS_MODEL_URI": str(bundle_dir), "RECSYS_DB_URL": db_url}
    server = start_server(tmp_path / "first", settings)
    acked: set[int] = set()
    sent: set[int] = set()

    async def crash() -> None:
        load = asyncio.create_task(post_until_dead(server.url, acked, sent))
        while len(acked) < 300:  # mid-stream: well after the first commits
            await asyncio.sleep(0.05)
            assert not load.done(), server.log()
        server.process.kill()
        await load

    try:
        asyncio.run(asyncio.wait_for(crash(), 120))
    finally:
        server.stop()
    assert server.process.returncode == -9
    stored = count_by_event(db_url)
    lost = [n for n in acked if stored.get(n) != 1]
    assert not lost, f"{len(lost)} acknowledged events not stored exactly once: {lost[:10]}"
    assert all(c == 1 for c in stored.values())
    unacked = sorted(sent - acked)
    assert unacked, "the kill came after every request was answered"

    # the clients retry what was not acknowledged, through a restarted service
    restarted = start_server(tmp_path / "second", settings)
    try:
        with restarted.client() as http:
            retried = http.post("/events", json=[event(n) for n in unacked])
            assert retried.status_code == 202, retried.text
            assert retried.json()["stored"] == sum(1 for n in unacked if n not in stored)
    finally:
        restarted.stop()
    assert count_by_event(db_url) == dict.fromkeys(sent, 1)


def count_by_event(db_url: str) -> dict[int, int]:
    """How many times each test event is in the store, by its number."""
    events = EventStore(db_url).read_events(start_ms=BASE_MS)
    return (events[C.VISITOR] - FIRST_VISITOR).value_counts().to_dict()
