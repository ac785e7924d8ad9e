"""Online history (bounded LRU) and the exposure buffer."""

from __future__ import annotations

import pytest

from fastapi_service.state import ExposureBuffer, OnlineHistory

pytestmark = pytest.mark.service


def test_history_keeps_the_latest_distinct_items_in_event_order() -> None:
    history = OnlineHistory(max_visitors=10, max_items=3)
    history.add([(3, 1, 30, "view"), (1, 1, 10, "view"), (2, 1, 20, "addtocart")])
    assert history.get(1) == ((10, 20, 30), ())
    history.add([(4, 1, 10, "view"), (5, 1, 40, "view")])
    assert history.get(1) == ((30, 10, 40), ())
    history.add([(6, 1, 40, "transaction")])
    assert history.get(1) == ((30, 10, 40), (40,))
    assert history.get(2) == ((), ())


def test_history_forgets_the_least_recently_active_visitor() -> None:
    history = OnlineHistory(max_visitors=2, max_items=5)
    history.add([(1, 1, 10, "view")])
    history.add([(2, 2, 20, "view")])
    history.get(1)  # visitor 1 is now the most recent
    history.add([(3, 3, 30, "view")])
    assert len(history) == 2
    assert history.get(2) == ((), ())
    assert history.get(1) == ((10,), ())
    assert history.get(3) == ((30,), ())


def test_exposure_buffer_drops_the_oldest_when_full() -> None:
    buffer = ExposureBuffer(capacity=2)
    assert buffer.add(("a",)) is False
    assert buffer.add(("b",)) is False
    assert buffer.add(("c",)) is True
    assert buffer.drain() == [("b",), ("c",)]
    assert len(buffer) == 0


def test_freeze_heap_moves_live_objects_to_the_permanent_generation() -> None:
    import gc
    import weakref

    from fastapi_service.model_manager import freeze_heap

    class Node:
        """A weakref-able object kept alive only by a reference cycle."""

        def __init__(self) -> None:
            self.cycle = [self]

    try:
        node = Node()  # alive at the first call: frozen with the rest of the heap
        freeze_heap()
        assert gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        dead = weakref.ref(node)
        del node  # now garbage, but frozen objects are never collected
        assert dead() is not None
        freeze_heap()  # a second swap unfreezes, collects and freezes again
        assert dead() is None, "the garbage cycle of the frozen heap was not collected"
        assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() <= frozen + 1000
    finally:
        gc.unfreeze()
