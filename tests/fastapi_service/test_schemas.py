"""Request schemas and the readable validation messages."""

from __future__ import annotations

import typing

import pytest
from pydantic import TypeAdapter, ValidationError

from fastapi_service.app import _field
from fastapi_service.schemas import EventsBody, EventType
from recsys import columns as C


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
