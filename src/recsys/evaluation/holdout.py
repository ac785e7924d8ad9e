"""Offline evaluation of a ranking policy on a time window: targets, segments, tables.

A policy is judged the way it serves: ``recommend_fn(user_ids, k)`` is the served batch
ranking (:meth:`recsys.serving.Recommender.recommend_batch`), visitors are split into warm
(known to the model) and cold, and every policy of a run is scored on the same targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from recsys.columns import ADDTOCART, EVENT, ITEM, VISITOR
from recsys.evaluation.metrics import EMPTY, first_k, per_user_metrics, ranking_metrics
from recsys.split import window

RELEVANT = "relevant"
SEGMENT = "segment"
WARM = "warm"
COLD = "cold"
ALL = "all"
#: target kinds: add-to-cart events only (the headline), or any event
ANY = "any"
TARGETS = (ADDTOCART, ANY)


class BatchRanker(Protocol):
    """Anything that ranks items for many visitors at once, as served."""

    def recommend_batch(self, user_ids: np.ndarray, k: int) -> np.ndarray: ...


def holdout_targets(
    known_users: np.ndarray, holdout_events: pd.DataFrame, target: str
) -> pd.DataFrame:
    """One row per holdout visitor with at least one target event.

    Parameters
    ----------
    known_users : numpy.ndarray
        Visitor ids seen before the holdout (the model's users): "warm"; others are "cold".
    holdout_events : pandas.DataFrame
        Events of the holdout window.
    target : {"addtocart", "any"}
        Which holdout events make an item relevant: add-to-cart events only, or any event.

    Returns
    -------
    pandas.DataFrame
        Columns ``visitorid`` (int64, ascending), ``relevant`` (sorted unique int64 item
        ids) and ``segment`` (``"warm"``/``"cold"``); index ``0..n-1``.

    Examples
    --------
    >>> holdout = pd.DataFrame({"visitorid": [1, 1, 2, 3], "itemid": [12, 11, 11, 13],
    ...                         "event": ["addtocart", "addtocart", "view", "addtocart"]})
    >>> holdout_targets(np.array([1]), holdout, "addtocart")
       visitorid  relevant segment
    0          1  [11, 12]    warm
    1          3      [13]    cold
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    events = holdout_events
    if target == ADDTOCART:
        events = events.loc[(events[EVENT] == ADDTOCART).to_numpy(dtype=bool)]
    visitors = events[VISITOR].to_numpy(dtype=np.int64)
    items = events[ITEM].to_numpy(dtype=np.int64)
    order = np.lexsort((items, visitors))
    visitors, items = visitors[order], items[order]
    fresh = np.ones(len(items), dtype=bool)
    fresh[1:] = (visitors[1:] != visitors[:-1]) | (items[1:] != items[:-1])
    visitors, items = visitors[fresh], items[fresh]
    users, starts = np.unique(visitors, return_index=True)
    warm = np.isin(users, np.asarray(known_users, dtype=np.int64))
    return pd.DataFrame(
        {
            VISITOR: users,
            RELEVANT: pd.Series(np.split(items, starts[1:]) if len(users) else [], dtype=object),
            SEGMENT: np.where(warm, WARM, COLD),
        }
    )


def evaluate_policy(
    recommend_fn: Callable[[np.ndarray, int], np.ndarray],
    targets: pd.DataFrame,
    k: int = 5,
    n_catalogue: int | None = None,
) -> pd.DataFrame:
    """Score a recommendation policy on holdout targets, per visitor segment.

    Parameters
    ----------
    recommend_fn : callable
        ``recommend_fn(user_ids, k)`` -> ``len(user_ids) x k`` item ids (``-1`` padded).
        Called once per non-empty segment ("warm", then "cold").
    targets : pandas.DataFrame
        Output of :func:`holdout_targets`.
    k : int
        Cut-off.
    n_catalogue : int
        Catalogue size for coverage (required).

    Returns
    -------
    pandas.DataFrame
        Index ``segment`` with rows ``warm``, ``cold``, ``all``; columns as in
        :func:`ranking_metrics`. A segment without users has NaN metrics and 0 users.

    Examples
    --------
    >>> targets = pd.DataFrame({"visitorid": [1, 2], "relevant": [np.array([5]),
    ...                         np.array([6])], "segment": ["warm", "cold"]})
    >>> popular = lambda users, k: np.tile(np.array([5, 7]), (len(users), 1))
    >>> table = evaluate_policy(popular, targets, k=2, n_catalogue=10)
    >>> table[["precision@2", "hitrate@2", "coverage", "users"]]  # doctest: +NORMALIZE_WHITESPACE
             precision@2  hitrate@2  coverage  users
    segment
    warm            0.50        1.0       0.2      1
    cold            0.00        0.0       0.2      1
    all             0.25        0.5       0.2      2
    """
    if n_catalogue is None:
        raise ValueError("n_catalogue is required")
    parts: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    for segment in (WARM, COLD):
        rows = targets.loc[(targets[SEGMENT] == segment).to_numpy(dtype=bool)]
        users = rows[VISITOR].to_numpy(dtype=np.int64)
        recommended = np.full((len(users), k), EMPTY, dtype=np.int64)
        if len(users):
            recommended = first_k(np.asarray(recommend_fn(users, k)), k)
            if recommended.shape[0] != len(users):
                raise ValueError(
                    f"recommend_fn returned {recommended.shape[0]} rows for {len(users)} users"
                )
        parts[segment] = (recommended, list(rows[RELEVANT]))
    parts[ALL] = (
        np.vstack([parts[WARM][0], parts[COLD][0]]),
        parts[WARM][1] + parts[COLD][1],
    )
    table = pd.DataFrame.from_dict(
        {name: ranking_metrics(rec, rel, k, n_catalogue) for name, (rec, rel) in parts.items()},
        orient="index",
    )
    table.index.name = SEGMENT
    return table


def visitor_scores(
    recommend_fn: Callable[[np.ndarray, int], np.ndarray], targets: pd.DataFrame, k: int
) -> pd.DataFrame:
    """Every metric of every target visitor under a policy, for paired comparisons.

    Returns
    -------
    pandas.DataFrame
        ``targets``' visitor and segment columns plus one column per metric
        (``precision@k``...), rows in ``targets`` order.
    """
    users = targets[VISITOR].to_numpy(dtype=np.int64)
    recommended = (
        first_k(np.asarray(recommend_fn(users, k)), k)
        if len(users)
        else np.full((0, k), EMPTY, dtype=np.int64)
    )
    metrics = per_user_metrics(recommended, list(targets[RELEVANT]), k)
    return targets[[VISITOR, SEGMENT]].assign(**metrics).reset_index(drop=True)


def window_targets(
    events: pd.DataFrame,
    known_users: np.ndarray,
    start_ms: int,
    end_ms: int,
    kinds: Sequence[str] = TARGETS,
) -> dict[str, pd.DataFrame]:
    """Targets per kind (:data:`TARGETS`) of the events in ``[start_ms, end_ms)``.

    Warm = in ``known_users``, the visitors seen before the window (the ``user_ids`` of the
    training data whose cutoff is ``start_ms``).
    """
    after = window(events, start_ms, end_ms)
    return {t: holdout_targets(known_users, after, t) for t in kinds}


def score_policies(
    rankers: Mapping[str, BatchRanker],
    targets: Mapping[str, pd.DataFrame],
    k: int,
    n_catalogue: int,
) -> pd.DataFrame:
    """Metrics of every named policy for every target kind and segment.

    ``n_catalogue`` is the number of items any policy could recommend (for coverage).

    Returns
    -------
    pandas.DataFrame
        Index ``(model, target, segment)``, sorted; columns as in :func:`evaluate_policy`.
    """
    frames = []
    for name, ranker in rankers.items():
        for target, frame in targets.items():
            table = evaluate_policy(ranker.recommend_batch, frame, k=k, n_catalogue=n_catalogue)
            frames.append(table.assign(model=name, target=target).rename_axis(SEGMENT))
    return pd.concat(frames).reset_index().set_index(["model", "target", SEGMENT]).sort_index()
