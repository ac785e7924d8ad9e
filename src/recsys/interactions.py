"""Events -> sparse interaction matrix and the training data every model consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.arrays import index_of as index_of  # re-exported: part of this module's API
from recsys.arrays import sorted_unique
from recsys.columns import (
    ADDTOCART,
    AVAILABLE,
    CATEGORY,
    EVENT,
    EVENT_TYPES,
    ITEM,
    PARENT,
    PROPERTY,
    PURCHASE,
    TIMESTAMP,
    VALUE,
    VIEW,
    VISITOR,
)
from recsys.exceptions import ConfigurationError
from recsys.features import build_item_features, item_available, item_category
from recsys.split import window

#: interaction weight per event type: a cart or a purchase says more than a view
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {VIEW: 1.0, ADDTOCART: 5.0, PURCHASE: 10.0}


@dataclass
class TrainingData:
    """Everything a model may learn from: only data strictly before ``cutoff_ms``."""

    cutoff_ms: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    interactions: sparse.csr_matrix
    item_features: sparse.csr_matrix
    feature_names: list[str]
    item_category: np.ndarray
    item_available: np.ndarray
    events: pd.DataFrame
    #: weight per event type the interactions were built with (popularity uses the same)
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    #: the category / availability property rows and the category tree the features came
    #: from (None: none were used), kept so that :meth:`before` can rebuild an earlier cutoff
    item_properties: pd.DataFrame | None = field(default=None, repr=False)
    category_tree: pd.DataFrame | None = field(default=None, repr=False)

    def before(self, cutoff_ms: int) -> TrainingData:
        """The training data of an earlier cutoff (events and properties strictly before it),
        built as :func:`prepare_training_data` would from the original tables."""
        if cutoff_ms > self.cutoff_ms:
            raise ConfigurationError(
                f"cutoff {cutoff_ms} is after this data's cutoff {self.cutoff_ms}"
            )
        props = self.item_properties
        if props is None:
            props = pd.DataFrame({TIMESTAMP: [], ITEM: [], PROPERTY: [], VALUE: []})
        tree = self.category_tree
        if tree is None:
            tree = pd.DataFrame({CATEGORY: pd.Series([], dtype="int64"), PARENT: []})
        identity = any(name.startswith("item:") for name in self.feature_names[:1])
        return prepare_training_data(
            self.events, props, tree, cutoff_ms, self.event_weights, identity_features=identity
        )


def event_weight_array(events: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """The weight of every event row (float64); event types missing from ``weights`` weigh 0.

    Raises
    ------
    ConfigurationError
        If ``weights`` names an unknown event type or holds a negative weight.

    Examples
    --------
    >>> events = pd.DataFrame({"event": ["view", "transaction", "addtocart"]})
    >>> event_weight_array(events, {"view": 1.0, "addtocart": 5.0}).tolist()
    [1.0, 0.0, 5.0]
    """
    unknown = set(weights) - set(EVENT_TYPES)
    if unknown:
        raise ConfigurationError(f"unknown event types in weights: {sorted(unknown)}")
    if any(w < 0 for w in weights.values()):
        raise ConfigurationError(f"event weights must be >= 0, got {dict(weights)}")
    # event types missing from ``weights`` weigh 0, e.g. {ADDTOCART: 1.0} learns from carts only
    event = events[EVENT]
    if isinstance(event.dtype, pd.CategoricalDtype):
        per_code = np.array([weights.get(c, 0.0) for c in event.cat.categories] + [0.0])
        return per_code[event.cat.codes.to_numpy()]  # code -1 (missing) picks the final 0.0
    return event.map(dict(weights)).to_numpy(dtype=np.float64, na_value=0.0)


def build_interactions(
    events: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> sparse.csr_matrix:
    """Sum event weights into a ``len(user_ids) x len(item_ids)`` matrix (vectorised).

    Parameters
    ----------
    events : pandas.DataFrame
        Events with ``visitorid``, ``itemid``, ``event``.
    user_ids, item_ids : numpy.ndarray
        Unique ids defining rows and columns (ascending by convention); events of other
        users or items are ignored.
    weights : mapping of str to float
        Weight per event type; types not in the mapping weigh 0 and leave no entry.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 with summed weights, sorted indices, no explicit zeros.
    """
    # a hash lookup: binary search of millions of unsorted ids is cache-bound and ~10x slower
    rows = pd.Index(user_ids).get_indexer(events[VISITOR].to_numpy(dtype=np.int64))
    cols = pd.Index(item_ids).get_indexer(events[ITEM].to_numpy(dtype=np.int64))
    values = event_weight_array(events, weights)
    keep = (rows >= 0) & (cols >= 0) & (values > 0)
    matrix = sparse.coo_matrix(
        (values[keep], (rows[keep], cols[keep])), shape=(len(user_ids), len(item_ids))
    ).tocsr()  # tocsr sums duplicate (user, item) pairs
    matrix.sort_indices()
    return matrix.astype(np.float32)


def build_interactions_naive(
    events: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> sparse.csr_matrix:
    """Same result as :func:`build_interactions`, by a Python loop over the rows.

    Deliberately slow: it exists only as the reference point for the benchmark in
    ``benchmarks/train_full_scale.py``. Do not use it in the pipeline.
    """
    user_pos = {int(user): i for i, user in enumerate(user_ids)}
    item_pos = {int(item): j for j, item in enumerate(item_ids)}
    totals: dict[tuple[int, int], float] = {}
    for user, item, event in zip(events[VISITOR], events[ITEM], events[EVENT], strict=True):
        weight = weights.get(event, 0.0)
        i, j = user_pos.get(int(user)), item_pos.get(int(item))
        if weight > 0 and i is not None and j is not None:
            totals[(i, j)] = totals.get((i, j), 0.0) + weight
    rows = [i for i, _ in totals]
    cols = [j for _, j in totals]
    matrix = sparse.csr_matrix(
        (list(totals.values()), (rows, cols)),
        shape=(len(user_ids), len(item_ids)),
        dtype=np.float64,
    )
    matrix.sort_indices()
    return matrix.astype(np.float32)


def prepare_training_data(
    events: pd.DataFrame,
    item_properties: pd.DataFrame,
    category_tree: pd.DataFrame,
    cutoff_ms: int,
    weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
    identity_features: bool = True,
) -> TrainingData:
    """Build the training data for a cutoff from events and properties strictly before it.

    Parameters
    ----------
    events : pandas.DataFrame
        Event log (``load_events`` dtypes); rows at or after ``cutoff_ms`` are ignored.
    item_properties : pandas.DataFrame
        Property log; only ``categoryid`` / ``available`` rows before ``cutoff_ms`` are used.
    category_tree : pandas.DataFrame
        ``categoryid``, ``parentid``.
    cutoff_ms : int
        Exclusive end of the training window (epoch ms), e.g. ``TimeSplit.validation_start_ms``.
    weights : mapping of str to float
        Interaction weight per event type (see :data:`DEFAULT_EVENT_WEIGHTS`).
    identity_features : bool
        Passed to :func:`recsys.features.build_item_features` as ``identity``.

    Returns
    -------
    TrainingData
        Users and items are those with at least one event before the cutoff.

    Raises
    ------
    ConfigurationError
        If no event precedes the cutoff or the weights are invalid.
    """
    train = window(events, None, cutoff_ms)
    if train.empty:
        raise ConfigurationError(f"no events before cutoff {cutoff_ms}")
    user_ids = sorted_unique(train[VISITOR].to_numpy(dtype=np.int64))
    item_ids = sorted_unique(train[ITEM].to_numpy(dtype=np.int64))
    interactions = build_interactions(train, user_ids, item_ids, weights)

    # one pass over the (large) property log, then every lookup works on the few rows left
    props = item_properties
    keep = props[TIMESTAMP].to_numpy() < cutoff_ms
    keep &= props[PROPERTY].isin([CATEGORY, AVAILABLE]).to_numpy(dtype=bool)
    props = props.loc[keep]
    props = props.loc[np.isin(props[ITEM].to_numpy(dtype=np.int64), item_ids)]

    item_features, feature_names = build_item_features(
        item_ids, props, category_tree, cutoff_ms, identity=identity_features
    )
    return TrainingData(
        cutoff_ms=int(cutoff_ms),
        user_ids=user_ids,
        item_ids=item_ids,
        interactions=interactions,
        item_features=item_features,
        feature_names=feature_names,
        item_category=item_category(item_ids, props, cutoff_ms),
        item_available=item_available(item_ids, props, cutoff_ms),
        events=train,
        event_weights=dict(weights),
        item_properties=props,
        category_tree=category_tree,
    )
