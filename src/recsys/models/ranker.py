"""The learned ranker: CatBoost (YetiRank) over the serving features, exported as arrays.

Training examples are the candidates and features :mod:`recsys.serving.features` computes for
known visitors as of a cutoff (exactly what serving computes), labelled by the items those
visitors added to cart in the window after it. The fitted ensemble of oblivious trees is
exported to :class:`~recsys.bundle.ObliviousTrees`, which scores candidates in numpy with the
bits CatBoost computes; CatBoost itself is only needed to train.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from recsys.arrays import index_of, rank_in_runs
from recsys.bundle import Bundle, ObliviousTrees, ServingLists
from recsys.columns import ADDTOCART, DAY_MS, VISITOR
from recsys.evaluation import RELEVANT, holdout_targets
from recsys.evaluation.replay import cart_moments
from recsys.interactions import TrainingData
from recsys.models.fits import BaseFits
from recsys.names import Policy
from recsys.serving import Recommender
from recsys.serving.features import candidates, concat_visits, feature_names
from recsys.split import window

#: CatBoost settings: a small ensemble keeps live scoring within the latency budget
DEFAULT_RANKER: dict[str, Any] = {
    "loss_function": "YetiRank",
    "depth": 6,
    "learning_rate": 0.08,
    "iterations": 300,
    "l2_leaf_reg": 3.0,
}
#: rounds without improvement of the held-out visitors' NDCG before training stops
EARLY_STOPPING_ROUNDS = 40


@dataclass(frozen=True)
class Examples:
    """Labelled candidates of one window: features, 0/1 labels and the visitor of each row."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)


#: negatives kept per group: the ranking of the few plausible items is what is learnt
MAX_NEGATIVES = 40


def _labelled(
    cand: Any, y: np.ndarray, n_groups: int, group_offset: int, names: tuple[str, ...], seed: int
) -> Examples:
    """Groups with a positive, every positive and at most :data:`MAX_NEGATIVES` random
    negatives per group (seeded)."""
    useful = np.bincount(cand.rows, weights=y, minlength=n_groups) > 0
    negatives = np.flatnonzero(y == 0)
    noise = np.random.default_rng(seed).random(len(negatives))
    order = negatives[np.lexsort((noise, cand.rows[negatives]))]  # random within each group
    sampled = np.zeros(len(y), dtype=bool)
    sampled[order[rank_in_runs(cand.rows[order]) < MAX_NEGATIVES]] = True
    keep = useful[cand.rows] & ((y > 0) | sampled)
    return Examples(cand.x[keep], y[keep], cand.rows[keep] + group_offset, names)


def examples(
    rec: Recommender, targets: pd.DataFrame, group_offset: int = 0, seed: int = 0
) -> Examples:
    """Candidates of the known visitors of ``targets`` and their labels.

    Parameters
    ----------
    rec : Recommender
        A recommender of the bundle fitted up to the window's start (its search and vectors
        are used; its policy does not matter).
    targets : pandas.DataFrame
        :func:`~recsys.evaluation.holdout_targets` of the window (visitors and the items they
        carted); visitors unknown to the bundle are left out.
    group_offset : int
        Added to the group ids, so that several windows can be concatenated.

    Returns
    -------
    Examples
        Only visitors with at least one carted item among their candidates (the others teach
        a ranking nothing).
    """
    bundle = rec.bundle
    users = index_of(bundle.user_ids, targets[VISITOR].to_numpy(dtype=np.int64))
    known = users >= 0
    users = users[known]
    relevant = [np.asarray(r, dtype=np.int64) for r in targets.loc[known, RELEVANT]]
    names = feature_names(bundle)
    cand = candidates(bundle, rec.search, rec.known_visits(users))
    lengths = np.fromiter(map(len, relevant), dtype=np.int64, count=len(relevant))
    flat = index_of(bundle.item_ids, np.concatenate(relevant)) if lengths.sum() else np.zeros(0)
    owner = np.repeat(np.arange(len(relevant)), lengths)
    positive = np.unique(owner[flat >= 0] * bundle.n_items + flat[flat >= 0])
    y = (index_of(positive, cand.rows * bundle.n_items + cand.items) >= 0).astype(np.float32)
    return _labelled(cand, y, len(users), group_offset, names, seed)


def session_examples(
    rec: Recommender, window_events: pd.DataFrame, group_offset: int = 0, seed: int = 0
) -> Examples:
    """Candidates at every first add-to-cart of the window, with the visitor's session before
    it, labelled by that one item: the moments the live service ranks for (known and
    unknown visitors alike; see :func:`recsys.evaluation.replay.cart_moments`)."""
    bundle = rec.bundle
    moments = list(cart_moments(window_events))
    names = feature_names(bundle)
    if not moments:
        return Examples(
            np.zeros((0, len(names)), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            names,
        )
    visits = concat_visits(
        [
            rec.visit(
                m.visitor,
                m.session_items,
                m.session_bought,
                m.session_times,
                m.session_carts,
                now_ms=m.timestamp,
            )
            for m in moments
        ]
    )
    cand = candidates(bundle, rec.search, visits)
    target = index_of(bundle.item_ids, np.array([m.item for m in moments], dtype=np.int64))
    y = (cand.items == target[cand.rows]).astype(np.float32)
    return _labelled(cand, y, len(moments), group_offset, names, seed)


def concat(parts: list[Examples]) -> Examples:
    """Examples of several windows as one set (their groups must not overlap)."""
    names = parts[0].names
    if any(p.names != names for p in parts):
        raise ValueError("examples of different feature sets cannot be combined")
    return Examples(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.group for p in parts]),
        names,
    )


@dataclass(frozen=True)
class FittedRanker:
    """A fitted ranker: its exported trees (what serving runs), a report, and CatBoost's own
    model, which scores large batches (precomputed answers) many times faster with the same
    bits (a test compares them)."""

    trees: ObliviousTrees
    report: dict[str, Any]
    booster: Any

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``x``: CatBoost's evaluator, equal to ``trees.predict``."""
        return np.asarray(self.booster.predict(np.asarray(x, dtype=np.float32)), dtype=np.float64)


def fit_ranker(
    train: Examples,
    seed: int = 42,
    params: dict[str, Any] | None = None,
    threads: int = 2,
    holdout_share: float = 0.2,
) -> FittedRanker:
    """Fit CatBoost on ``train`` and export its trees.

    A ``holdout_share`` of the visitors (groups), drawn with ``seed``, is held out for early
    stopping: the number of trees is chosen on visitors the trees were not fitted on, inside
    the training windows (never on a later window).

    Returns
    -------
    FittedRanker
        The exported trees, a report (best iteration, held-out NDCG, feature importance) and
        the CatBoost model.
    """
    from catboost import CatBoostRanker, Pool

    params = {**DEFAULT_RANKER, **(params or {})}
    groups = np.unique(train.group)
    rng = np.random.default_rng(seed)
    held = rng.random(len(groups)) < holdout_share
    held_rows = np.isin(train.group, groups[held])
    fit, val = ~held_rows, held_rows
    model = CatBoostRanker(
        **params,
        random_seed=seed,
        thread_count=threads,
        verbose=0,
        eval_metric="NDCG:top=5",
        od_type="Iter",
        od_wait=EARLY_STOPPING_ROUNDS,
        use_best_model=True,
        allow_writing_files=False,
    )
    pool = Pool(train.x[fit], train.y[fit], group_id=train.group[fit])
    model.fit(pool, eval_set=Pool(train.x[val], train.y[val], group_id=train.group[val]))
    trees = export_trees(model, train.names)
    # how much the loss worsens without each feature (the type ranking losses support)
    scores = model.get_feature_importance(pool, type="LossFunctionChange")
    importance = dict(zip(train.names, map(float, scores), strict=True))
    report = {
        "best_iteration": int(model.get_best_iteration() or 0),
        "trees": int(model.tree_count_),
        "heldout_ndcg_at_5": _heldout_score(model.get_best_score()),
        "train_rows": int(fit.sum()),
        "train_visitors": int((~held).sum()),
        "importance": importance,
    }
    return FittedRanker(trees, report, model)


def _heldout_score(best: dict[str, dict[str, float]]) -> float:
    """The eval metric on the held-out visitors from CatBoost's best scores."""
    held = [scores for name, scores in best.items() if name != "learn"]
    return float(next(iter(held[0].values()))) if held and held[0] else float("nan")


def export_trees(model: Any, names: tuple[str, ...]) -> ObliviousTrees:
    """A fitted CatBoost model's oblivious trees as :class:`ObliviousTrees` arrays.

    Trees shallower than the deepest are padded with never-taken levels (border ``+inf``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        model.save_model(str(path), format="json")
        spec = json.loads(path.read_text())
    trees = spec["oblivious_trees"]
    depth = max((len(t["splits"]) for t in trees), default=0)
    features = np.zeros((len(trees), depth), dtype=np.int32)
    borders = np.full((len(trees), depth), np.inf, dtype=np.float32)
    leaves = np.zeros((len(trees), 2**depth))
    for t, tree in enumerate(trees):
        for level, split in enumerate(tree["splits"]):
            if split.get("split_type", "FloatFeature") != "FloatFeature":
                raise ValueError(f"unsupported split {split!r}: only float features are used")
            features[t, level] = split["float_feature_index"]
            borders[t, level] = split["border"]
        values = np.asarray(tree["leaf_values"], dtype=np.float64)
        leaves[t, : len(values)] = values
    scale, bias = spec.get("scale_and_bias", [1.0, [0.0]])
    return ObliviousTrees(features, borders, leaves, names, float(scale), float(bias[0]))


class RankerModel:
    """LightFM with a learned ranker on top: served with policy ``ranker``.

    :meth:`fit` splits the data it is given in time: for each of the last ``windows`` windows
    of ``window_days``, LightFM is fitted on what came before the window, and the visitors who
    added to cart inside it give the training examples (as of the window's start, and at
    each add-to-cart with their session before it). CatBoost learns from them; finally LightFM
    is fitted on all of the data, and the bundle carries both.

    Parameters
    ----------
    lightfm : dict or None
        LightFM parameters (with ``epochs``; ``recent_slots`` is kept as a serving knob).
        None: no LightFM at all (no model candidates, a constant model score): the ablation
        that measures what LightFM adds.
    windows : int
        Training windows before the cutoff.
    window_days : float
        Length of each window.
    ranker : dict, optional
        CatBoost settings over :data:`DEFAULT_RANKER`.
    sessions : bool
        Also learn from add-to-cart moments with their sessions.
    seed, threads : int
        Seeds and threads of LightFM and CatBoost (one thread: reproducible bit for bit).
    popularity_window_days : int
        Window of the bundle's popularity rankings.
    fits : BaseFits, optional
        LightFM fits shared with other models of the same run.
    """

    name = "ranker"

    def __init__(
        self,
        lightfm: dict[str, Any] | None,
        windows: int = 2,
        window_days: float = 7.0,
        ranker: dict[str, Any] | None = None,
        sessions: bool = True,
        seed: int = 42,
        threads: int = 2,
        popularity_window_days: int = 14,
        fits: BaseFits | None = None,
    ) -> None:
        self.lightfm = None if lightfm is None else dict(lightfm)
        self.windows = windows
        self.window_ms = int(window_days * DAY_MS)
        self.ranker = ranker
        self.sessions = sessions
        self.seed = seed
        self.threads = threads
        self.popularity_window_days = popularity_window_days
        self.fits = fits if fits is not None else BaseFits()
        self.fitted: FittedRanker | None = None

    def _base(self, data: TrainingData) -> Bundle:
        return self.fits.bundle(
            data, self.lightfm, self.seed, self.threads, self.popularity_window_days
        )

    def fit(self, data: TrainingData) -> Self:
        """Learn the ranker from the last ``windows`` windows of ``data`` (see the class)."""
        parts = []
        for j in range(self.windows, 0, -1):
            start = data.cutoff_ms - j * self.window_ms
            inside = window(data.events, start, start + self.window_ms)
            before = data.before(start)
            rec = Recommender(self._base(before), policy=Policy.MODEL)
            targets = holdout_targets(before.user_ids, inside, ADDTOCART)
            parts.append(examples(rec, targets, 2 * j * 10**8, self.seed + j))
            if self.sessions:
                offset = (2 * j + 1) * 10**8
                parts.append(session_examples(rec, inside, offset, self.seed + j))
        self.fitted = fit_ranker(concat(parts), self.seed, self.ranker, self.threads)
        return self

    @property
    def report(self) -> dict[str, Any]:
        """What the ranker trained on and learnt (empty before :meth:`fit`)."""
        return {} if self.fitted is None else self.fitted.report

    def to_bundle(self, data: TrainingData, lists: ServingLists | None = None) -> Bundle:
        """LightFM fitted on all of ``data`` (shared through ``fits``) with the ranker."""
        if self.fitted is None:
            raise RuntimeError("RankerModel.fit must run before exporting")
        base = self._base(data)
        bundle = dataclasses.replace(
            base,
            metadata={**base.metadata, "model": self.name, "policy": str(Policy.RANKER)},
            ranker=self.fitted.trees,
        )
        bundle.metadata["ranker"] = {k: v for k, v in self.report.items() if k != "importance"}
        return bundle
