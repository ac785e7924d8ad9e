"""The HTTP contract, in process: every route's answers, status codes and error bodies.

The app runs with its lifespan (real SQLite store, real tiny bundle) under ``TestClient``;
a fake store or settings come in through ``app.state`` and ``app.dependency_overrides``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from service_testkit import (
    ADMIN_TOKEN,
    BOUGHT_ITEM,
    BUYER,
    ITEM_IDS,
    N_SERVABLE,
    UNAVAILABLE_ITEM,
    WARM_USERS,
    corrupt_bundle,
    metric,
    wait_until,
    write_bundle,
)

from fastapi_service.dependencies import get_settings
from fastapi_service.routes import FastEvents
from fastapi_service.schemas import RecommendationQuery
from recsys import columns as C
from recsys.data.schema import MAX_ID, TRANSACTION_REQUIRED
from recsys.data.store import EventStore
from recsys.exceptions import ConfigurationError, DataValidationError

pytestmark = pytest.mark.service

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
REASONS = {
    "you viewed it",
    "similar to an item you viewed",
    "popular in its category",
    "popular now",
    "recommended for you",
}
POPULAR = [118, 117, 116, 115, 114]  # popular is 119, 118, ...: the unavailable 119 is skipped


def recommend(client: TestClient, user_id: int, k: int = 5) -> dict[str, Any]:
    reply = client.get("/recommendations", params={"user_id": user_id, "k": k})
    assert reply.status_code == 200, reply.text
    return reply.json()


def post_events(client: TestClient, events: list[dict[str, Any]] | dict[str, Any]) -> dict:
    reply = client.post("/events", json=events)
    assert reply.status_code == 202, reply.text
    return reply.json()


def store_of(client: TestClient) -> EventStore:
    return EventStore(client.app.state.settings.db_url)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- recommendations


def test_warm_user_gets_k_items_with_reasons_and_version(client: TestClient) -> None:
    body = recommend(client, 2, k=5)
    assert body["user_id"] == 2
    assert len(body["recommendations"]) == 5
    assert [item["item_id"] for item in body["items"]] == body["recommendations"]
    assert all(item["reason"] in REASONS for item in body["items"])
    assert all(isinstance(item["score"], float) for item in body["items"])
    assert body["source"] == "blend"  # a known visitor is ranked by the bundle's policy
    assert body["model_version"] == "v1"
    assert body["variant"] == "control"
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert set(body["recommendations"]) <= set(ITEM_IDS.tolist())


def test_default_k_is_five_and_path_form_answers_the_same(client: TestClient) -> None:
    query = recommend(client, 3)
    path = client.get("/recommendations/3").json()
    assert len(query["recommendations"]) == 5
    assert path["recommendations"] == query["recommendations"]
    assert path["source"] == query["source"]
    assert path["request_id"] != query["request_id"]


def test_unknown_user_gets_popular_available_items(client: TestClient) -> None:
    body = recommend(client, 424242, k=5)
    assert body["source"] == "popular"
    assert body["recommendations"] == POPULAR
    assert all(item["reason"] in REASONS for item in body["items"])
    assert recommend(client, MAX_ID)["recommendations"] == POPULAR  # the largest id is valid


def test_fold_in_after_posted_events(client: TestClient) -> None:
    visitor = 777001
    assert recommend(client, visitor)["source"] == "popular"
    now = int(time.time() * 1000)
    accepted = post_events(
        client,
        [
            {"timestamp": now - 2000, "visitorid": visitor, "event": "view", "itemid": 103},
            {"timestamp": now - 1000, "visitorid": visitor, "event": "addtocart", "itemid": 104},
        ],
    )
    assert accepted == {"received": 2, "stored": 2}
    body = recommend(client, visitor, k=5)
    assert body["source"] == "fold_in"
    assert len(set(body["recommendations"])) == 5
    assert body["recommendations"] != POPULAR
    assert all(item["reason"] in REASONS for item in body["items"])


def test_the_session_is_ranked_with_its_events_times_and_carts(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each posted view and add-to-cart reaches the ranking with its time, repeats included,
    as the learned ranker is trained and evaluated (:mod:`recsys.evaluation.replay`)."""
    visitor, now = WARM_USERS[0], int(time.time() * 1000)
    events = [(3000, "view", 103), (2000, "addtocart", 104), (1000, "view", 103)]
    post_events(
        client,
        [
            {"timestamp": now - ago, "visitorid": visitor, "event": e, "itemid": i}
            for ago, e, i in events
        ]
        + [
            {
                "timestamp": now,
                "visitorid": visitor,
                "event": "transaction",
                "itemid": 105,
                "transactionid": 9,
            }
        ],
    )
    recommender = client.app.state.manager.served().recommender  # type: ignore[attr-defined]
    calls: list[tuple[Any, ...]] = []
    rank = recommender.recommend
    monkeypatch.setattr(
        recommender, "recommend", lambda *a, **kw: calls.append((a, kw)) or rank(*a, **kw)
    )
    body = recommend(client, visitor)
    assert calls == [
        (
            (visitor, 5, (103, 104, 103), (105,)),
            {"session_times": (now - 3000, now - 2000, now - 1000), "session_carts": (104,)},
        )
    ]
    assert body["recommendations"] == rank(*calls[0][0], **calls[0][1]).item_ids


def test_bought_and_unavailable_items_never_appear(client: TestClient) -> None:
    for user in (*WARM_USERS, 5, 999_999):
        assert UNAVAILABLE_ITEM not in recommend(client, user, k=100)["recommendations"]
    assert BOUGHT_ITEM not in recommend(client, BUYER, k=100)["recommendations"]
    # a purchase posted now is filtered from the next answer
    user = 2
    top = recommend(client, user, k=5)["recommendations"][0]
    post_events(
        client, {"visitorid": user, "event": "transaction", "itemid": top, "transactionid": 9}
    )
    after = recommend(client, user, k=100)["recommendations"]
    assert top not in after
    assert len(after) == N_SERVABLE - 1


@pytest.mark.parametrize("k", [1, 5, 18, 19, 100])
def test_exactly_k_distinct_items_when_the_catalogue_allows(client: TestClient, k: int) -> None:
    for user in (3, 31337):
        items = recommend(client, user, k=k)["recommendations"]
        assert len(items) == min(k, N_SERVABLE)
        assert len(set(items)) == len(items)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"user_id": 1, "k": 0}, "k"),
        ({"user_id": 1, "k": 101}, "k"),
        ({"user_id": 1, "k": "five"}, "k"),
        ({"user_id": -1}, "user_id"),
        ({"user_id": "abc"}, "user_id"),
        ({"user_id": "1.5"}, "user_id"),
        ({"user_id": MAX_ID + 1}, "user_id"),
        ({"user_id": 2**63}, "user_id"),
        ({}, "user_id"),
    ],
)
def test_bad_query_is_422_naming_the_parameter(
    client: TestClient, params: dict[str, Any], name: str
) -> None:
    reply = client.get("/recommendations", params=params)
    assert reply.status_code == 422
    body = reply.json()
    assert f"query.{name}" in body["detail"]
    assert body["errors"][0]["field"] == f"query.{name}"


def test_every_bad_parameter_is_named(client: TestClient) -> None:
    body = client.get("/recommendations/x", params={"k": 0}).json()
    assert [e["field"] for e in body["errors"]] == ["path.user_id", "query.k"]
    assert body["detail"] == "; ".join(f"{e['field']}: {e['message']}" for e in body["errors"])


def test_bad_path_user_id_is_422(client: TestClient) -> None:
    for bad in ("-3", "x", "1e3", str(MAX_ID + 1)):
        reply = client.get(f"/recommendations/{bad}")
        assert reply.status_code == 422, bad
        assert reply.json()["errors"][0]["field"] == "path.user_id"


@contextmanager
def documented_routes_only(app: FastAPI) -> Iterator[None]:
    """Take the fast paths out, so the documented FastAPI routes answer."""
    routes = list(app.router.routes)
    app.router.routes[:] = [r for r in routes if not isinstance(r, FastEvents)]
    app.state.fast_path = False
    try:
        yield
    finally:
        app.router.routes[:] = routes
        app.state.fast_path = True


@pytest.mark.parametrize(
    "url",
    [
        "/recommendations?user_id=2",
        "/recommendations?user_id=424242&k=3",
        "/recommendations?user_id=1&user_id=3&other=x",
        "/recommendations/2?k=100",
        "/recommendations?user_id=%201_0%20&k=1.0",
        "/recommendations",
        "/recommendations?user_id=-1&k=0",
        "/recommendations?k=x",
        "/recommendations?user_id=&k=",
        f"/recommendations/{2**63}?k=101",
        "/recommendations/abc",
    ],
)
def test_fast_path_answers_like_the_documented_route(client: TestClient, url: str) -> None:
    fast = client.get(url)
    with documented_routes_only(client.app):  # type: ignore[arg-type]
        documented = client.get(url)
    assert fast.status_code == documented.status_code
    assert fast.headers["content-type"] == documented.headers["content-type"]
    fast_body, documented_body = fast.json(), documented.json()
    if fast.status_code == 200:
        assert fast_body.pop("request_id") != documented_body.pop("request_id")
    assert fast_body == documented_body


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"visitorid": V, "event": "view", "itemid": 100}', "application/json"),
        ('[{"visitorid": V, "event": "addtocart", "itemid": 1}]', "application/json"),
        ('{"visitorid": V, "event": "view", "itemid": 100}', "application/json; charset=utf-8"),
        ('{"visitorid": V, "event": "view", "itemid": 100}', "text/plain"),
        ('{"visitorid": V, "event": "view", "itemid": 100}', None),
        ('{"visitorid": V, "event": "view", "itemid": 100}', "application/vnd.api+json"),
        ('{"visitorid": V, "event": "view", "itemid": "100"}', "application/json"),
        ('{"visitorid": V, "event": "view", "itemid": true}', "application/json"),
        ('{"visitorid": V, "event": "view", "itemid": 1.0}', "application/json"),
        ('{"visitorid": V, "event": "view", "itemid": 1e2}', "application/json"),
        (
            '{"visitorid": V, "event": "view", "itemid": 99999999999999999999999}',
            "application/json",
        ),
        ('{"visitorid": V, "event": "view", "itemid": NaN}', "application/json"),
        ('{"visitorid": V, "event": "view", "itemid": 1', "application/json"),
        ('{"visitorid": V, "event": "transaction", "itemid": 1}', "application/json"),
        ('{"visitorid": V, "event": "view", "itemid": 1, "timestamp": 4102444800000}', None),
        ('{"visitorid": V, "event": "view", "itemid": 1, "itemid": 2}', "application/json"),
        ("[]", "application/json"),
        ("", "application/json"),
        ("\xff", "application/json"),
    ],
)
def test_fast_events_answer_like_the_documented_route(
    client: TestClient, body: str, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    visitor = iter(range(90_000, 90_002))
    fast = client.post("/events", content=body.replace("V", str(next(visitor))), headers=headers)
    with documented_routes_only(client.app):  # type: ignore[arg-type]
        documented = client.post(
            "/events", content=body.replace("V", str(next(visitor))), headers=headers
        )
    assert fast.status_code == documented.status_code, fast.text
    assert fast.headers["content-type"] == documented.headers["content-type"]
    assert fast.json() == documented.json()


def test_request_ids_share_a_process_prefix_and_count_up(client: TestClient) -> None:
    first, second = recommend(client, 424242)["request_id"], recommend(client, 424242)["request_id"]
    assert first[:16] == second[:16]  # per-process random prefix
    assert int(second[16:], 16) > int(first[16:], 16)


def test_recommendations_answer_get_only_like_the_declared_routes(client: TestClient) -> None:
    for path in ("/recommendations?user_id=1", "/recommendations/1"):
        for method in ("HEAD", "POST", "DELETE"):
            reply = client.request(method, path)
            assert reply.status_code == 405, (method, path)
            assert reply.headers["allow"] == "GET"
    reply = client.post("/recommendations/1")
    assert reply.json() == {
        "code": "method_not_allowed",
        "detail": "Method Not Allowed",
        "errors": [],
    }


def test_openapi_declares_the_parameters_of_the_one_query_model(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    fields = RecommendationQuery.model_json_schema()["properties"]
    for path, where in (("/recommendations", "query"), ("/recommendations/{user_id}", "path")):
        operation = paths[path]["get"]
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert parameters["user_id"]["in"] == where
        assert parameters["k"]["in"] == "query"
        assert parameters["user_id"]["required"] and not parameters["k"]["required"]
        for name, parameter in parameters.items():
            assert parameter["schema"] == fields[name]
            assert parameter["description"] == fields[name]["description"]
        assert "RecommendationResponse" in str(operation["responses"]["200"])
        assert {"422", "503"} <= set(operation["responses"])


# ---------------------------------------------------------------------------- events


def test_events_are_stored_with_request_id(client: TestClient) -> None:
    rec = recommend(client, 555)
    event = {
        "timestamp": 1_700_000_000_000,
        "visitorid": 555,
        "event": "addtocart",
        "itemid": rec["recommendations"][0],
        "request_id": rec["request_id"],
    }
    assert post_events(client, event) == {"received": 1, "stored": 1}
    assert post_events(client, event) == {"received": 1, "stored": 0}  # an exact repeat
    events = store_of(client).read_events()
    row = events[events[C.VISITOR] == 555]
    assert len(row) == 1
    assert row[C.EVENT].iloc[0] == C.ADDTOCART
    assert row[C.ITEM].iloc[0] == rec["recommendations"][0]
    assert row[C.TIMESTAMP].iloc[0] == 1_700_000_000_000


def test_exposures_are_logged(client: TestClient) -> None:
    rec = recommend(client, 8080, k=3)
    assert client.portal is not None
    client.portal.call(client.app.state.service.flush_exposures)  # type: ignore[attr-defined]
    exposures = store_of(client).read_exposures()
    mine = exposures[exposures[C.REQUEST_ID] == rec["request_id"]]
    assert len(mine) == 1
    assert mine[C.VARIANT].iloc[0] == "control"
    assert str(mine[C.MODEL_VERSION].iloc[0]) == "v1"
    assert list(mine[C.ITEM_IDS].iloc[0]) == rec["recommendations"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"visitorid": 1, "event": "click", "itemid": 100}, "body.event"),
        (
            [
                {"visitorid": 1, "event": "view", "itemid": 100},
                {"visitorid": 1, "event": "buy", "itemid": 1},
            ],
            "body[1].event",
        ),
        ({"visitorid": -1, "event": "view", "itemid": 100}, "body.visitorid"),
        ({"visitorid": MAX_ID + 1, "event": "view", "itemid": 100}, "body.visitorid"),
        ({"event": "view", "itemid": 100}, "body.visitorid"),
        ({"visitorid": 1, "event": "view", "itemid": "x"}, "body.itemid"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "color": "red"}, "body.color"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "transactionid": 5}, "body"),
        ({"visitorid": 1, "event": "transaction", "itemid": 1}, "body"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "timestamp": 5}, "body.timestamp"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "request_id": "a b"}, "body.request_id"),
        ([], "body"),
        ("view", "body"),
    ],
)
def test_malformed_event_is_422_naming_the_field(
    client: TestClient, payload: object, field: str
) -> None:
    reply = client.post("/events", json=payload)
    assert reply.status_code == 422, reply.text
    body = reply.json()
    assert body["errors"][0]["field"] == field
    assert field in body["detail"]


def test_transaction_rule_is_the_events_contract(client: TestClient) -> None:
    reply = client.post("/events", json={"visitorid": 1, "event": "transaction", "itemid": 1})
    assert TRANSACTION_REQUIRED in reply.json()["detail"]


def test_invalid_json_is_422(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    reply = client.post("/events", content=b'{"visitorid": 1,', headers=headers)
    assert reply.status_code == 422
    assert "invalid JSON" in reply.json()["detail"]
    reply = client.post("/events", content=b'{"visitorid": "\xff"}', headers=headers)
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("body: not valid JSON")


def test_batch_or_body_over_the_limit_is_413(client: TestClient) -> None:
    event = b'{"visitorid":1,"event":"view","itemid":100}'
    batch = [{"visitorid": 1, "event": "view", "itemid": 100}] * 51  # max_batch is 50
    reply = client.post("/events", json=batch)
    assert reply.status_code == 413
    assert "max_batch" in reply.json()["detail"]
    huge = b"[" + b",".join([event] * 5000) + b"]"
    headers = {"content-type": "application/json"}
    reply = client.post("/events", content=huge, headers=headers)  # Content-Length checked
    assert reply.status_code == 413
    assert reply.json()["errors"] == []

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it is read
        yield b"["
        for _ in range(5000):
            yield event + b","
        yield event + b"]"

    reply = client.post("/events", content=chunks(), headers=headers)
    assert reply.status_code == 413
    assert "max_batch" in reply.json()["detail"]


def test_store_down_is_503_and_recommendations_go_on(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    client = client_factory(db_url=f"sqlite:///{tmp_path / 'a-file' / 'events.db'}")
    reply = client.post("/events", json={"visitorid": 1, "event": "view", "itemid": 100})
    assert reply.status_code == 503
    assert reply.json()["detail"].startswith("event store unavailable")
    assert recommend(client, 1)["model_version"] == "v1"


class FailingStore:
    """An event store whose writes fail with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def append_event_batches(self, frame: object, sizes: object) -> list[int]:
        raise self.error

    def log_exposures(self, rows: object) -> int:
        raise self.error


def test_failed_write_is_503_but_the_events_still_count_for_recommendations(
    client: TestClient,
) -> None:
    client.app.state.service.store = FailingStore(OSError("disk full"))  # type: ignore[attr-defined]
    visitor = 4711
    reply = client.post("/events", json={"visitorid": visitor, "event": "view", "itemid": 103})
    assert reply.status_code == 503
    assert "retry later" in reply.json()["detail"]
    assert recommend(client, visitor)["source"] == "fold_in"
    text = client.get("/metrics").text
    assert metric(text, r'recsys_event_store_errors_total\{table="events"\}') == 1


def test_event_the_store_rejects_is_422(client: TestClient) -> None:
    error = DataValidationError("row 0: negative id", column=C.ITEM)
    client.app.state.service.store = FailingStore(error)  # type: ignore[attr-defined]
    reply = client.post("/events", json={"visitorid": 1, "event": "view", "itemid": 100})
    assert reply.status_code == 422
    assert reply.json()["errors"] == [{"field": "body.itemid", "message": "row 0: negative id"}]


class Misconfigured:
    """A recommender that finds its configuration invalid when asked."""

    def recommend(self, *args: object, **kwargs: object) -> None:
        raise ConfigurationError("candidates must be >= 1, got 0 (postgresql://u:secret@db)")


def test_a_configuration_error_is_500_without_its_message(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    manager = client.app.state.manager  # type: ignore[attr-defined]
    manager.current = dataclasses.replace(manager.current, recommender=Misconfigured())
    reply = client.get("/recommendations", params={"user_id": 1})
    assert reply.status_code == 500
    assert reply.json() == {
        "code": "misconfigured",
        "detail": "service misconfigured; see the service log",
        "errors": [],
    }
    assert "candidates must be >= 1" in caplog.text


# ---------------------------------------------------------------------------- model and health


def test_health_and_model(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "model_version": "v1",
        "model_source": "local",
        "model_uri": "local bundle",  # never a path
        "registry_reachable": None,
        "code": None,
        "detail": None,
        "event_store": "ok",
        "online_history": "ok",
    }
    model = client.get("/model").json()
    assert model["version"] == "v1"
    assert model["n_items"] == len(ITEM_IDS)
    assert model["policy"] == "blend"
    assert model["metadata"]["metrics"]["ndcg@5"] is None  # NaN is not JSON


def test_not_ready_until_a_model_loads(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet"
    client = client_factory(ready=False, model_uri=str(missing))
    failed = r'recsys_model_reloads_total\{outcome="failure",trigger="startup"\}'
    wait_until(lambda: metric(client.get("/metrics").text, failed) == 1, 10, "startup failure")
    reply = client.get("/health/ready")
    assert reply.status_code == 503
    assert reply.json()["ready"] is False
    assert reply.json()["model_version"] is None
    for path in ("/recommendations?user_id=1", "/recommendations/1", "/model"):
        reply = client.get(path)
        assert reply.status_code == 503, path
        assert reply.json() == {
            "code": "model_not_ready",
            "detail": "no model is loaded yet; see /health/ready",
            "errors": [],
        }
    assert metric(client.get("/metrics").text, "recsys_model_ready") == 0
    write_bundle(missing, version="late")
    reply = client.post("/admin/reload", headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "reloaded", "model_version": "late", "previous_version": None}
    # ready once the online history is rebuilt for the first model (a background poll away)
    wait_until(lambda: client.get("/health/ready").status_code == 200, 10, "ready")
    assert client.get("/recommendations/1").json()["model_version"] == "late"


def test_broken_reload_is_502_and_the_old_model_keeps_serving(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    client = client_factory(model_uri=str(bundle))
    corrupt_bundle(bundle)
    reply = client.post("/admin/reload", headers=AUTH)
    assert reply.status_code == 502
    assert reply.json()["detail"].endswith("; still serving v1")
    assert recommend(client, 2)["model_version"] == "v1"
    ready = client.get("/health/ready").json()
    assert ready["ready"] is True and ready["detail"].startswith("loading")
    text = client.get("/metrics").text
    assert metric(text, r'recsys_model_reloads_total\{outcome="failure",trigger="admin"\}') == 1
    write_bundle(bundle, version="v2")
    reply = client.post("/admin/reload", headers=AUTH)
    assert reply.json() == {"status": "reloaded", "model_version": "v2", "previous_version": "v1"}
    assert client.get("/health/ready").json()["detail"] is None


def test_reload_needs_the_bearer_token(client: TestClient) -> None:
    reply = client.post("/admin/reload")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in reply.json()["detail"]
    assert client.post("/admin/reload", auth=("admin", ADMIN_TOKEN)).status_code == 401
    reply = client.post("/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 403
    assert reply.json() == {"code": "forbidden", "detail": "invalid admin token", "errors": []}
    reply = client.post("/admin/reload", headers=AUTH)
    assert reply.status_code == 200
    assert reply.json() == {"status": "reloaded", "model_version": "v1", "previous_version": "v1"}


def test_reload_disabled_without_a_configured_token(client: TestClient) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    settings = app.state.settings.model_copy(update={"admin_token": None})
    app.dependency_overrides[get_settings] = lambda: settings
    for headers in ({}, AUTH):
        reply = client.post("/admin/reload", headers=headers)
        assert reply.status_code == 403
        assert reply.json()["detail"].startswith("reload disabled")


def test_metrics_expose_recsys_names_and_no_user_ids(client: TestClient) -> None:
    visitor = 918273645
    recommend(client, visitor)
    client.get(f"/recommendations/{visitor}")
    post_events(client, {"visitorid": visitor, "event": "view", "itemid": 101})
    client.get("/recommendations", params={"user_id": visitor, "k": 0})
    client.get(f"/no/such/{visitor}")
    text = client.get("/metrics").text
    for name in (
        "recsys_http_request_duration_seconds_bucket",
        "recsys_http_requests_total",
        "recsys_recommendations_total",
        "recsys_fallback_total",
        "recsys_recommendation_score_bucket",
        "recsys_model_info",
        "recsys_model_age_seconds",
        "recsys_model_reloads_total",
        "recsys_model_polls_total",
        "recsys_events_ingested_total",
    ):
        assert name in text, name
    assert str(visitor) not in text
    assert 'route="/recommendations/{user_id}"' in text
    assert 'route="unmatched"' in text
    pattern = r'recsys_http_requests_total\{method="GET",route="/recommendations",status="422"\}'
    assert metric(text, pattern) >= 1
    assert metric(text, r'recsys_model_info\{model_source="local",version="v1"\}') == 1
    assert metric(text, r'recsys_events_ingested_total\{event="view"\}') >= 1
    # the visitor was unknown, then folded in: both are fallbacks
    assert metric(text, r'recsys_fallback_total\{variant="control"\}') >= 2
    assert 'le="0.005"' in text  # millisecond-range latency buckets
    assert metric(text, "recsys_model_age_seconds") > 3600
