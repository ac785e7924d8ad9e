"""A bounded, thread-safe least-recently-used map: the one memo of the serving code.

Its users key an answer by everything the answer depends on, so a kept answer is exactly
the one a new computation would give (see :class:`~recsys.serving.search.ItemSearch` and
:class:`~recsys.serving.recommender.Recommender`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    """At most ``size`` entries; the least recently used one goes first.

    Examples
    --------
    >>> memo = Memo[str](2)
    >>> memo.put("a", "1"); memo.put("b", "2"); memo.get("a")
    '1'
    >>> memo.put("c", "3"); memo.get("b") is None, len(memo)
    (True, 2)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        """The value kept for ``key`` (now the most recently used), else None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value`` for ``key``, forgetting the least recently used entry if full."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
