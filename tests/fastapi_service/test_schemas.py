"""Request schemas and the readable validation messages."""

from __future__ import annotations

import typing

import pytest
from pydantic import TypeAdapter, ValidationError

from fastapi_service.app import _field
from fastapi_service.schemas import EventsBody, EventType
from recsys import columns as C

pytestmark = pytest.mark.service


def test_event_types_are_the_library_vocabulary() -> None:
    assert typing.get_args(EventType) == C.EVENT_TYPES


def test_body_is_one_event_or_a_batch() -> None:
    adapter = TypeAdapter(EventsBody)
    one = adapter.validate_python({"visitorid": 1, "event": "view", "itemid": 2})
    assert one.itemid == 2
    batch = adapter.validate_python([{"visitorid": 1, "event": "view", "itemid": 2}] * 2)
    assert len(batch) == 2
    with pytest.raises(ValidationError) as info:
        adapter.validate_python([{"visitorid": 1, "event": "view", "itemid": 2}, {"event": "x"}])
    fields = {_field(("body", *e["loc"])) for e in info.value.errors()}
    assert fields == {"body[1].event", "body[1].visitorid", "body[1].itemid"}


@pytest.mark.parametrize(
    ("loc", "text"),
    [
        (("query", "k"), "query.k"),
        (("path", "user_id"), "path.user_id"),
        (("body", "event", "event"), "body.event"),
        (("body", "batch", 3, "itemid"), "body[3].itemid"),
        (("body",), "body"),
        ((), "request"),
    ],
)
def test_field_names(loc: tuple, text: str) -> None:
    assert _field(loc) == text


def test_events_take_the_bounds_of_the_events_contract() -> None:
    from fastapi_service.schemas import Event
    from recsys.data import schema

    fields = Event.model_json_schema()["properties"]
    for name in (C.VISITOR, C.ITEM):
        assert (fields[name]["minimum"], fields[name]["maximum"]) == (0, schema.MAX_ID)
    timestamp = fields[C.TIMESTAMP]["anyOf"][0]
    assert timestamp["minimum"] == schema.MIN_TIMESTAMP_MS
    assert timestamp["exclusiveMaximum"] == schema.MAX_TIMESTAMP_MS
    assert fields[C.REQUEST_ID]["anyOf"][0]["pattern"] == schema.REQUEST_ID_PATTERN


def test_response_source_is_the_shared_vocabulary() -> None:
    from fastapi_service.schemas import RecommendationResponse
    from recsys.names import Source

    spec = RecommendationResponse.model_json_schema()
    assert spec["$defs"]["Source"]["enum"] == [s.value for s in Source]
