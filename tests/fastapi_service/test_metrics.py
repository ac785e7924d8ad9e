"""Metrics the dashboards and alerts rely on: in-flight requests, served catalogue coverage,
counters that exist at 0 before anything happened."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_testkit import N_SERVABLE, metric

pytestmark = pytest.mark.service


def test_counters_alerts_rely_on_exist_at_zero(client: TestClient) -> None:
    text = client.get("/metrics").text
    for event in ("view", "addtocart", "transaction"):
        assert f'recsys_events_ingested_total{{event="{event}"}} 0.0' in text
    for trigger in ("startup", "poll", "admin"):
        # the startup load succeeded; its failure series exists at 0 for increase() to see a 1
        failed = rf'recsys_model_reloads_total\{{outcome="failure",trigger="{trigger}"\}}'
        assert metric(text, failed) == 0 and failed.replace("\\", "") in text
    assert 'recsys_event_store_errors_total{table="exposures"} 0.0' in text


def test_in_flight_counts_the_scrape_itself(client: TestClient) -> None:
    client.get("/recommendations", params={"user_id": 1})
    # the /metrics request being answered is the only one in flight
    assert metric(client.get("/metrics").text, "recsys_http_requests_in_flight") == 1


def test_served_items_and_catalogue_give_coverage(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert metric(text, "recsys_model_catalogue_items") == N_SERVABLE
    assert metric(text, "recsys_served_items") == 0
    served: set[int] = set()
    for user in (1, 2, 3, 999):
        served.update(
            client.get("/recommendations", params={"user_id": user, "k": 5}).json()[
                "recommendations"
            ]
        )
    assert metric(client.get("/metrics").text, "recsys_served_items") == len(served) > 5


def test_a_client_gone_before_its_answer_is_499_not_a_server_error() -> None:
    import asyncio

    from fastapi_service.metrics import MetricsMiddleware, ServiceMetrics

    async def app(scope: object, receive: object, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def reset_send(message: object) -> None:  # what uvloop raises on a reset connection
        raise RuntimeError(
            "unable to perform operation on <TCPTransport closed=True reading=False>; "
            "the handler is closed"
        )

    async def broken_send(message: object) -> None:
        raise RuntimeError("something else")

    metrics = ServiceMetrics()
    middleware = MetricsMiddleware(app, metrics)  # type: ignore[arg-type]
    scope = {"type": "http", "method": "POST", "path": "/events"}
    asyncio.run(middleware(scope, None, reset_send))  # type: ignore[arg-type]
    text = metrics.render().decode()
    assert metric(text, r'recsys_http_requests_total\{[^}]*status="499"\}') == 1
    with pytest.raises(RuntimeError, match="something else"):
        asyncio.run(middleware(scope, None, broken_send))  # type: ignore[arg-type]
