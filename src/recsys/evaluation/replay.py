"""Replay evaluation: score a policy the way the service meets visitors, event by event.

The static evaluation ranks every visitor once, as of the holdout's start, with only what the
model knew then. A shop's visitors are not met empty-handed: by the time they add to cart
they have usually browsed, and the service folds the events they post into their ranking.
The replay walks the holdout in time order; at each add-to-cart the visitor's earlier holdout
events are their online session (views, carts, purchases, with their times), the policy
answers exactly as the live service would, and the target is that one carted item.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from recsys.columns import ADDTOCART, EVENT, ITEM, PURCHASE, TIMESTAMP, VISITOR
from recsys.evaluation.holdout import ALL, COLD, SEGMENT, WARM

RANK = "rank"
#: the target kind of replay rows in a results table: the next add-to-cart of a session
REPLAY_TARGET = "next_addtocart"


class LiveRanker(Protocol):
    """What answers one visitor with their online events (``Recommender.recommend``)."""

    def recommend(
        self,
        user_id: int,
        k: int = 5,
        session_items: Sequence[int] = (),
        session_bought: Sequence[int] = (),
        *,
        session_times: Sequence[int] | None = None,
        session_carts: Sequence[int] = (),
        now_ms: int | None = None,
    ) -> object: ...


@dataclass(frozen=True)
class CartMoment:
    """A visitor's first add-to-cart of an item in the window, and their session before it."""

    visitor: int
    item: int
    timestamp: int
    #: viewed or carted items before it (oldest first), their times, the carted ones
    session_items: list[int]
    session_times: list[int]
    session_carts: list[int]
    session_bought: list[int]


def cart_moments(window_events: pd.DataFrame) -> Iterator[CartMoment]:
    """Every first add-to-cart of a (visitor, item) in the window, with the visitor's events
    strictly before it (events at the very same millisecond are not part of its session)."""
    ev = window_events.sort_values([VISITOR, TIMESTAMP], kind="stable")
    carts = ev[EVENT].to_numpy() == ADDTOCART
    ev = ev[ev[VISITOR].isin(np.unique(ev[VISITOR].to_numpy()[carts]))]
    for visitor, group in ev.groupby(VISITOR, sort=False):
        ts = group[TIMESTAMP].to_numpy(dtype=np.int64)
        items = group[ITEM].to_numpy(dtype=np.int64)
        kinds = group[EVENT].to_numpy()
        carted: set[int] = set()
        for i in np.flatnonzero(kinds == ADDTOCART):
            item = int(items[i])
            if item in carted:
                continue  # a repeat add-to-cart of one item is not a new target
            carted.add(item)
            before = ts < ts[i]
            seen = before & (kinds != PURCHASE)
            yield CartMoment(
                visitor=int(visitor),
                item=item,
                timestamp=int(ts[i]),
                session_items=items[seen].tolist(),
                session_times=ts[seen].tolist(),
                session_carts=items[seen & (kinds == ADDTOCART)].tolist(),
                session_bought=items[before & (kinds == PURCHASE)].tolist(),
            )


def replay(
    ranker: LiveRanker, window_events: pd.DataFrame, known_users: np.ndarray, k: int = 5
) -> pd.DataFrame:
    """Rank of every first add-to-cart of the window, answered as the service would.

    Parameters
    ----------
    ranker : LiveRanker
        The served policy (its ``recommend(...).item_ids`` are read).
    window_events : pandas.DataFrame
        The events of the evaluation window (the model was fitted before it).
    known_users : numpy.ndarray
        Visitors the model knows (warm); the others are cold.
    k : int
        List length.

    Returns
    -------
    pandas.DataFrame
        One row per :func:`cart_moments` moment: ``visitorid``, ``itemid``, ``timestamp``,
        ``segment`` and ``rank`` (1..k, 0 when not in the list).
    """
    known = set(np.asarray(known_users, dtype=np.int64).tolist())
    rows: list[tuple[int, int, int, str, int]] = []
    for m in cart_moments(window_events):
        answer = ranker.recommend(
            m.visitor,
            k,
            session_items=m.session_items,
            session_bought=m.session_bought,
            session_times=m.session_times,
            session_carts=m.session_carts,
            now_ms=m.timestamp,
        )
        listed: list[int] = answer.item_ids  # type: ignore[attr-defined]
        rank = listed.index(m.item) + 1 if m.item in listed[:k] else 0
        rows.append((m.visitor, m.item, m.timestamp, WARM if m.visitor in known else COLD, rank))
    return pd.DataFrame(rows, columns=[VISITOR, ITEM, TIMESTAMP, SEGMENT, RANK])


def replay_metrics(table: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Next-add-to-cart metrics of a :func:`replay` table, per segment.

    With one target per event, recall@k equals hit@k and precision@k is hit@k / k; MRR@k is
    the mean of 1/rank (0 when missed).

    Examples
    --------
    >>> table = pd.DataFrame({"visitorid": [1, 1, 2], "itemid": [5, 6, 7],
    ...     "timestamp": [0, 1, 2], "segment": ["warm", "warm", "cold"], "rank": [1, 0, 2]})
    >>> replay_metrics(table, k=5)[["events", "hitrate@5", "mrr@5"]].round(2)  # doctest: +NORMALIZE_WHITESPACE
             events  hitrate@5  mrr@5
    segment
    warm          2       0.50    0.5
    cold          1       1.00    0.5
    all           3       0.67    0.5
    """
    out = {}
    for segment in (WARM, COLD, ALL):
        part = table if segment == ALL else table[table[SEGMENT] == segment]
        rank = part[RANK].to_numpy()
        hit = (rank > 0).astype(np.float64)
        out[segment] = {
            "events": len(part),
            "visitors": int(part[VISITOR].nunique()),
            f"precision@{k}": hit.mean() / k if len(part) else np.nan,
            f"hitrate@{k}": hit.mean() if len(part) else np.nan,
            f"mrr@{k}": np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0).mean()
            if len(part)
            else np.nan,
        }
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = SEGMENT
    return frame
