"""Ranking policies: named, typed descriptions of how a visitor's list is put together.

Every served list is composed the same way (:func:`compose`): up to ``head`` of the visitor's
recent items (most recent first), then the model's ranking of a vector, then popular items,
each part skipping bought, unavailable and already chosen items. A policy says, for a known
visitor and for an unknown one with or without session items, how many head slots there are,
which vector scores the list and whether its model ranking follows the head
(:class:`Plan`). :data:`POLICIES` holds them by :class:`~recsys.names.Policy` name and
:func:`get_policy` looks one up, so A/B variants and bundles name policies and new ones (a
co-occurrence baseline, a learned ranker) are added here.
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


@dataclass(frozen=True)
class Plan:
    """How one list is put together: ``head`` recent items, then (if ``model``) the model
    ranking of ``vector``, then popular items; ``source`` says where the answer came from."""

    source: Source
    head: int
    vector: Vector
    model: bool


@dataclass(frozen=True)
class RankingPolicy:
    """A named way to rank.

    Attributes
    ----------
    name : Policy
        Registry key; a known visitor's answers report it as their source.
    head : Head
        Leading slots taken by the visitor's recent items.
    model : bool
        Known visitors: the model ranking of their vector follows the head.
    fold_in : bool
        Unknown visitors with known session items: ``recent_slots`` session items, then the
        model ranking of the session's mean vector (source ``fold_in``). Otherwise they are
        ranked like a known visitor without model scores.
    """

    name: Policy
    head: Head
    model: bool
    fold_in: bool

    def known(self, k: int, recent_slots: int) -> Plan:
        """The plan of a visitor the model knows."""
        return Plan(Source(self.name), self.head.slots(k, recent_slots), Vector.USER, self.model)

    def unknown(self, k: int, recent_slots: int, session: bool) -> Plan:
        """The plan of a visitor the model does not know; ``session``: with known items."""
        if not session:
            return Plan(Source.POPULAR, 0, Vector.BIAS, False)
        if self.fold_in:
            return Plan(Source.FOLD_IN, min(recent_slots, k), Vector.SESSION, True)
        return Plan(Source(self.name), self.head.slots(k, recent_slots), Vector.BIAS, False)


#: the policies by name
POLICIES: Mapping[Policy, RankingPolicy] = MappingProxyType(
    {
        policy.name: policy
        for policy in (
            RankingPolicy(Policy.POPULAR, Head.NONE, model=False, fold_in=False),
            RankingPolicy(Policy.RECENT, Head.ALL, model=False, fold_in=False),
            RankingPolicy(Policy.MODEL, Head.NONE, model=True, fold_in=True),
            RankingPolicy(Policy.BLEND, Head.RECENT_SLOTS, model=True, fold_in=True),
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


class Ranked(NamedTuple):
    """Lists of n visitors: item positions and how many come from each part."""

    #: int64 (n, k) item positions, -1 padded when fewer are allowed
    items: NDArray[np.int64]
    #: per row, leading items from the visitor's history
    n_head: NDArray[np.int64]
    #: per row, the model's items after them (popular items fill the rest)
    n_model: NDArray[np.int64]


def compose(
    search: ItemSearch,
    vectors: NDArray[Any] | None,
    history: Exclusions,
    bought: Exclusions,
    n: int,
    k: int,
    head: int,
    probe: int = 8,
    candidates: int | None = None,
) -> Ranked:
    """Lists of ``k`` items for ``n`` visitors: recent head, model ranking, popular padding.

    Parameters
    ----------
    search : ItemSearch
        Model top-k and popularity order of the bundle.
    vectors : numpy.ndarray, optional
        (n, d + 1) vectors whose model ranking follows the head; None: no model part.
    history, bought : Exclusions
        (row, item position) pairs in row order: recent items (most recent first within a
        row) and bought items (never recommended).
    n, k, head : int
        Visitors, items per visitor and leading slots for recent items.
    probe, candidates : int
        Passed to :meth:`ItemSearch.top_k`.

    Returns
    -------
    Ranked
        Never a bought or unavailable item, never a duplicate; exactly ``k`` items whenever
        that many are allowed.
    """
    bundle = search.bundle
    n_items = bundle.n_items
    out = np.full((n, k), -1, dtype=np.int64)
    b_rows, b_items = bought
    h_rows, h_items = history
    n_head = np.zeros(n, dtype=np.int64)
    chosen = bought
    if min(head, k) > 0 and len(h_items):
        allowed = bundle.item_available[h_items]
        if len(b_items):
            keys = np.sort(b_rows * n_items + b_items)
            allowed &= index_of(keys, h_rows * n_items + h_items) < 0
        h_rows, h_items = h_rows[allowed], h_items[allowed]
        rank = np.arange(len(h_rows)) - np.searchsorted(h_rows, h_rows)
        take = rank < min(head, k)
        h_rows, h_items = h_rows[take], h_items[take]
        out[h_rows, rank[take]] = h_items
        n_head = np.bincount(h_rows, minlength=n)
        chosen = (np.concatenate([b_rows, h_rows]), np.concatenate([b_items, h_items]))
    filled = n_head
    if vectors is not None and k > 0:
        filled = _append(out, filled, search.top_k(vectors, k, chosen, probe, candidates))
    n_model = filled - n_head
    if filled.min(initial=k) < k:  # popular items fill the rest
        r, c = np.nonzero(out >= 0)
        taken = (np.concatenate([b_rows, r]), np.concatenate([b_items, out[r, c]]))
        _append(out, filled, first_allowed(search.popular, taken, n, k, n_items))
    return Ranked(out, n_head, n_model)


def _append(
    out: NDArray[np.int64], filled: NDArray[np.int64], more: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Write each row's ``more`` items (-1 padded) after its ``filled`` ones, in place, as
    far as ``out`` has room; returns the new fill counts."""
    k = out.shape[1]
    valid = (more >= 0) & (np.arange(more.shape[1]) < (k - filled)[:, None])
    r, c = np.nonzero(valid)
    out[r, filled[r] + c] = more[r, c]
    filled = filled + valid.sum(axis=1)
    return filled
