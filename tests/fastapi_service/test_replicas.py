"""Two service replicas behind a real nginx, sharing online state (Redis) and events (one store).

What a shop that outgrows one process relies on: a visitor's events posted through one replica
change the next answer of the other; one visitor, one variant, whichever replica answers; and
neither a rolling reload nor a killed replica fails a request at the balancer (nginx retries
idempotent GETs on the other replica: ``proxy_next_upstream``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from monitoring.servers import Daemon, free_port, start_nginx
from service_testkit import ADMIN_TOKEN, Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.service]

REDIS_URL = "redis://127.0.0.1:6379/6"
EXPERIMENT = """
experiments:
  - name: replicas
    salt: replicas-1
    variants:
      - {name: control, weight: 50, model: champion}
      - {name: popular, weight: 50, policy: popular}
"""


@dataclass
class Cluster:
    replicas: list[Server]
    balancer: Daemon


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[Cluster]:
    """Two replicas (one event store, one Redis prefix, one experiment) behind nginx; the
    module's last test kills one."""
    import redis

    tmp_path = tmp_path_factory.mktemp("replicas")
    prefix = f"test:{uuid.uuid4().hex}:"
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENT)
    settings = {
        "RECSYS_MODEL_URI": str(bundle_dir),
        "RECSYS_DB_URL": f"sqlite:///{tmp_path / 'events.db'}",
        "RECSYS_ONLINE_STATE_URL": REDIS_URL,
        "RECSYS_ONLINE_STATE_PREFIX": prefix,
        "RECSYS_EXPERIMENTS_FILE": str(experiments),
        "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    replicas: list[Server] = []
    balancer = None
    try:
        for name in ("a", "b"):
            replicas.append(start_server(tmp_path / name, settings))
        upstreams = [r.url.removeprefix("http://") for r in replicas]
        balancer = start_nginx(upstreams, tmp_path / "nginx", free_port())
        yield Cluster(replicas, balancer)
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            replica.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)


def recommend(url: str, user_id: int, k: int = 5) -> dict[str, Any]:
    response = httpx.get(f"{url}/recommendations", params={"user_id": user_id, "k": k}, timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post(url: str, events: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{url}/events", json=events, timeout=5)
    assert response.status_code == 202, response.text


def load(url: str, users: list[int], stop: threading.Event, statuses: Counter[int | str]) -> None:
    """GET recommendations in a loop until ``stop``; count status codes, and the error's name
    when no answer came (the client waits longer than nginx's 10 s upstream timeout, so a slow
    replica shows as nginx's 504, not as a client timeout)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            try:
                code = client.get("/recommendations", params={"user_id": users[i % len(users)]})
                statuses[code.status_code] += 1
            except httpx.TransportError as error:
                statuses[f"{type(error).__name__}: {error}"] += 1
            i += 1


def nginx_errors(cluster: Cluster) -> str:
    """The tail of nginx's error log (why a request failed at the balancer)."""
    return (cluster.balancer.log_path.parent / "error.log").read_text(errors="replace")[-3000:]


def under_load(url: str, action: Callable[[], None], threads: int = 4) -> Counter[int | str]:
    """Run ``action`` while ``threads`` clients send GETs through ``url``; their statuses."""
    statuses: Counter[int | str] = Counter()
    stop = threading.Event()
    users = list(range(1, 200))
    workers = [
        threading.Thread(target=load, args=(url, users, stop, statuses)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        action()
        time.sleep(1.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)
    return statuses


def test_events_posted_to_one_replica_change_the_other_replicas_answer(cluster: Cluster) -> None:
    a, b = (r.url for r in cluster.replicas)
    base = 880_000 + int(uuid.uuid4().int % 10_000)
    # a visitor of the control arm (the champion folds events in; the popular arm ignores them)
    visitor, before = next(
        (v, body)
        for v in range(base, base + 50)
        if (body := recommend(b, v))["variant"] == "control"
    )
    assert before["source"] in ("popular", "fallback")
    now = int(time.time() * 1000)
    post(a, [
        {"timestamp": now - 2000, "visitorid": visitor, "event": "view", "itemid": 103},
        {"timestamp": now - 1000, "visitorid": visitor, "event": "addtocart", "itemid": 104},
    ])  # fmt: skip
    after_b, after_a = recommend(b, visitor), recommend(a, visitor)
    assert after_b["recommendations"] != before["recommendations"]
    assert after_b["recommendations"] == after_a["recommendations"]
    # a purchase posted through one replica is filtered by the other
    bought = after_b["recommendations"][0]
    post(a, [{"visitorid": visitor, "event": "transaction", "itemid": bought, "transactionid": 1}])
    assert bought not in recommend(b, visitor, k=100)["recommendations"]


def test_one_visitor_one_variant_whichever_replica_answers(cluster: Cluster) -> None:
    a, b = (r.url for r in cluster.replicas)
    variants = {
        user: {recommend(url, user)["variant"] for url in (a, b, cluster.balancer.url)}
        for user in range(1, 60)
    }
    assert all(len(seen) == 1 for seen in variants.values()), variants
    assert {v for seen in variants.values() for v in seen} == {"control", "popular"}


def test_rolling_reload_under_load_fails_no_request(cluster: Cluster) -> None:
    def reload_each() -> None:
        for replica in cluster.replicas:
            response = httpx.post(
                f"{replica.url}/admin/reload",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text

    statuses = under_load(cluster.balancer.url, reload_each)
    assert set(statuses) == {200} and statuses[200] > 100, (statuses, nginx_errors(cluster))


def test_a_killed_replica_fails_no_request_at_the_balancer(cluster: Cluster) -> None:
    victim = cluster.replicas[1]
    statuses = under_load(cluster.balancer.url, victim.process.kill)
    assert victim.process.wait(5) is not None
    assert set(statuses) == {200} and statuses[200] > 100, (statuses, nginx_errors(cluster))
