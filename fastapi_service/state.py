"""In-memory request-side state of the service: online histories and buffered exposures.

(The served model is the :class:`~fastapi_service.model_manager.ModelManager`'s.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from recsys import columns as C


@dataclass
class _Visitor:
    items: list[int] = field(default_factory=list)  # viewed or carted, most recent first
    bought: list[int] = field(default_factory=list)


class OnlineHistory:
    """Recent items of visitors who posted events: a bounded LRU map, safe across threads.

    Parameters
    ----------
    max_visitors
        Visitors kept; the least recently active one is forgotten first.
    max_items
        Recent viewed/carted items kept per visitor (purchases keep four times as many,
        since a bought item must never be recommended again).
    """

    def __init__(self, max_visitors: int, max_items: int) -> None:
        self.max_visitors = max_visitors
        self.max_items = max_items
        self._visitors: OrderedDict[int, _Visitor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._visitors)

    def add(self, events: Iterable[tuple[int, int, int, str]]) -> None:
        """Apply ``(timestamp, visitorid, itemid, event)`` tuples in time order."""
        with self._lock:
            for _, visitor_id, item_id, event in sorted(events, key=lambda e: e[0]):
                visitor = self._visitors.get(visitor_id)
                if visitor is None:
                    visitor = self._visitors[visitor_id] = _Visitor()
                else:
                    self._visitors.move_to_end(visitor_id)
                if event == C.PURCHASE:
                    _push_front(visitor.bought, item_id, 4 * self.max_items)
                else:
                    _push_front(visitor.items, item_id, self.max_items)
            while len(self._visitors) > self.max_visitors:
                self._visitors.popitem(last=False)

    def get(self, visitor_id: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(recent items, bought items)`` of a visitor; empty tuples when unknown.

        Recent items come oldest first (the order the events happened), as
        :meth:`recsys.serving.Recommender.recommend` takes ``session_items``.
        """
        if visitor_id not in self._visitors:  # the common case needs no lock
            return (), ()
        with self._lock:
            visitor = self._visitors.get(visitor_id)
            if visitor is None:
                return (), ()
            self._visitors.move_to_end(visitor_id)
            return tuple(reversed(visitor.items)), tuple(visitor.bought)


def _push_front(items: list[int], item_id: int, cap: int) -> None:
    if item_id in items:
        items.remove(item_id)
    items.insert(0, item_id)
    del items[cap:]


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
