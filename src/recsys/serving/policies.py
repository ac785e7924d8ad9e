"""Ranking policies: named, typed descriptions of how a visitor's list is put together.

A list is either *composed* (:func:`compose`): up to ``head`` of the visitor's recent items
(most recent first), then the model's ranking of a vector, then popular items, each part
skipping bought (and, if the policy filters them, unavailable) and already chosen items; or
*scored* (:func:`rank_scored`): candidates from every source (:mod:`~recsys.serving.features`)
ordered by a score (co-visitation weight, or a learned ranker), then popular items. A policy
says, for a known visitor and for an unknown one with or without session items, which of the
two, how many head slots, which vector scores the list and which popularity pads it
(:class:`Plan`). :data:`POLICIES` holds them by :class:`~recsys.names.Policy` name and
:func:`get_policy` looks one up, so A/B variants and bundles name policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from recsys.arrays import index_of
from recsys.exceptions import ConfigurationError
from recsys.names import Policy, Source
from recsys.serving.search import Exclusions, ItemSearch, first_allowed


class Head(Enum):
    """How many leading slots the visitor's recent items take."""

    NONE = "none"
    #: the Recommender's ``recent_slots``
    RECENT_SLOTS = "recent_slots"
    #: all of them (then popular items)
    ALL = "all"

    def slots(self, k: int, recent_slots: int) -> int:
        """Number of head slots of a list of ``k`` items."""
        if self is Head.RECENT_SLOTS:
            return min(recent_slots, k)
        return k if self is Head.ALL else 0


class Vector(Enum):
    """The vector whose model scores a list: reported as ``scores``, ranked by if asked."""

    #: ``[0, ..., 0, 1]``: the item bias (nothing is known of the visitor)
    BIAS = "bias"
    #: the visitor's own vector
    USER = "user"
    #: fold-in: the mean embedding of the visitor's session items, bias weight 1
    SESSION = "session"


class Padding(Enum):
    """Which popularity ranks the padding (and the ``popular*`` policies)."""

    #: recent event-weighted popularity (the bundle's ``popular``)
    WEIGHTED = "weighted"
    #: recent add-to-cart counts (the bundle's activity counts)
    CARTS = "carts"


class Scorer(Enum):
    """What orders the candidates of a scored policy."""

    #: none: the list is composed (head, model, popular)
    NONE = "none"
    #: co-visitation weight from the visitor's recent items
    COVISIT = "covisit"
    #: the bundle's learned ranker over all candidate features
    RANKER = "ranker"


@dataclass(frozen=True)
class Plan:
    """How one list is put together: ``head`` recent items, then (if ``model``) the model
    ranking of ``vector``, then popular items — or, with a ``scorer``, the candidates ordered
    by it; ``source`` says where the answer came from."""

    source: Source
    head: int
    vector: Vector
    model: bool
    scorer: Scorer = Scorer.NONE


@dataclass(frozen=True)
class RankingPolicy:
    """A named way to rank.

    Attributes
    ----------
    name : Policy
        Registry key; a known visitor's answers report it as their source.
    head : Head
        Leading slots taken by the visitor's recent items (composed lists).
    model : bool
        Known visitors: the model ranking of their vector follows the head.
    fold_in : bool
        Unknown visitors with known session items: ranked with the session's mean vector
        (source ``fold_in``): ``recent_slots`` session items then the model ranking, or the
        scorer over all candidates. Otherwise they are ranked like a known visitor without
        model scores.
    scorer : Scorer
        Scored policies: what orders the candidates.
    padding : Padding
        The popularity that pads lists (and ranks ``popular*``).
    views_only : bool
        The head takes only items the visitor viewed (not only carted).
    filter_unavailable : bool
        Never recommend items flagged unavailable at the cutoff. Learned policies rank them
        instead (availability is one of their features): the weekly flag goes stale.
    """

    name: Policy
    head: Head
    model: bool
    fold_in: bool
    scorer: Scorer = Scorer.NONE
    padding: Padding = Padding.WEIGHTED
    views_only: bool = False
    filter_unavailable: bool = True

    def known(self, k: int, recent_slots: int) -> Plan:
        """The plan of a visitor the model knows."""
        head = self.head.slots(k, recent_slots)
        return Plan(Source(self.name), head, Vector.USER, self.model, self.scorer)

    def unknown(self, k: int, recent_slots: int, session: bool) -> Plan:
        """The plan of a visitor the model does not know; ``session``: with known items."""
        if not session:
            return Plan(Source.POPULAR, 0, Vector.BIAS, False)
        if self.fold_in:
            return Plan(Source.FOLD_IN, min(recent_slots, k), Vector.SESSION, True, self.scorer)
        head = self.head.slots(k, recent_slots)
        return Plan(Source(self.name), head, Vector.BIAS, False, self.scorer)


#: the policies by name
POLICIES: Mapping[Policy, RankingPolicy] = MappingProxyType(
    {
        policy.name: policy
        for policy in (
            RankingPolicy(Policy.POPULAR, Head.NONE, model=False, fold_in=False),
            RankingPolicy(Policy.POPULAR_CARTS, Head.NONE, False, False, padding=Padding.CARTS),
            RankingPolicy(Policy.RECENT, Head.ALL, model=False, fold_in=False),
            # the plain "recently viewed" list: views only, then the most carted items, no
            # availability filter (the strongest simple rule on real and synthetic data)
            RankingPolicy(
                Policy.RECENT_VIEWS,
                Head.ALL,
                False,
                False,
                padding=Padding.CARTS,
                views_only=True,
                filter_unavailable=False,
            ),
            RankingPolicy(
                Policy.COVISIT,
                Head.NONE,
                False,
                False,
                scorer=Scorer.COVISIT,
                padding=Padding.CARTS,
                filter_unavailable=False,
            ),
            RankingPolicy(Policy.MODEL, Head.NONE, model=True, fold_in=True),
            RankingPolicy(Policy.BLEND, Head.RECENT_SLOTS, model=True, fold_in=True),
            RankingPolicy(
                Policy.RANKER,
                Head.NONE,
                model=True,
                fold_in=True,
                scorer=Scorer.RANKER,
                filter_unavailable=False,
            ),
        )
    }
)


def get_policy(name: str) -> RankingPolicy:
    """The policy called ``name``.

    Raises
    ------
    ConfigurationError
        If no policy has that name (the message lists the valid ones).

    Examples
    --------
    >>> get_policy("blend").head
    <Head.RECENT_SLOTS: 'recent_slots'>
    """
    try:
        return POLICIES[Policy(name)]
    except (ValueError, KeyError):
        valid = ", ".join(POLICIES)
        raise ConfigurationError(f"unknown policy {name!r}; expected one of: {valid}") from None


#: what each slot of a ranked list comes from (reasons are derived from it)
PART_HISTORY, PART_SIMILAR, PART_MODEL, PART_POPULAR, PART_EMPTY = 0, 1, 2, 3, -1


class Ranked(NamedTuple):
    """Lists of n visitors: item positions and the part each slot came from."""

    #: int64 (n, k) item positions, -1 padded when fewer are allowed
    items: NDArray[np.int64]
    #: int8 (n, k) ``PART_*`` codes (``PART_EMPTY`` where ``items`` is -1)
    parts: NDArray[np.int8]
    #: float64 (n, k) the scorer's scores of a scored list (NaN for composed lists)
    scores: NDArray[np.float64]


def compose(
    search: ItemSearch,
    vectors: NDArray[Any] | None,
    history: Exclusions,
    bought: Exclusions,
    n: int,
    k: int,
    head: int,
    padding: NDArray[np.int64],
    filter_unavailable: bool = True,
    probe: int = 8,
    candidates: int | None = None,
) -> Ranked:
    """Lists of ``k`` items for ``n`` visitors: recent head, model ranking, popular padding.

    Parameters
    ----------
    search : ItemSearch
        Model top-k of the bundle (over its available items).
    vectors : numpy.ndarray, optional
        (n, d + 1) vectors whose model ranking follows the head; None: no model part.
    history, bought : Exclusions
        (row, item position) pairs in row order: recent items (most recent first within a
        row) and bought items (never recommended).
    n, k, head : int
        Visitors, items per visitor and leading slots for recent items.
    padding : numpy.ndarray
        Item positions, most popular first, that fill the rest (only allowed ones).
    filter_unavailable : bool
        Leave out history items flagged unavailable.
    probe, candidates : int
        Passed to :meth:`ItemSearch.top_k`.

    Returns
    -------
    Ranked
        Never a bought (nor, when filtering, unavailable) item, never a duplicate; exactly
        ``k`` items whenever that many are allowed.
    """
    bundle = search.bundle
    n_items = bundle.n_items
    out = np.full((n, k), -1, dtype=np.int64)
    parts = np.full((n, k), PART_EMPTY, dtype=np.int8)
    b_rows, b_items = bought
    h_rows, h_items = history
    filled = np.zeros(n, dtype=np.int64)
    chosen = bought
    if min(head, k) > 0 and len(h_items):
        allowed = (
            bundle.item_available[h_items]
            if filter_unavailable
            else np.ones(len(h_items), dtype=bool)
        )
        if len(b_items):
            keys = np.sort(b_rows * n_items + b_items)
            allowed &= index_of(keys, h_rows * n_items + h_items) < 0
        h_rows, h_items = h_rows[allowed], h_items[allowed]
        rank = np.arange(len(h_rows)) - np.searchsorted(h_rows, h_rows)
        take = rank < min(head, k)
        h_rows, h_items = h_rows[take], h_items[take]
        filled = _append(out, parts, filled, _as_rows(h_rows, h_items, n, k), PART_HISTORY)
        chosen = (np.concatenate([b_rows, h_rows]), np.concatenate([b_items, h_items]))
    if vectors is not None and k > 0:
        top = search.top_k(vectors, k, chosen, probe, candidates)
        filled = _append(out, parts, filled, top, PART_MODEL)
    if filled.min(initial=k) < k:  # popular items fill the rest
        r, c = np.nonzero(out >= 0)
        taken = (np.concatenate([b_rows, r]), np.concatenate([b_items, out[r, c]]))
        _append(out, parts, filled, first_allowed(padding, taken, n, k, n_items), PART_POPULAR)
    return Ranked(out, parts, np.full((n, k), np.nan))


def rank_scored(
    rows: NDArray[np.int64],
    items: NDArray[np.int64],
    scores: NDArray[np.float64],
    item_parts: NDArray[np.int8],
    n: int,
    k: int,
    tie_rank: NDArray[np.int64],
    padding: NDArray[np.int64],
    bought: Exclusions,
    n_items: int,
) -> Ranked:
    """Per row, the ``k`` best candidates by score (ties: the more popular item first), then
    popular items not among them and not bought.

    Parameters
    ----------
    rows, items, scores, item_parts : numpy.ndarray
        Candidates (row, item position), their scores and ``PART_*`` codes. Candidates with
        a NaN score are left out.
    n, k : int
        Rows and items per row.
    tie_rank : numpy.ndarray
        Popularity rank of every item position (lower is more popular).
    padding : numpy.ndarray
        Item positions, most popular first, that fill short lists.
    bought : Exclusions
        Pairs never recommended (the candidates hold none already).
    n_items : int
        Number of item positions.

    Examples
    --------
    >>> ranked = rank_scored(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 5]),
    ...     np.array([1.0, 2.0, 2.0, np.nan]), np.zeros(4, np.int8), 2, 2,
    ...     tie_rank=np.arange(8)[::-1], padding=np.array([3, 5]),
    ...     bought=(np.array([1]), np.array([3])), n_items=8)
    >>> ranked.items.tolist(), ranked.parts.tolist()
    ([[7, 6], [5, -1]], [[0, 0], [3, -1]])
    """
    out = np.full((n, k), -1, dtype=np.int64)
    parts = np.full((n, k), PART_EMPTY, dtype=np.int8)
    best = np.full((n, k), np.nan)
    keep = ~np.isnan(scores)
    rows, items, scores, item_parts = rows[keep], items[keep], scores[keep], item_parts[keep]
    order = np.lexsort((items, tie_rank[items], -scores, rows))
    rows, items, scores, item_parts = rows[order], items[order], scores[order], item_parts[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    top = rank < k
    out[rows[top], rank[top]] = items[top]
    parts[rows[top], rank[top]] = item_parts[top]
    best[rows[top], rank[top]] = scores[top]
    filled = np.bincount(rows[top], minlength=n).astype(np.int64)
    if filled.min(initial=k) < k:
        r, c = np.nonzero(out >= 0)
        taken = (np.concatenate([bought[0], r]), np.concatenate([bought[1], out[r, c]]))
        _append(out, parts, filled, first_allowed(padding, taken, n, k, n_items), PART_POPULAR)
    return Ranked(out, parts, best)


def _as_rows(
    rows: NDArray[np.int64], items: NDArray[np.int64], n: int, k: int
) -> NDArray[np.int64]:
    """Row-ordered (row, item) pairs (at most ``k`` per row) as an (n, k) -1 padded array."""
    out = np.full((n, k), -1, dtype=np.int64)
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    out[rows, rank] = items
    return out


def _append(
    out: NDArray[np.int64],
    parts: NDArray[np.int8],
    filled: NDArray[np.int64],
    more: NDArray[np.int64],
    part: int,
) -> NDArray[np.int64]:
    """Write each row's ``more`` items (-1 padded) after its ``filled`` ones, in place, as
    far as ``out`` has room, marking them ``part``; returns the new fill counts."""
    k = out.shape[1]
    valid = (more >= 0) & (np.arange(more.shape[1]) < (k - filled)[:, None])
    r, c = np.nonzero(valid)
    out[r, filled[r] + c] = more[r, c]
    parts[r, filled[r] + c] = part
    added: NDArray[np.int64] = valid.sum(axis=1)
    return filled + added
