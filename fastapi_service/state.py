"""Request-side state of the service: online histories, buffered exposures, group commit.

Online histories live in process (:class:`OnlineHistory`, kept up to date with the event
store's log by every worker, see :class:`LogCursor`) or in Redis (:class:`RedisHistory`,
shared by every replica and worker); both have the same interface.
(The served model is the :class:`~fastapi_service.model_manager.ModelManager`'s.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

from recsys import columns as C

log = logging.getLogger("fastapi_service")
T = TypeVar("T")
R = TypeVar("R")


class Session(NamedTuple):
    """A visitor's online events, as :meth:`recsys.serving.Recommender.recommend` takes
    them (and as the learned ranker was trained and is evaluated: one entry per event)."""

    #: viewed or added-to-cart items, one per event, oldest first
    items: tuple[int, ...]
    #: the epoch ms of each of ``items``
    times: tuple[int, ...]
    #: the items among them that were added to cart
    carts: tuple[int, ...]
    #: bought items, newest first
    bought: tuple[int, ...]


#: the session of a visitor without online events
NO_SESSION = Session((), (), (), ())


def _session(events: Iterable[tuple[int, int, bool]], bought: tuple[int, ...]) -> Session:
    """A :class:`Session` of ``(time, item, carted)`` events (in any order)."""
    ordered = sorted(events)
    return Session(
        tuple(item for _, item, _ in ordered),
        tuple(t for t, _, _ in ordered),
        tuple(dict.fromkeys(item for _, item, carted in ordered if carted)),
        bought,
    )


class History(Protocol):
    """What the service needs of an online history (in process or shared)."""

    def __len__(self) -> int: ...

    def add(self, events: Iterable[tuple[int, int, int, str]]) -> None: ...

    def get(self, visitor_id: int) -> Session: ...


#: purchases kept per visitor, oldest forgotten first: a bound against a client posting
#: endless purchases, far above any real shopper's
BOUGHT_CAP = 10_000


class OnlineHistory:
    """Recent events of visitors who posted events, and their purchases; safe across threads.

    A visitor's recent events are their ``max_items`` newest views and add-to-carts, each a
    ``(time, item, carted)`` entry kept once: applying the same events twice or in another
    order gives the same history, so the event-log reader (:class:`LogCursor`) may apply
    what a request already applied. Visitors with recent events form a bounded LRU map.
    Purchases are kept apart and are never evicted with the visitor (a bought item must not
    come back): their number is bounded by the events since the served model's cutoff
    (:meth:`forget_bought_before` drops those the model has seen) and by
    :data:`BOUGHT_CAP` per visitor.

    Parameters
    ----------
    max_visitors
        Visitors whose recent items are kept; the least recently active one is forgotten
        first.
    max_items
        Recent views and add-to-carts kept per visitor.
    """

    def __init__(self, max_visitors: int, max_items: int) -> None:
        self.max_visitors = max_visitors
        self.max_items = max_items
        self._recent: OrderedDict[int, set[tuple[int, int, bool]]] = OrderedDict()
        self._bought: dict[int, dict[int, int]] = {}  # item -> newest time
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, events: Iterable[tuple[int, int, int, str]]) -> None:
        """Apply ``(timestamp, visitorid, itemid, event)`` tuples (in any order)."""
        with self._lock:
            for timestamp, visitor_id, item_id, event in events:
                if event == C.PURCHASE:
                    items = self._bought.setdefault(visitor_id, {})
                    items[item_id] = max(timestamp, items.get(item_id, timestamp))
                    if len(items) > BOUGHT_CAP:
                        del items[min(items, key=items.__getitem__)]
                    continue
                recent = self._recent.setdefault(visitor_id, set())
                self._recent.move_to_end(visitor_id)
                recent.add((timestamp, item_id, event == C.ADDTOCART))
                if len(recent) > self.max_items:
                    recent.remove(min(recent))
            while len(self._recent) > self.max_visitors:
                self._recent.popitem(last=False)

    def get(self, visitor_id: int) -> Session:
        """A visitor's :class:`Session` (:data:`NO_SESSION` when unknown)."""
        if visitor_id not in self._recent and visitor_id not in self._bought:
            return NO_SESSION  # the common case needs no lock
        with self._lock:
            recent = self._recent.get(visitor_id, set())
            if recent:
                self._recent.move_to_end(visitor_id)
            bought = self._bought.get(visitor_id, {})
            return _session(recent, tuple(sorted(bought, key=bought.__getitem__, reverse=True)))

    def forget_bought_before(self, cutoff_ms: int) -> None:
        """Drop purchases dated before ``cutoff_ms``: the served model holds them."""
        with self._lock:
            for visitor_id in list(self._bought):
                kept = {i: t for i, t in self._bought[visitor_id].items() if t >= cutoff_ms}
                if kept:
                    self._bought[visitor_id] = kept
                else:
                    del self._bought[visitor_id]


class LogCursor:
    """Where a reader of the event store's log (:meth:`EventStore.event_log`) stands.

    Ids are given out in insertion order but transactions may commit out of it (with
    PostgreSQL a transaction holding a lower id can commit after one holding a higher id):
    ids a read skipped are asked for again (``gaps``) for ``gap_s`` seconds, after which
    they are taken for rolled back.
    """

    def __init__(self, after: int, gap_s: float = 10.0, max_gaps: int = 10_000) -> None:
        self.after = after
        self.gap_s, self.max_gaps = gap_s, max_gaps
        self._gaps: dict[int, float] = {}  # skipped id -> when it was first skipped

    @property
    def gaps(self) -> list[int]:
        """Skipped ids to read again."""
        return list(self._gaps)

    def advance(self, ids: Iterable[int], now: float) -> None:
        """Record the ids a read returned (all ids above :attr:`after` in order, and any gaps)."""
        seen = set(ids)
        self._gaps = {i: t for i, t in self._gaps.items() if i not in seen and now - t < self.gap_s}
        top = max(seen, default=self.after)
        if top <= self.after:
            return
        skipped = [i for i in range(self.after + 1, top) if i not in seen][: self.max_gaps]
        self._gaps.update(dict.fromkeys(skipped, now))
        self.after = top


class RedisHistory:
    """The online history in Redis, shared by every replica and worker that use the same URL.

    Per visitor a sorted set of recent views and add-to-carts (``time:item:v|c`` by time, so
    an event applied twice is kept once) and a list of bought items (most recent first),
    with the same caps as :class:`OnlineHistory`, expiring ``ttl_s`` after the visitor's
    last event; a sorted set of visitors by last event bounds their number (the least
    recently posting visitor's recent events are forgotten first; purchases stay until they
    expire).
    One round trip per request, one per posted batch.

    A Redis outage never fails a request: reads answer "no history" (the model's or the
    popular answer), writes are skipped (the events still reach the event store), each
    failure calls ``on_error`` and logs, and Redis is not tried again for ``retry_s`` seconds
    (so a hung server costs one timeout per ``retry_s``, not one per request).
    """

    def __init__(
        self,
        url: str,
        max_visitors: int,
        max_items: int,
        ttl_s: float,
        on_error: Callable[[str], None] | None = None,
        prefix: str = "recsys:history:",
        timeout_s: float = 0.2,
        retry_s: float = 1.0,
    ) -> None:
        import redis

        self.max_visitors, self.max_items, self.ttl_s = max_visitors, max_items, int(ttl_s)
        self.prefix, self.retry_s = prefix, retry_s
        self._visitors = f"{prefix}visitors"
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._errors = (redis.RedisError, OSError)
        self._on_error = on_error
        self._down_until = 0.0

    def _keys(self, visitor_id: int) -> tuple[str, str]:
        return f"{self.prefix}{visitor_id}:events", f"{self.prefix}{visitor_id}:bought"

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_s
        log.warning("online state (Redis) %s failed: %s", operation, exc)
        if self._on_error is not None:
            self._on_error(operation)

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def __len__(self) -> int:
        if not self._up():
            return 0
        try:
            count: Any = self._redis.zcard(self._visitors)  # redis-py types sync and async alike
            return int(count)
        except self._errors as exc:
            self._failed("count", exc)
            return 0

    def add(self, events: Iterable[tuple[int, int, int, str]]) -> None:
        """Apply ``(timestamp, visitorid, itemid, event)`` tuples in time order."""
        ordered = sorted(events, key=lambda e: e[0])
        if not ordered:
            return
        if not self._up():  # skipped while Redis is down: the events are only in the store
            if self._on_error is not None:
                self._on_error("write")
            return
        now = time.time()
        pipe = self._redis.pipeline(transaction=True)
        for timestamp, visitor_id, item_id, event in ordered:
            items, bought = self._keys(visitor_id)
            if event == C.PURCHASE:
                pipe.lrem(bought, 0, str(item_id))
                pipe.lpush(bought, item_id)
                pipe.ltrim(bought, 0, BOUGHT_CAP - 1)
            else:
                kind = "c" if event == C.ADDTOCART else "v"
                pipe.zadd(items, {f"{timestamp}:{item_id}:{kind}": timestamp})
                pipe.zremrangebyrank(items, 0, -self.max_items - 1)
            pipe.expire(items, self.ttl_s)
            pipe.expire(bought, self.ttl_s)
            pipe.zadd(self._visitors, {str(visitor_id): now})
        pipe.zremrangebyscore(self._visitors, 0, now - self.ttl_s)  # expired lists
        pipe.zcard(self._visitors)
        try:
            over = int(pipe.execute()[-1]) - self.max_visitors
            if over > 0:
                oldest: list[tuple[bytes, float]] = self._redis.zpopmin(self._visitors, over)  # type: ignore[assignment]
                # recent items only: purchases stay filtered until they expire
                self._redis.delete(*(self._keys(int(v))[0] for v, _ in oldest))
        except self._errors as exc:
            self._failed("write", exc)

    def get(self, visitor_id: int) -> Session:
        """A visitor's :class:`Session`, as :meth:`OnlineHistory.get`; :data:`NO_SESSION`
        for an unknown visitor or while Redis is unreachable."""
        if not self._up():
            return NO_SESSION
        items, bought = self._keys(visitor_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(items, 0, -1)
        pipe.lrange(bought, 0, -1)
        try:
            recent, sold = pipe.execute()
        except self._errors as exc:
            self._failed("read", exc)
            return NO_SESSION
        events = []
        for member in recent:
            timestamp, item, kind = member.split(b":")
            events.append((int(timestamp), int(item), kind == b"c"))
        return _session(events, tuple(int(i) for i in sold))


class ExposureBuffer:
    """Exposures waiting to be written to the store in one batch (bounded, thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: tuple[Any, ...]) -> bool:
        """Buffer one row (see :data:`C.EXPOSURES_COLUMNS`); True if the oldest was dropped."""
        full = len(self._rows) == self._rows.maxlen
        self._rows.append(row)
        return full

    def drain(self) -> list[tuple[Any, ...]]:
        """Take every buffered row."""
        rows = list(self._rows)  # add and drain both run on the event loop's thread
        self._rows.clear()
        return rows


class GroupCommit(Generic[T, R]):
    """Items written in groups by one writer, each submitter answered once its group is written.

    The items submitted while a write is in flight form the next group: under concurrency
    one transaction (one commit, one fsync) serves many requests, and alone an item is
    written at once. ``write`` runs in a worker thread and returns one result per item; if it
    raises, every submitter of the group gets the error, except that an error of the types
    ``isolate`` (one client's bad data) makes the group's items be written one by one, so it
    reaches only the submitter it belongs to. A cancelled submitter's item is still written.
    """

    def __init__(
        self, write: Callable[[list[T]], list[R]], isolate: tuple[type[Exception], ...] = ()
    ) -> None:
        self._write = write
        self._isolate = isolate
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._writing = False
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next group and wait for its result (or error)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        return await future

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the writer."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._writing) and time.monotonic() < deadline:
            if self._task is None or self._task.done():  # a writer that died: start another
                self._task = asyncio.create_task(self._run(), name="group-commit")
                self._wake.set()
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # usable again, from another event loop too (an app started twice, as tests do)
        self._task, self._wake = None, asyncio.Event()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group, self._queue = self._queue, []
                self._writing = True
                try:
                    await self._commit(group)
                finally:
                    self._writing = False

    async def _commit(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await run_in_threadpool(self._write, [item for item, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} items")
        except Exception as exc:
            if len(group) > 1 and isinstance(exc, self._isolate):
                for one in group:
                    await self._commit([one])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)
