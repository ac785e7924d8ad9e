"""The request API: :class:`Recommender` answers one visitor or many, with reasons.

It applies the filters (never a bought item, never a duplicate; unavailable items as the
policy says), the fallbacks (an unknown visitor gets the fold-in of their session items, else
popular items) and explains every item. Three shortcuts give the same answers as ranking: the
answer of unknown visitors without session (most traffic) is computed once per k; known
visitors without session are served from the bundle's precomputed answers
(:class:`~recsys.bundle.ServedAnswers`) when they were made for its ranking; and a visitor's
live answer is kept until their next event (a bounded LRU keyed by every argument of
:meth:`Recommender.recommend`). Every
list, for one visitor or many, with or without online events, is ranked by one method
(:meth:`Recommender.rank`): the policy's composition (:func:`~recsys.serving.policies.compose`)
or its scored candidates (:func:`~recsys.serving.policies.rank_scored`).

Why one module of this size: the filters, fallbacks, reasons, memo and precomputed answers
all act on the one ranking of :meth:`Recommender.rank`; together they keep a single
definition of what a visitor is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from recsys.arrays import index_of
from recsys.bundle import Bundle, ServedAnswers
from recsys.exceptions import ConfigurationError
from recsys.names import DEFAULT_POLICY, DEFAULT_RECENT_SLOTS, Policy, Source
from recsys.serving.features import (
    COVISIT_SOURCE,
    HISTORY_SOURCE,
    MODEL_SOURCE,
    History,
    Visits,
    candidates,
    feature_names,
)
from recsys.serving.index import exact_scores
from recsys.serving.memo import Memo
from recsys.serving.policies import (
    PART_HISTORY,
    PART_MODEL,
    PART_POPULAR,
    PART_SIMILAR,
    Head,
    Padding,
    Plan,
    Ranked,
    Scorer,
    Vector,
    compose,
    get_policy,
    rank_scored,
)
from recsys.serving.search import Exclusions, ItemSearch, no_exclusions, single_threaded_blas

REASON_VIEWED = "you viewed it"
REASON_SIMILAR = "similar to an item you viewed"
REASON_FOR_YOU = "recommended for you"
REASON_CATEGORY = "popular in its category"
REASON_POPULAR = "popular now"
#: reasons by code (the codes stored in precomputed answers)
REASONS: Final = (REASON_VIEWED, REASON_SIMILAR, REASON_FOR_YOU, REASON_CATEGORY, REASON_POPULAR)
_VIEWED, _SIMILAR, _FOR_YOU, _CATEGORY, _POPULAR = range(5)

#: model candidates of a scored policy per visitor
MODEL_CANDIDATES = 50
#: live answers kept for visitors who ask again before their next event
ANSWER_MEMO = 8192
#: longest session (items + purchases) whose answer is kept: bounds the memo's keys (a
#: client may post thousands of purchases for one visitor) at ~8 KB each
ANSWER_MEMO_ITEMS = 1024

_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False


@dataclass
class Recommendation:
    """One answer: parallel lists of items, scores and reasons, plus where they came from.

    ``scores`` are model scores ``user_vector . item_vector`` for composed policies (for
    unknown visitors without session the user vector is ``[0, ..., 0, 1]``, i.e. the item
    bias) and the scorer's scores for scored ones (NaN for popular padding).
    """

    user_id: int
    item_ids: list[int]
    scores: list[float]
    reasons: list[str]
    source: Source


def _copy(rec: Recommendation, user_id: int) -> Recommendation:
    """A kept answer for ``user_id``, with lists of its own (callers may change them)."""
    return Recommendation(int(user_id), [*rec.item_ids], [*rec.scores], [*rec.reasons], rec.source)


def _csr_rows(indptr: NDArray[Any], values: NDArray[Any], rows: NDArray[np.int64]) -> Exclusions:
    """Flatten CSR rows ``rows`` into (row number in ``rows``, value) pairs, row order kept."""
    if len(rows) == 1:  # one visitor (a live request): a slice
        start, end = indptr[rows[0]], indptr[rows[0] + 1]
        return np.zeros(end - start, dtype=np.int64), values[start:end].astype(np.int64)
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
        A name of :data:`~recsys.serving.policies.POLICIES` (a :class:`~recsys.names.Policy`).
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
    filter_unavailable : bool, optional
        Override the policy's rule on items flagged unavailable (e.g. a shop that keeps the
        flag fresh wants them never shown).
    tree_scorer : callable, optional
        Another evaluator of the bundle's ranker with the same results (training uses
        CatBoost's own for large batches); default: the bundle's numpy trees.

    Raises
    ------
    ConfigurationError
        For an unknown policy, ``candidates < 1``, a ``search`` of another bundle, or a
        policy the bundle cannot serve (a learned ranker it does not carry).

    Notes
    -----
    Never returns an item the user bought, never a duplicate, and exactly ``k`` items whenever
    that many are allowed (padding with popular items). Model ties are broken by popularity,
    so a model with constant scores ranks like ``"popular"``.
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
        filter_unavailable: bool | None = None,
        tree_scorer: Callable[[NDArray[np.float32]], NDArray[np.float64]] | None = None,
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
        self.filter_unavailable = (
            self.ranking.filter_unavailable if filter_unavailable is None else filter_unavailable
        )
        self._rank_of = np.empty(bundle.n_items, dtype=np.int64)
        self._rank_of[bundle.popular] = np.arange(bundle.n_items)
        self.padding = self._padding()
        if self.ranking.scorer is not Scorer.NONE:
            names = feature_names(bundle)  # raises for a bundle without the parts it needs
            if self.ranking.scorer is Scorer.RANKER and (
                bundle.ranker is None or bundle.ranker.feature_names != names
            ):
                raise ConfigurationError(
                    "policy 'ranker' needs a bundle with a learned ranker over the features "
                    f"{', '.join(names)}"
                )
        self.tree_scorer = tree_scorer
        #: the source of a known visitor's answers (the same for every k)
        self._known_source = self.ranking.known(1, self.recent_slots).source
        self._cold: dict[int, Recommendation] = {}
        self._live = Memo[Recommendation](ANSWER_MEMO)
        # popularity alone ranks a known visitor (no head, no model, no scorer): their list is
        # the padding without their purchases, served without the general ranking's overhead
        # (an A/B popularity arm has no precomputed answers); see _popular_known
        self._by_popularity = (
            self.ranking.head is Head.NONE
            and not self.ranking.model
            and self.ranking.scorer is Scorer.NONE
        )

    def _padding(self) -> NDArray[np.int64]:
        """Item positions, most popular first by the policy's popularity, allowed ones only."""
        b = self.bundle
        order = b.popular.astype(np.int64)
        if self.ranking.padding is Padding.CARTS:
            if b.activity is None:
                raise ConfigurationError(
                    f"policy {self.policy!r} needs the bundle's activity counts (an older "
                    "bundle has none)"
                )
            carts_7d, carts_28d = b.activity.column("carts_7d"), b.activity.column("carts_28d")
            order = np.lexsort((self._rank_of, -carts_28d, -carts_7d)).astype(np.int64)
        return order[b.item_available[order]] if self.filter_unavailable else order

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
        """Build the index and answer requests now, so that no visitor pays for either."""
        self.search.build()
        if self.bundle.n_users:
            self.recommend(int(self.bundle.user_ids[0]), 5)
        if self.bundle.n_items:
            cold = int(self.bundle.user_ids[-1]) + 1 if self.bundle.n_users else 0
            self.recommend(cold, 5, session_items=[int(self.bundle.item_ids[0])])

    # ------------------------------------------------------------------ one visitor

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
    ) -> Recommendation:
        """Top-``k`` items for one visitor.

        Parameters
        ----------
        user_id : int
            Visitor id; ids missing from the bundle are cold visitors.
        k : int
            Number of items (>= 0).
        session_items : sequence of int
            Item ids the visitor viewed or carted online since the bundle was built, in the
            order the events happened (oldest first). For a known visitor they go in front
            of the stored history; for an unknown one they drive the fold-in. Unknown item
            ids are ignored.
        session_bought : sequence of int
            Item ids bought online: never recommended.
        session_times : sequence of int, optional
            Epoch ms of each of ``session_items`` (default: ``now_ms``).
        session_carts : sequence of int
            Those of ``session_items`` that were added to cart.
        now_ms : int, optional
            When the visitor is ranked (ages are measured from it); default: the last session
            event, or the bundle's cutoff without session.

        Returns
        -------
        Recommendation
            ``source`` is the policy for a known visitor; for an unknown one with known
            session items ``"fold_in"`` (policies that fold in) or the policy name;
            ``"popular"`` otherwise.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        b = self.bundle
        user = int(b.user_ids.searchsorted(user_id))
        if user >= b.n_users or b.user_ids[user] != user_id:
            user = -1
        session = len(session_items) or len(session_bought) or len(session_carts)
        if not session and user >= 0:
            answers = self.answers
            if answers is not None and k <= answers.items.shape[1]:
                return self._explain(answers, user_id, user, k)
            if self._by_popularity:
                return self._popular_known(user_id, user, k)
        if not session and user < 0:
            # an unknown visitor without session: the answer depends on nothing but k (most
            # traffic is such one-off visitors), computed once per k
            cold = self._cold.get(k)
            if cold is None:
                cold = self._cold[k] = self._recommend_live(
                    user_id, user, k, (), (), None, (), None
                )
            return _copy(cold, user_id)
        args = (
            user_id,
            user,
            k,
            session_items,
            session_bought,
            session_times,
            session_carts,
            now_ms,
        )
        if len(session_items) + len(session_bought) > ANSWER_MEMO_ITEMS:
            return self._recommend_live(*args)
        # a browsing visitor asks again (another widget, a reload) before their next event:
        # the answer is kept, keyed by every argument it depends on
        key = (
            user_id,
            k,
            tuple(session_items),
            tuple(session_bought),
            None if session_times is None else tuple(session_times),
            tuple(session_carts),
            now_ms,
        )
        kept = self._live.get(key)
        if kept is None:
            kept = self._recommend_live(*args)
            self._live.put(key, kept)
        return _copy(kept, user_id)

    def _recommend_live(
        self,
        user_id: int,
        user: int,
        k: int,
        session_items: Sequence[int],
        session_bought: Sequence[int],
        session_times: Sequence[int] | None,
        session_carts: Sequence[int],
        now_ms: int | None,
    ) -> Recommendation:
        """:meth:`recommend` ranked now; ``user`` is the bundle position (-1: unknown)."""
        visits, has_session = self._visit(
            user, session_items, session_bought, session_times, session_carts, now_ms
        )
        if user >= 0:
            plan = self.ranking.known(k, self.recent_slots)
        else:
            plan = self.ranking.unknown(k, self.recent_slots, session=has_session)
        visits = self._with_vectors(visits, plan, np.array([user]))
        ranked = self.rank(visits, plan, k)
        codes, scores = self._explained(visits, plan, ranked)
        size = int((ranked.items[0] >= 0).sum())
        return Recommendation(
            user_id=int(user_id),
            item_ids=self.bundle.item_ids[ranked.items[0, :size]].tolist(),
            scores=scores[0, :size].tolist(),
            reasons=[REASONS[c] for c in codes[0, :size].tolist()],
            source=plan.source,
        )

    def _visit(
        self,
        user: int,
        session_items: Sequence[int],
        session_bought: Sequence[int],
        session_times: Sequence[int] | None,
        session_carts: Sequence[int],
        now_ms: int | None,
    ) -> tuple[Visits, bool]:
        """One visitor's stored history merged with their session (vectors not set yet);
        and whether any session item is known to the bundle."""
        b = self.bundle
        stored = (
            self._known_history(np.array([user]))
            if user >= 0
            else History(_EMPTY, _EMPTY, _EMPTY, _EMPTY, _EMPTY)
        )
        bought = b.bought(user).astype(np.int64) if user >= 0 else _EMPTY
        ids = np.asarray(session_items, dtype=np.int64)
        pos = index_of(b.item_ids, ids)
        known_now = self._now(stored.times, now_ms, session_times)
        times = (
            np.full(len(ids), known_now, dtype=np.int64)
            if session_times is None
            else np.asarray(session_times, dtype=np.int64)
        )
        carted = np.isin(ids, np.asarray(session_carts, dtype=np.int64))
        ok = pos >= 0
        pos, times, carted = pos[ok], times[ok], carted[ok]
        # the session first (newer), then the stored history; each item once, counts summed
        items = np.concatenate([pos[::-1], stored.items])
        all_times = np.concatenate([times[::-1], stored.times])
        views = np.concatenate([(~carted[::-1]).astype(np.int64), stored.views])
        carts = np.concatenate([carted[::-1].astype(np.int64), stored.carts])
        uniq, first, inverse = np.unique(items, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # most recent first, as listed
        last = np.full(len(uniq), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, inverse, all_times)
        merged = History(
            rows=np.zeros(len(uniq), dtype=np.int64),
            items=uniq[order],
            times=last[order],
            views=np.bincount(inverse, weights=views, minlength=len(uniq)).astype(np.int64)[order],
            carts=np.bincount(inverse, weights=carts, minlength=len(uniq)).astype(np.int64)[order],
        )
        if len(session_bought):
            sold = index_of(b.item_ids, np.asarray(session_bought, dtype=np.int64))
            bought = np.concatenate([bought, sold[sold >= 0]])
        visits = Visits(
            known=np.array([user >= 0]),
            now_ms=np.array([known_now], dtype=np.int64),
            vectors=np.zeros((1, b.item_vectors.shape[1]), dtype=np.float32),
            history=merged,
            bought=(np.zeros(len(bought), dtype=np.int64), bought),
        )
        return visits, len(pos) > 0

    def _now(
        self, stored: NDArray[np.int64], now_ms: int | None, times: Sequence[int] | None
    ) -> int:
        """The ranking time: given, else the last session event, else the bundle's cutoff."""
        if now_ms is not None:
            return int(now_ms)
        if times is not None and len(times):
            return int(max(times))
        cutoff = self.bundle.metadata.get("cutoff_ms")
        return int(cutoff) if cutoff is not None else int(stored.max(initial=0))

    def _known_history(self, users: NDArray[np.int64]) -> History:
        """The stored histories of known visitors (bundle positions), with their counts."""
        b = self.bundle
        rows, items = _csr_rows(b.history_indptr, b.history_items, users)
        times = _csr_rows(b.history_indptr, b.history_ts, users)[1]
        if b.activity is not None:
            views = _csr_rows(b.history_indptr, b.activity.history_views, users)[1]
            carts = _csr_rows(b.history_indptr, b.activity.history_carts, users)[1]
        else:  # an older bundle: one view each
            views, carts = np.ones(len(items), dtype=np.int64), np.zeros(len(items), np.int64)
        return History(rows, items, times, views, carts)

    def _with_vectors(self, visits: Visits, plan: Plan, users: NDArray[np.int64]) -> Visits:
        """``visits`` with the vectors of ``plan`` (user, session fold-in or bias)."""
        b = self.bundle
        vectors: NDArray[Any]
        if plan.vector is Vector.USER:
            vectors = b.user_vectors[users].astype(np.float32)
        elif plan.vector is Vector.SESSION:
            hist = visits.history
            sums = np.zeros((visits.n, b.item_vectors.shape[1] - 1))
            np.add.at(sums, hist.rows, b.item_vectors[hist.items, :-1])
            counts = np.maximum(np.bincount(hist.rows, minlength=visits.n), 1)
            vectors = np.hstack([sums / counts[:, None], np.ones((visits.n, 1))])
        else:  # nothing known of the visitor: the score of an all-zero embedding, the item bias
            vectors = np.zeros((visits.n, b.item_vectors.shape[1]))
            vectors[:, -1] = 1.0
        return Visits(
            visits.known,
            visits.now_ms,
            vectors.astype(np.float32),
            visits.history,
            visits.bought,
        )

    def _popular_known(self, user_id: int, user: int, k: int) -> Recommendation:
        """What :meth:`rank` and :meth:`_explained` give a known visitor without session under
        a popularity-only policy, computed directly: the first ``k`` padding items they did not
        buy, their model scores, "popular in its category" for a category of their history.
        (A test holds it equal to the general path for every visitor of several bundles.)"""
        b = self.bundle
        bought = b.bought(user)
        head = self.padding[: k + len(bought)]
        items = head[~np.isin(head, bought)][:k] if len(bought) else head[:k]
        vector = b.user_vectors[user : user + 1].astype(np.float32)
        scores = exact_scores(vector[:, None, :], b.item_vectors[items][None])[0]
        # a few items against a short history: Python sets beat np.isin's set-up cost
        seen = set(b.item_category[b.history(user)].tolist())
        return Recommendation(
            user_id=int(user_id),
            item_ids=b.item_ids[items].tolist(),
            scores=scores.tolist(),
            reasons=[
                REASON_CATEGORY if c >= 0 and c in seen else REASON_POPULAR
                for c in b.item_category[items].tolist()
            ],
            source=self._known_source,
        )

    def _explain(self, answers: ServedAnswers, user_id: int, user: int, k: int) -> Recommendation:
        """The precomputed answer of a known visitor."""
        items = answers.items[user, :k]
        size = k - items.tolist().count(-1)  # -1 pads the end; k ints: no numpy reduction
        return Recommendation(
            user_id=int(user_id),
            item_ids=self.bundle.item_ids[items[:size]].tolist(),
            scores=answers.scores[user, :size].tolist(),
            reasons=[REASONS[c] for c in answers.reasons[user, :size].tolist()],
            source=self._known_source,
        )

    # ------------------------------------------------------------------ any number of visitors

    def rank(self, visits: Visits, plan: Plan, k: int) -> Ranked:
        """The lists of ``k`` items of ``visits`` under ``plan``: the one ranking every path
        (one visitor, a batch, precomputed answers) goes through."""
        b = self.bundle
        history = (visits.history.rows, visits.history.items)
        if plan.scorer is Scorer.NONE:
            if self.ranking.views_only:
                viewed = visits.history.views > 0
                history = (history[0][viewed], history[1][viewed])
            by_model = plan.model and not self.search.constant
            return compose(
                self.search,
                visits.vectors if by_model else None,
                history,
                visits.bought,
                visits.n,
                k,
                plan.head,
                self.padding,
                self.filter_unavailable,
                self.probe,
                self.candidates,
            )
        cand = candidates(b, self.search, visits, n_model=MODEL_CANDIDATES if plan.model else 0)
        names = feature_names(b)
        if plan.scorer is Scorer.RANKER:
            assert b.ranker is not None
            scores = (self.tree_scorer or b.ranker.predict)(cand.x)
        else:  # co-visitation weight: only co-visited candidates are ranked by it
            covisit = cand.x[:, names.index("covisit")].astype(np.float64)
            scores = np.where(covisit > 0, covisit, np.nan)
        if self.filter_unavailable:
            scores = np.where(b.item_available[cand.items], scores, np.nan)
        parts = np.select(
            [
                (cand.sources & HISTORY_SOURCE) > 0,
                (cand.sources & COVISIT_SOURCE) > 0,
                (cand.sources & MODEL_SOURCE) > 0,
            ],
            [PART_HISTORY, PART_SIMILAR, PART_MODEL],
            PART_POPULAR,
        ).astype(np.int8)
        return rank_scored(
            cand.rows,
            cand.items,
            scores,
            parts,
            visits.n,
            k,
            self._rank_of,
            self.padding,
            visits.bought,
            b.n_items,
        )

    def _explained(
        self, visits: Visits, plan: Plan, ranked: Ranked
    ) -> tuple[NDArray[np.int8], NDArray[np.float64]]:
        """Reason codes and scores of ranked lists."""
        b = self.bundle
        items, parts = ranked.items, ranked.parts
        valid = items >= 0
        pos = np.maximum(items, 0)
        codes = np.full(items.shape, _POPULAR, dtype=np.int8)
        codes[parts == PART_HISTORY] = _VIEWED
        codes[parts == PART_SIMILAR] = _SIMILAR
        model = parts == PART_MODEL
        known = np.broadcast_to(visits.known[:, None], items.shape)
        codes[model] = np.where(known, _FOR_YOU, _SIMILAR)[model]
        # popular items in a category the visitor has seen are explained by it
        n_cats = b.n_category_keys
        hist = visits.history
        seen = np.unique(hist.rows * n_cats + b.item_category[hist.items] + 1)
        row_of = np.broadcast_to(np.arange(len(items))[:, None], items.shape)
        in_seen = index_of(seen, row_of * n_cats + b.item_category[pos] + 1) >= 0
        codes[(parts == PART_POPULAR) & in_seen & (b.item_category[pos] >= 0)] = _CATEGORY
        if plan.scorer is Scorer.NONE:
            scores = exact_scores(visits.vectors[:, None, :], b.item_vectors[pos])
        else:
            scores = ranked.scores
        return codes, np.where(valid, scores, np.nan)

    def visit(
        self,
        user_id: int,
        session_items: Sequence[int] = (),
        session_bought: Sequence[int] = (),
        session_times: Sequence[int] | None = None,
        session_carts: Sequence[int] = (),
        now_ms: int | None = None,
    ) -> Visits:
        """One visitor with their session as a learned ranking sees them (arguments as in
        :meth:`recommend`): stored history merged with the session, and the user vector of a
        known visitor, else the session fold-in, else the bias vector."""
        b = self.bundle
        user = int(b.user_ids.searchsorted(user_id))
        if user >= b.n_users or b.user_ids[user] != user_id:
            user = -1
        visits, has_session = self._visit(
            user, session_items, session_bought, session_times, session_carts, now_ms
        )
        vector = Vector.USER if user >= 0 else Vector.SESSION if has_session else Vector.BIAS
        plan = Plan(Source.MODEL, 0, vector, True)
        return self._with_vectors(visits, plan, np.array([max(user, 0)]))

    def known_visits(self, users: NDArray[np.int64]) -> Visits:
        """Known visitors without session as a ranking sees them: their stored history and
        purchases, their own vectors, ranked as of the bundle's cutoff.

        Parameters
        ----------
        users : numpy.ndarray
            Bundle positions of the visitors.
        """
        b = self.bundle
        history = self._known_history(users)
        visits = Visits(
            known=np.ones(len(users), dtype=bool),
            now_ms=np.full(len(users), self._now(history.times, None, None), dtype=np.int64),
            vectors=np.zeros((len(users), b.item_vectors.shape[1]), dtype=np.float32),
            history=history,
            bought=_csr_rows(b.bought_indptr, b.bought_items, users),
        )
        return self._with_vectors(visits, Plan(Source.MODEL, 0, Vector.USER, True), users)

    def rank_known(
        self, users: NDArray[np.int64], k: int
    ) -> tuple[Ranked, NDArray[np.int8], NDArray[np.float64]]:
        """The lists :meth:`recommend` ranks for known visitors without session, with their
        reason codes and scores.

        Parameters
        ----------
        users : numpy.ndarray
            Bundle positions of the visitors.
        k : int
            Items per visitor.
        """
        plan = self.ranking.known(k, self.recent_slots)
        visits = self.known_visits(users)
        ranked = self.rank(visits, plan, k)
        codes, scores = self._explained(visits, plan, ranked)
        return ranked, codes, scores

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
        pad = b.item_ids[self.padding[:k]]
        result[cold[:, None], np.arange(len(pad))[None, :]] = pad
        warm = np.flatnonzero(users >= 0)
        with single_threaded_blas():
            for s in range(0, len(warm), chunk):
                rows = warm[s : s + chunk]
                out = self.rank_known(users[rows], k)[0].items
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
