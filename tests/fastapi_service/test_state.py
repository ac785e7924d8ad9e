"""Online history (in process: bounded LRU; in Redis: shared), the exposure buffer and the
group commit of posted events."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from fastapi_service.state import (
    NO_SESSION,
    ExposureBuffer,
    GroupCommit,
    History,
    LogCursor,
    OnlineHistory,
    RedisHistory,
    Session,
)

pytestmark = pytest.mark.service

#: the test Redis database (flushed only by key prefix, never as a whole)
REDIS_URL = "redis://127.0.0.1:6379/6"

Factory = Callable[[int, int], History]


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["process", "redis"])
def make_history(request: pytest.FixtureRequest) -> Factory:
    if request.param == "process":
        return OnlineHistory
    prefix = request.getfixturevalue("redis_prefix")
    return lambda visitors, items: RedisHistory(REDIS_URL, visitors, items, 3600, prefix=prefix)


def test_history_keeps_the_latest_events_in_time_order(make_history: Factory) -> None:
    history = make_history(10, 3)
    history.add([(3, 1, 30, "view"), (1, 1, 10, "view"), (2, 1, 20, "addtocart")])
    assert history.get(1) == Session((10, 20, 30), (1, 2, 3), (20,), ())
    history.add([(4, 1, 10, "view"), (5, 1, 10, "addtocart"), (5, 1, 10, "addtocart")])
    assert history.get(1) == Session((30, 10, 10), (3, 4, 5), (10,), ())
    history.add([(6, 1, 40, "transaction"), (4, 1, 10, "view")])  # one applied again
    assert history.get(1) == Session((30, 10, 10), (3, 4, 5), (10,), (40,))
    assert history.get(2) == NO_SESSION


def test_a_purchase_stays_filtered_beyond_the_item_cap(make_history: Factory) -> None:
    history = make_history(10, 2)
    history.add([(1, 7, 100, "transaction")] + [(2 + i, 7, i, "view") for i in range(5)])
    session = history.get(7)
    assert session.items == (3, 4) and session.bought == (100,)


def test_redis_history_is_shared_by_every_instance(redis_prefix: str) -> None:
    one, two = (RedisHistory(REDIS_URL, 10, 5, 3600, prefix=redis_prefix) for _ in range(2))
    one.add([(1, 5, 50, "view"), (2, 5, 51, "transaction")])
    assert two.get(5) == Session((50,), (1,), (), (51,))
    assert len(two) == 1


def test_redis_history_forgets_the_least_recently_posting_visitor(redis_prefix: str) -> None:
    history = RedisHistory(REDIS_URL, 2, 5, 3600, prefix=redis_prefix)
    for visitor in (1, 2, 3):
        history.add([(visitor, visitor, 10 * visitor, "view")])
        time.sleep(0.01)  # distinct activity times
    assert len(history) == 2
    assert history.get(1) == NO_SESSION
    assert history.get(3) == Session((30,), (3,), (), ())


def test_redis_outage_answers_without_history_and_counts_it() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    errors: Counter[str] = Counter()
    history = RedisHistory(url, 10, 5, 3600, on_error=lambda op: errors.update([op]), retry_s=60)
    started = time.perf_counter()
    history.add([(1, 1, 10, "view")])
    for _ in range(100):  # after the first failure Redis is not tried again for retry_s
        assert history.get(1) == NO_SESSION
    history.add([(2, 1, 11, "view")])  # skipped (and counted) while Redis is down
    assert len(history) == 0
    assert time.perf_counter() - started < 1.0
    assert errors == Counter(write=2)


def test_history_forgets_the_least_recently_active_visitor() -> None:
    history = OnlineHistory(max_visitors=2, max_items=5)
    history.add([(1, 1, 10, "view")])
    history.add([(2, 2, 20, "view")])
    history.get(1)  # visitor 1 is now the most recent
    history.add([(3, 3, 30, "view")])
    assert len(history) == 2
    assert history.get(2) == NO_SESSION
    assert history.get(1) == Session((10,), (1,), (), ())
    assert history.get(3) == Session((30,), (3,), (), ())


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


class Recorder:
    """A ``write`` for GroupCommit: records each group, slow enough for others to queue up;
    negative items are bad data (ValueError), 0 is an outage (OSError)."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(0.02)
        if 0 in items:
            raise OSError("store down")
        if any(i < 0 for i in items):
            raise ValueError(f"bad item in {items}")
        with self.lock:
            self.groups.append(items)
        return [i * 10 for i in items]


def test_group_commit_writes_concurrent_submissions_together() -> None:
    write = Recorder()

    async def main() -> list[int]:
        commit = GroupCommit(write, isolate=(ValueError,))
        results = await asyncio.gather(*(commit.submit(i) for i in range(1, 41)))
        await commit.close()
        return results

    assert asyncio.run(main()) == [i * 10 for i in range(1, 41)]
    written = [i for group in write.groups for i in group]
    assert sorted(written) == list(range(1, 41))  # each exactly once
    assert len(write.groups) <= 3  # the first alone, then the ones that queued meanwhile


def test_group_commit_isolates_bad_data_but_shares_an_outage() -> None:
    write = Recorder()

    async def main() -> list[object]:
        commit = GroupCommit(write, isolate=(ValueError,))
        first = asyncio.create_task(commit.submit(1))  # the others queue behind it
        await asyncio.sleep(0)
        bad = await asyncio.gather(*(commit.submit(i) for i in (2, -3, 4)), return_exceptions=True)
        down = await asyncio.gather(commit.submit(5), commit.submit(0), return_exceptions=True)
        await commit.close()
        return [await first, *bad, *down]

    one, two, bad, four, five, zero = asyncio.run(main())
    assert (one, two, four) == (10, 20, 40)
    assert isinstance(bad, ValueError) and "-3" in str(bad)
    assert isinstance(five, OSError) and isinstance(zero, OSError)  # not isolated
    assert sorted(i for group in write.groups for i in group) == [1, 2, 4]


def test_the_in_process_history_does_not_depend_on_order_or_repetition() -> None:
    events = [(t, 1, item, "view") for t, item in [(5, 50), (1, 10), (3, 30), (4, 10), (2, 20)]]
    events += [(6, 1, 60, "transaction"), (2, 1, 20, "transaction")]
    once, shuffled = OnlineHistory(10, 3), OnlineHistory(10, 3)
    once.add(events)
    shuffled.add(events[::-1][:4])
    shuffled.add(events)  # the log reader applies again what a request applied
    assert once.get(1) == shuffled.get(1) == Session((30, 10, 50), (3, 4, 5), (), (60, 20))


def test_purchases_outlive_eviction_until_the_model_has_seen_them() -> None:
    history = OnlineHistory(max_visitors=1, max_items=1)
    history.add([(100, 1, 10, "transaction"), (200, 1, 11, "transaction"), (150, 1, 12, "view")])
    history.add([(300, 2, 20, "view")])  # visitor 1's recent items are evicted, not purchases
    assert history.get(1) == Session((), (), (), (11, 10))
    history.forget_bought_before(150)  # a new model was trained on events before 150
    assert history.get(1) == Session((), (), (), (11,))


def test_log_cursor_asks_again_for_ids_skipped_until_they_commit_or_expire() -> None:
    cursor = LogCursor(after=10, gap_s=5.0)
    cursor.advance([11, 14], now=0.0)  # 12 and 13 not committed yet
    assert (cursor.after, sorted(cursor.gaps)) == (14, [12, 13])
    cursor.advance([12, 15], now=1.0)  # 12 committed late
    assert (cursor.after, cursor.gaps) == (15, [13])
    cursor.advance([], now=6.0)  # 13 never came: rolled back
    assert (cursor.after, cursor.gaps) == (15, [])
