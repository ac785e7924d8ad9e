"""The request API: :class:`Recommender` answers one visitor or many, with reasons.

It applies the filters (never a bought or unavailable item, never a duplicate), the fallbacks
(an unknown visitor gets the fold-in of their session items, else popular items), explains
every item, memoises the answer of unknown visitors without session (most traffic) and
serves known visitors without session from the bundle's precomputed answers
(:class:`~recsys.bundle.ServedAnswers`) when they were made for its ranking. Visitors with
online events, rows not precomputed and requests for more items than were stored are ranked
per request, by the same composition (:func:`~recsys.serving.policies.compose`) that batch
ranking and the precomputed answers use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recsys.arrays import index_of
from recsys.bundle import Bundle, ServedAnswers
from recsys.exceptions import ConfigurationError
from recsys.names import DEFAULT_POLICY, DEFAULT_RECENT_SLOTS, Policy, Source
from recsys.serving.index import exact_scores
from recsys.serving.policies import Plan, Ranked, Vector, compose, get_policy
from recsys.serving.search import Exclusions, ItemSearch, no_exclusions, single_threaded_blas

REASON_VIEWED = "you viewed it"
REASON_SIMILAR = "similar to an item you viewed"
REASON_CATEGORY = "popular in its category"
REASON_POPULAR = "popular now"
REASON_FOR_YOU = "recommended for you"

_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False


@dataclass
class Recommendation:
    """One answer: parallel lists of items, scores and reasons, plus where they came from.

    ``scores`` are model scores ``user_vector . item_vector`` (for unknown visitors without
    session the user vector is ``[0, ..., 0, 1]``, i.e. the item bias).
    """

    user_id: int
    item_ids: list[int]
    scores: list[float]
    reasons: list[str]
    source: Source


def _csr_rows(indptr: NDArray[Any], values: NDArray[Any], rows: NDArray[np.int64]) -> Exclusions:
    """Flatten CSR rows ``rows`` into (row number in ``rows``, value) pairs, row order kept."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    owner = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, values[np.repeat(starts, lengths) + offsets].astype(np.int64)


class Recommender:
    """Rank items for visitors from a bundle: filters, fallbacks, session fold-in, fast top-k.

    Parameters
    ----------
    bundle : Bundle
        The model to serve.
    policy : str
        A name of :data:`~recsys.serving.policies.POLICIES` (a
        :class:`~recsys.names.Policy`): ``"model"`` (model scores), ``"popular"``,
        ``"recent"`` (the visitor's own viewed / carted items, most recent first, then
        popular), ``"blend"`` (up to ``recent_slots`` recent items first, then model scores).
    candidates : int, optional
        None (default): exact top-k. An int caps the items scored per user after the probe
        (approximate; bounds the worst-case latency).
    recent_slots : int, optional
        Leading slots of ``"blend"`` and of session fold-in taken by recent items; default:
        the bundle's ``metadata["recent_slots"]``, else
        :data:`~recsys.names.DEFAULT_RECENT_SLOTS`.
    leaf_size : int
        Maximum cluster size of the index this Recommender builds when ``search`` is not
        given.
    probe : int
        Clusters scored first to find the pruning threshold.
    search : ItemSearch, optional
        The model top-k of ``bundle``, shared with other Recommenders of that bundle; default:
        a new one (its index is built on first use).

    Raises
    ------
    ConfigurationError
        For an unknown policy, ``candidates < 1`` or a ``search`` of another bundle.

    Notes
    -----
    Never returns an item the user bought or an unavailable item, never a duplicate, and
    exactly ``k`` items whenever that many are allowed (padding with popular items). Model
    ties are broken by popularity, so a model with constant scores ranks like ``"popular"``.
    """

    def __init__(
        self,
        bundle: Bundle,
        policy: str = DEFAULT_POLICY,
        candidates: int | None = None,
        recent_slots: int | None = None,
        leaf_size: int = 64,
        probe: int = 8,
        search: ItemSearch | None = None,
    ) -> None:
        self.ranking = get_policy(policy)
        if candidates is not None and candidates < 1:
            raise ConfigurationError(f"candidates must be >= 1 or None, got {candidates}")
        if search is not None and search.bundle is not bundle:
            raise ConfigurationError("search was built for another bundle")
        self.bundle = bundle
        self.policy: Policy = self.ranking.name
        self.candidates = candidates
        if recent_slots is None:  # what training chose, recorded in the bundle
            recent_slots = int(bundle.metadata.get("recent_slots", DEFAULT_RECENT_SLOTS))
        self.recent_slots = max(0, int(recent_slots))
        self.probe = max(1, int(probe))
        self.search = search if search is not None else ItemSearch(bundle, leaf_size)
        self._cold: dict[int, Recommendation] = {}

    @property
    def answers(self) -> ServedAnswers | None:
        """The bundle's precomputed answers if they were made for this exact ranking."""
        answers = self.bundle.answers
        if (
            answers is None
            or self.candidates is not None
            or answers.policy != self.policy
            or answers.recent_slots != self.recent_slots
        ):
            return None
        return answers

    def warm_up(self) -> None:
        """Build the index and answer one request now, so that no visitor pays for either
        (the first ``recommend`` would do the same)."""
        if self.bundle.n_users:
            self.recommend(int(self.bundle.user_ids[0]), 5)
        self.search.build()

    # ------------------------------------------------------------------ one visitor

    def recommend(
        self,
        user_id: int,
        k: int = 5,
        session_items: Sequence[int] = (),
        session_bought: Sequence[int] = (),
    ) -> Recommendation:
        """Top-``k`` items for one visitor.

        Parameters
        ----------
        user_id : int
            Visitor id; ids missing from the bundle are cold visitors.
        k : int
            Number of items (>= 0).
        session_items : sequence of int
            Item ids the visitor interacted with online since the bundle was built, in the
            order the events happened (oldest first). For a known visitor they go in front
            of the stored history; for an unknown one they drive the fold-in. Unknown item
            ids are ignored.
        session_bought : sequence of int
            Item ids bought online: never recommended.

        Returns
        -------
        Recommendation
            ``source`` is the policy for a known visitor; for an unknown one with known
            session items ``"fold_in"`` (policies model / blend) or the policy name (recent /
            popular); ``"popular"`` otherwise.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        b = self.bundle
        user = int(b.user_ids.searchsorted(user_id))
        if user >= b.n_users or b.user_ids[user] != user_id:
            user = -1
        if len(session_items) or len(session_bought):
            return self._recommend_live(user_id, user, k, session_items, session_bought)
        if user >= 0:
            answers = self.answers
            if answers is not None and k <= answers.items.shape[1] and answers.items[user, 0] >= 0:
                return self._explain(answers, user_id, user, k)
            return self._recommend_live(user_id, user, k, (), ())
        # an unknown visitor without session: the answer depends on nothing but k (most
        # traffic is such one-off visitors), computed once per k
        cold = self._cold.get(k)
        if cold is None:
            cold = self._cold[k] = self._recommend_live(user_id, user, k, (), ())
        return Recommendation(
            int(user_id), [*cold.item_ids], [*cold.scores], [*cold.reasons], cold.source
        )

    def _recommend_live(
        self,
        user_id: int,
        user: int,
        k: int,
        session_items: Sequence[int],
        session_bought: Sequence[int],
    ) -> Recommendation:
        """:meth:`recommend` ranked now; ``user`` is the bundle position (-1: unknown)."""
        b = self.bundle
        stored = b.history(user).astype(np.int64) if user >= 0 else _EMPTY
        bought = b.bought(user).astype(np.int64) if user >= 0 else _EMPTY
        sess = _EMPTY
        if len(session_items):
            sess = index_of(b.item_ids, np.asarray(session_items, dtype=np.int64)[::-1])
            sess = sess[sess >= 0]
        hist = stored
        if len(sess):
            hist = np.concatenate([sess, stored])
            _, first = np.unique(hist, return_index=True)
            hist = hist[np.sort(first)]  # dedup, most recent first
        if len(session_bought):
            sold = index_of(b.item_ids, np.asarray(session_bought, dtype=np.int64))
            bought = np.concatenate([bought, sold[sold >= 0]])

        if user >= 0:
            plan = self.ranking.known(k, self.recent_slots)
        else:
            plan = self.ranking.unknown(k, self.recent_slots, session=len(sess) > 0)
        w = self._vector(plan, user, sess)
        ranked = compose(
            self.search,
            w[None] if self._ranks_by_model(plan) else None,
            (np.zeros(len(hist), dtype=np.int64), hist),
            (np.zeros(len(bought), dtype=np.int64), bought),
            1,
            k,
            plan.head,
            self.probe,
            self.candidates,
        )
        pos = ranked.items[0]
        pos = pos[pos >= 0]
        n_head, n_model = int(ranked.n_head[0]), int(ranked.n_model[0])
        scores = exact_scores(w, b.item_vectors[pos])
        padded = len(pos) > n_head + n_model
        seen = set(b.item_category[hist].tolist()) - {-1} if padded else set()
        model_reason = REASON_FOR_YOU if user >= 0 else REASON_SIMILAR
        reasons = [REASON_VIEWED] * n_head + [model_reason] * n_model
        reasons += [
            REASON_CATEGORY if category in seen else REASON_POPULAR
            for category in b.item_category[pos[n_head + n_model :]].tolist()
        ]
        return Recommendation(
            user_id=int(user_id),
            item_ids=b.item_ids[pos].tolist(),
            scores=scores.tolist(),
            reasons=reasons,
            source=plan.source,
        )

    def _ranks_by_model(self, plan: Plan) -> bool:
        """Whether the model ranks after the head: a constant model (e.g. a baseline's zero
        vectors) ranks exactly like the popular padding, which then also explains its items
        honestly."""
        return plan.model and not self.search.constant

    def _vector(self, plan: Plan, user: int, session: NDArray[np.int64]) -> NDArray[np.float32]:
        """The float32 vector scoring ``plan``'s list."""
        b = self.bundle
        w: NDArray[np.float32]
        if plan.vector is Vector.USER:
            w = b.user_vectors[user].astype(np.float32)
        elif plan.vector is Vector.SESSION:
            w = np.append(b.item_vectors[session, :-1].mean(axis=0), 1.0).astype(np.float32)
        else:  # nothing known of the visitor: the score of an all-zero embedding, the item bias
            w = np.zeros(b.item_vectors.shape[1], dtype=np.float32)
            w[-1] = 1.0
        return w

    def _explain(self, answers: ServedAnswers, user_id: int, user: int, k: int) -> Recommendation:
        """The precomputed answer of a known visitor: history items first, then the model's."""
        b = self.bundle
        n_head = min(int(answers.head[user]), k)
        return Recommendation(
            user_id=int(user_id),
            item_ids=b.item_ids[answers.items[user, :k]].tolist(),
            scores=answers.scores[user, :k].tolist(),
            reasons=[REASON_VIEWED] * n_head + [REASON_FOR_YOU] * (k - n_head),
            source=self.ranking.known(k, self.recent_slots).source,
        )

    # ------------------------------------------------------------------ many visitors

    def rank_known(self, users: NDArray[np.int64], k: int) -> Ranked:
        """The lists :meth:`recommend` ranks for known visitors without session.

        Parameters
        ----------
        users : numpy.ndarray
            Bundle positions of the visitors.
        k : int
            Items per visitor.

        Returns
        -------
        Ranked
            Item positions (-1 padded) and how many come from the history and the model.
        """
        b = self.bundle
        plan = self.ranking.known(k, self.recent_slots)
        return compose(
            self.search,
            b.user_vectors[users] if self._ranks_by_model(plan) else None,
            _csr_rows(b.history_indptr, b.history_items, users),
            _csr_rows(b.bought_indptr, b.bought_items, users),
            len(users),
            k,
            plan.head,
            self.probe,
            self.candidates,
        )

    def recommend_batch(
        self, user_ids: NDArray[np.integer[Any]], k: int, chunk: int = 2048
    ) -> NDArray[np.int64]:
        """Top-``k`` item ids for many visitors without session: the ranking of
        :meth:`recommend`, computed with matrix products over chunks of visitors.

        Parameters
        ----------
        user_ids : numpy.ndarray
            Visitor ids (unknown ones get the popular fallback).
        k : int
            Items per visitor.
        chunk : int
            Visitors ranked together (peak memory ~ ``chunk * n_clusters * 40`` bytes, about
            200 MB for 2048 visitors at full scale).

        Returns
        -------
        numpy.ndarray
            int64 (n x k) item ids, -1 where fewer than ``k`` items are allowed.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        b = self.bundle
        users = index_of(b.user_ids, np.asarray(user_ids, dtype=np.int64).ravel())
        result = np.full((len(users), k), -1, dtype=np.int64)
        cold = np.flatnonzero(users < 0)
        pad = b.item_ids[self.search.popular[:k]]
        result[cold[:, None], np.arange(len(pad))[None, :]] = pad
        warm = np.flatnonzero(users >= 0)
        with single_threaded_blas():
            for s in range(0, len(warm), chunk):
                rows = warm[s : s + chunk]
                out = self.rank_known(users[rows], k).items
                result[rows] = np.where(out >= 0, b.item_ids[np.maximum(out, 0)], -1)
        return result

    # ------------------------------------------------------------------ model top-k

    def top_k(
        self, user_vector: NDArray[Any], k: int, exclude: Sequence[int] | NDArray[Any] = ()
    ) -> NDArray[np.int64]:
        """The served model ranking of one vector (the fast path).

        Parameters
        ----------
        user_vector : numpy.ndarray
            (d + 1,) vector in the bundle's space.
        k : int
            Number of items.
        exclude : sequence of int
            Item *positions* (in ``bundle.item_ids``) to leave out.

        Returns
        -------
        numpy.ndarray
            Item positions, best first (fewer than ``k`` when fewer are allowed).
        """
        rows = self.search.top_k(
            np.asarray(user_vector)[None], k, self._one_row(exclude), self.probe, self.candidates
        )
        return rows[rows >= 0]

    def exact_top_k(
        self, user_vector: NDArray[Any], k: int, exclude: Sequence[int] | NDArray[Any] = ()
    ) -> NDArray[np.int64]:
        """Reference for :meth:`top_k`: scores every available item (slow; for measuring)."""
        rows = self.search.exact_top_k(np.asarray(user_vector)[None], k, self._one_row(exclude))
        return rows[rows >= 0]

    @staticmethod
    def _one_row(exclude: Sequence[int] | NDArray[Any]) -> Exclusions:
        items = np.asarray(exclude, dtype=np.int64)
        return (np.zeros(len(items), dtype=np.int64), items) if len(items) else no_exclusions()
