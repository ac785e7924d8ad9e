"""Service API against a real uvicorn process serving the tiny local bundle."""

from __future__ import annotations

import re
import time

import pytest
from service_testkit import (
    BOUGHT_ITEM,
    BUYER,
    ITEM_IDS,
    N_SERVABLE,
    UNAVAILABLE_ITEM,
    WARM_USERS,
    Server,
)

from recsys import columns as C

REASONS = {
    "you viewed it",
    "similar to an item you viewed",
    "popular in its category",
    "popular now",
    "recommended for you",
}


def recommend(api: Server, user_id: int, k: int = 5) -> dict:
    reply = api.client().get("/recommendations", params={"user_id": user_id, "k": k})
    assert reply.status_code == 200, reply.text
    return reply.json()


def post_events(api: Server, events: list[dict] | dict) -> dict:
    reply = api.client().post("/events", json=events)
    assert reply.status_code == 202, reply.text
    return reply.json()


def test_warm_user_gets_k_items_with_reasons_and_version(api: Server) -> None:
    body = recommend(api, 2, k=5)
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


def test_default_k_is_five_and_path_form_answers_the_same(api: Server) -> None:
    query = recommend(api, 3)
    path = api.client().get("/recommendations/3").json()
    assert len(query["recommendations"]) == 5
    assert path["recommendations"] == query["recommendations"]
    assert path["source"] == query["source"]
    assert path["request_id"] != query["request_id"]


def test_unknown_user_gets_popular_available_items(api: Server) -> None:
    body = recommend(api, 424242, k=5)
    assert body["source"] == "popular"
    # popular is 119, 118, ...: the unavailable 119 is skipped
    assert body["recommendations"] == [118, 117, 116, 115, 114]
    assert all(item["reason"] in REASONS for item in body["items"])


def test_fold_in_after_posted_events(api: Server) -> None:
    visitor = 777001
    assert recommend(api, visitor)["source"] == "popular"
    now = int(time.time() * 1000)
    accepted = post_events(
        api,
        [
            {"timestamp": now - 2000, "visitorid": visitor, "event": "view", "itemid": 103},
            {"timestamp": now - 1000, "visitorid": visitor, "event": "addtocart", "itemid": 104},
        ],
    )
    assert accepted == {"received": 2, "stored": 2}
    body = recommend(api, visitor, k=5)
    assert body["source"] == "fold_in"
    assert len(body["recommendations"]) == 5
    assert len(set(body["recommendations"])) == 5
    assert body["recommendations"] != [118, 117, 116, 115, 114]
    assert all(item["reason"] in REASONS for item in body["items"])


def test_bought_and_unavailable_items_never_appear(api: Server) -> None:
    for user in (*WARM_USERS, 5, 999_999):
        items = recommend(api, user, k=100)["recommendations"]
        assert UNAVAILABLE_ITEM not in items
    assert BOUGHT_ITEM not in recommend(api, BUYER, k=100)["recommendations"]
    # a purchase posted now is filtered from the next answer
    user = 2
    top = recommend(api, user, k=5)["recommendations"][0]
    post_events(api, {"visitorid": user, "event": "transaction", "itemid": top, "transactionid": 9})
    after = recommend(api, user, k=100)["recommendations"]
    assert top not in after
    assert len(after) == N_SERVABLE - 1


@pytest.mark.parametrize("k", [1, 5, 18, 19, 100])
def test_exactly_k_distinct_items_when_the_catalogue_allows(api: Server, k: int) -> None:
    for user in (3, 31337):
        items = recommend(api, user, k=k)["recommendations"]
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
        ({"user_id": 2**63}, "user_id"),
        ({}, "user_id"),
    ],
)
def test_bad_query_is_422_naming_the_parameter(api: Server, params: dict, name: str) -> None:
    reply = api.client().get("/recommendations", params=params)
    assert reply.status_code == 422
    body = reply.json()
    assert f"query.{name}" in body["detail"]
    assert body["errors"][0]["field"] == f"query.{name}"


def test_bad_path_user_id_is_422(api: Server) -> None:
    for bad in ("-3", "x", "1e3"):
        reply = api.client().get(f"/recommendations/{bad}")
        assert reply.status_code == 422, bad
        assert "path.user_id" in reply.json()["detail"]


def test_request_ids_share_a_process_prefix_and_count_up(api: Server) -> None:
    first, second = recommend(api, 424242)["request_id"], recommend(api, 424242)["request_id"]
    assert first[:16] == second[:16]  # per-process random prefix
    assert int(second[16:], 16) > int(first[16:], 16)


def test_recommendations_answer_get_only_like_the_declared_routes(api: Server) -> None:
    for path in ("/recommendations?user_id=1", "/recommendations/1"):
        for method in ("HEAD", "POST", "DELETE"):
            reply = api.client().request(method, path)
            assert reply.status_code == 405, (method, path)
            assert reply.headers["allow"] == "GET"
    reply = api.client().post("/recommendations/1")
    assert reply.json() == {"detail": "Method Not Allowed", "errors": []}


def test_openapi_still_documents_the_recommendation_parameters(api: Server) -> None:
    paths = api.client().get("/openapi.json").json()["paths"]
    for path, where in (("/recommendations", "query"), ("/recommendations/{user_id}", "path")):
        parameters = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        assert parameters["user_id"]["in"] == where
        assert parameters["k"]["schema"]["maximum"] >= 1
        assert "RecommendationResponse" in str(paths[path]["get"]["responses"]["200"])


def test_events_are_stored_with_request_id(api: Server) -> None:
    from recsys.data.store import EventStore

    rec = recommend(api, 555)
    event = {
        "timestamp": 1_700_000_000_000,
        "visitorid": 555,
        "event": "addtocart",
        "itemid": rec["recommendations"][0],
        "request_id": rec["request_id"],
    }
    assert post_events(api, event) == {"received": 1, "stored": 1}
    store = EventStore(api.env["RECSYS_DB_URL"])
    events = store.read_events()
    row = events[events[C.VISITOR] == 555]
    assert len(row) == 1
    assert row[C.EVENT].iloc[0] == C.ADDTOCART
    assert row[C.ITEM].iloc[0] == rec["recommendations"][0]
    assert row[C.TIMESTAMP].iloc[0] == 1_700_000_000_000


def test_exposures_are_logged(api: Server) -> None:
    from recsys.data.store import EventStore

    rec = recommend(api, 8080, k=3)
    store = EventStore(api.env["RECSYS_DB_URL"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        exposures = store.read_exposures()
        mine = exposures[exposures[C.REQUEST_ID] == rec["request_id"]]
        if len(mine):
            break
        time.sleep(0.1)
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
        ({"event": "view", "itemid": 100}, "body.visitorid"),
        ({"visitorid": 1, "event": "view", "itemid": "x"}, "body.itemid"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "color": "red"}, "body.color"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "transactionid": 5}, "transactionid"),
        ({"visitorid": 1, "event": "transaction", "itemid": 1}, "transactionid is required"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "timestamp": 5}, "body.timestamp"),
        ({"visitorid": 1, "event": "view", "itemid": 1, "request_id": "a b"}, "body.request_id"),
        ([], "body"),
        ("view", "body"),
    ],
)
def test_malformed_event_is_422_naming_the_field(api: Server, payload: object, field: str) -> None:
    reply = api.client().post("/events", json=payload)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["detail"]


def test_invalid_json_is_422(api: Server) -> None:
    reply = api.client().post(
        "/events", content=b'{"visitorid": 1,', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    assert "invalid JSON" in reply.json()["detail"]
    reply = api.client().post(
        "/events", content=b'{"visitorid": "\xff"}', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("body: not valid JSON")


def test_batch_over_max_is_413(api: Server) -> None:
    batch = [{"visitorid": 1, "event": "view", "itemid": 100}] * 51  # max_batch is 50
    reply = api.client().post("/events", json=batch)
    assert reply.status_code == 413
    assert "max_batch" in reply.json()["detail"]
    huge = b"[" + b",".join([b'{"visitorid":1,"event":"view","itemid":100}'] * 5000) + b"]"
    reply = api.client().post("/events", content=huge, headers={"content-type": "application/json"})
    assert reply.status_code == 413


def test_health_and_model(api: Server) -> None:
    client = api.client()
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["model_version"] == "v1"
    assert ready.json()["model_source"] == "local"
    assert ready.json()["registry_reachable"] is None
    model = client.get("/model").json()
    assert model["version"] == "v1"
    assert model["n_items"] == len(ITEM_IDS)
    assert model["policy"] == "blend"
    assert model["metadata"]["metrics"]["ndcg@5"] is None  # NaN is not JSON


def test_metrics_expose_recsys_names_and_no_user_ids(api: Server) -> None:
    visitor = 918273645
    recommend(api, visitor)
    api.client().get(f"/recommendations/{visitor}")
    post_events(api, {"visitorid": visitor, "event": "view", "itemid": 101})
    api.client().get("/recommendations", params={"user_id": visitor, "k": 0})
    api.client().get(f"/no/such/{visitor}")
    text = api.client().get("/metrics").text
    for name in (
        "recsys_http_request_duration_seconds_bucket",
        "recsys_http_requests_total",
        "recsys_recommendations_total",
        "recsys_fallback_total",
        "recsys_recommendation_score_bucket",
        "recsys_model_info",
        "recsys_model_age_seconds",
        "recsys_model_reloads_total",
        "recsys_events_ingested_total",
    ):
        assert name in text, name
    assert str(visitor) not in text
    assert 'route="/recommendations/{user_id}"' in text
    assert 'route="unmatched"' in text
    assert re.search(
        r'recsys_http_requests_total\{method="GET",route="/recommendations",status="422"\} [1-9]',
        text,
    )
    assert 'recsys_model_info{model_source="local",version="v1"} 1.0' in text
    assert re.search(r'recsys_events_ingested_total\{event="view"\} [1-9]', text)
    assert 'le="0.005"' in text  # millisecond-range latency buckets
    age = float(re.search(r"^recsys_model_age_seconds (\S+)$", text, re.M).group(1))
    assert age > 3600
