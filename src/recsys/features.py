"""Item metadata as of a point in time: category, availability, LightFM item features.

The property log is a change log, so "the value" of a property only exists relative to a
point in time. Every function here takes ``as_of_ms`` and uses only rows strictly before it,
which is what keeps features built for a training cutoff free of future information.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.columns import (
    AVAILABLE,
    CATEGORY,
    CATEGORY_TREE_FILE,
    ITEM,
    PARENT,
    PROPERTY,
    TIMESTAMP,
    VALUE,
)
from recsys.exceptions import DataValidationError

#: feature given to items of unknown category when there is no identity feature
UNKNOWN_CATEGORY_FEATURE = "cat:unknown"


def property_as_of(item_properties: pd.DataFrame, name: str, as_of_ms: int) -> pd.Series:
    """Latest value of one property per item among rows with ``timestamp < as_of_ms``.

    Parameters
    ----------
    item_properties : pandas.DataFrame
        Property log with ``timestamp``, ``itemid``, ``property`` (str or categorical) and
        ``value`` columns, in any order.
    name : str
        Property name, e.g. ``"categoryid"``.
    as_of_ms : int
        Exclusive upper bound (epoch ms).

    Returns
    -------
    pandas.Series
        Values (str) indexed by ``itemid`` (sorted, unique), named ``name``. Items with no row
        for the property before ``as_of_ms`` are absent. When one item has two rows with the
        same latest timestamp, the one later in the input wins.
    """
    mask = (item_properties[TIMESTAMP].to_numpy() < as_of_ms) & (
        item_properties[PROPERTY] == name
    ).to_numpy(dtype=bool, na_value=False)
    rows = item_properties.loc[mask, [TIMESTAMP, ITEM, VALUE]]
    items = rows[ITEM].to_numpy(dtype=np.int64)
    order = np.lexsort((rows[TIMESTAMP].to_numpy(), items))  # stable: ties keep input order
    items = items[order]
    is_last = np.ones(len(items), dtype=bool)
    is_last[:-1] = items[1:] != items[:-1]
    picked = order[is_last]
    values = rows[VALUE].to_numpy()[picked].astype(str)
    return pd.Series(values, index=pd.Index(items[is_last], name=ITEM), name=name, dtype=str)


def category_ancestors(category_tree: pd.DataFrame) -> dict[int, tuple[int, ...]]:
    """Map every category to its chain ``(itself, parent, grandparent, ..., root)``.

    Parameters
    ----------
    category_tree : pandas.DataFrame
        ``categoryid`` (int) and ``parentid`` (nullable int, missing for roots).

    Returns
    -------
    dict[int, tuple[int, ...]]
        A parent that is not itself listed as a category is treated as a root.

    Raises
    ------
    DataValidationError
        If the parent links contain a cycle.
    """
    parent_of: dict[int, int | None] = {
        int(cat): (None if pd.isna(parent) else int(parent))
        for cat, parent in zip(
            category_tree[CATEGORY].to_numpy(),
            category_tree[PARENT].to_numpy(dtype=object),
            strict=True,
        )
    }
    ancestors: dict[int, tuple[int, ...]] = {}
    # a loop over ~1.7k categories, not over events: memoised, so linear in the tree size
    for start in parent_of:
        path: list[int] = []
        node: int | None = start
        tail: tuple[int, ...] = ()
        while node is not None:
            if node in ancestors:
                tail = ancestors[node]
                break
            if node in path:
                raise DataValidationError(
                    f"category tree has a cycle through category {node}",
                    file=CATEGORY_TREE_FILE,
                    column=PARENT,
                )
            path.append(node)
            node = parent_of.get(node)
        for i, member in enumerate(path):
            ancestors[member] = tuple(path[i:]) + tail
    return ancestors


def item_category(item_ids: np.ndarray, item_properties: pd.DataFrame, as_of_ms: int) -> np.ndarray:
    """Category of each item as of ``as_of_ms``.

    Parameters
    ----------
    item_ids : numpy.ndarray
        Item ids (unique).
    item_properties : pandas.DataFrame
        Property log (see :func:`property_as_of`).
    as_of_ms : int
        Exclusive upper bound (epoch ms).

    Returns
    -------
    numpy.ndarray
        int64, aligned with ``item_ids``; -1 where the category is unknown or not an integer.
    """
    values = pd.to_numeric(property_as_of(item_properties, CATEGORY, as_of_ms), errors="coerce")
    aligned = values.reindex(np.asarray(item_ids, dtype=np.int64)).to_numpy(dtype=np.float64)
    integral = np.isfinite(aligned) & (aligned == np.floor(aligned)) & (aligned >= 0)
    return np.where(integral, aligned, -1).astype(np.int64)


def item_available(
    item_ids: np.ndarray, item_properties: pd.DataFrame, as_of_ms: int
) -> np.ndarray:
    """Availability of each item as of ``as_of_ms`` from the ``available`` property.

    Parameters
    ----------
    item_ids : numpy.ndarray
        Item ids (unique).
    item_properties : pandas.DataFrame
        Property log (see :func:`property_as_of`).
    as_of_ms : int
        Exclusive upper bound (epoch ms).

    Returns
    -------
    numpy.ndarray
        bool, aligned with ``item_ids``: False only where the latest value is ``"0"``; items
        never reported are assumed available (most catalogue items carry no such row).
    """
    values = property_as_of(item_properties, AVAILABLE, as_of_ms)
    aligned = values.reindex(np.asarray(item_ids, dtype=np.int64))
    return ~(aligned == "0").to_numpy(dtype=bool)


def build_item_features(
    item_ids: np.ndarray,
    item_properties: pd.DataFrame,
    category_tree: pd.DataFrame,
    as_of_ms: int,
    identity: bool = True,
) -> tuple[sparse.csr_matrix, list[str]]:
    """LightFM item-feature matrix: identity + category + every ancestor category.

    Parameters
    ----------
    item_ids : numpy.ndarray
        Item ids (unique); row ``i`` of the result describes ``item_ids[i]``.
    item_properties : pandas.DataFrame
        Property log; only rows with ``timestamp < as_of_ms`` are used.
    category_tree : pandas.DataFrame
        ``categoryid``, ``parentid``.
    as_of_ms : int
        Exclusive upper bound (epoch ms) for the category lookup.
    identity : bool
        Give every item its own feature ``"item:<id>"`` (columns ``0..n-1`` in item order).

    Returns
    -------
    features : scipy.sparse.csr_matrix
        float32, ``n_items x n_features``, each row sums to 1 (LightFM's normalisation when
        identity and metadata features are combined).
    names : list of str
        Column names: ``"item:<id>"`` (if ``identity``), then ``"cat:<id>"`` for every
        category that occurs as a category or ancestor (ascending id), then
        ``"cat:unknown"`` if ``identity`` is False and some item has no known category, so
        that no row is empty. With ``identity`` True an unknown-category item has only its
        identity feature.
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n_items = len(item_ids)
    ordered = np.sort(item_ids)
    if (ordered[1:] == ordered[:-1]).any():
        raise ValueError("item_ids must be unique")
    categories = item_category(item_ids, item_properties, as_of_ms)
    known = categories >= 0

    used = np.unique(categories[known])
    ancestors = category_ancestors(category_tree)
    # a loop over distinct categories (~1.7k at most), not over items or events
    chains = [ancestors.get(int(cat), (int(cat),)) for cat in used]
    flat = np.fromiter(chain.from_iterable(chains), dtype=np.int64)
    feature_cats = np.unique(flat)
    lengths = np.fromiter(map(len, chains), dtype=np.int64, count=len(chains))
    cat_to_feature = sparse.csr_matrix(
        (
            np.ones(len(flat), dtype=np.float32),
            (np.repeat(np.arange(len(used)), lengths), np.searchsorted(feature_cats, flat)),
        ),
        shape=(len(used), len(feature_cats)),
    )
    item_to_cat = sparse.csr_matrix(
        (
            np.ones(int(known.sum()), dtype=np.float32),
            (np.flatnonzero(known), np.searchsorted(used, categories[known])),
        ),
        shape=(n_items, len(used)),
    )

    blocks: list[sparse.spmatrix] = []
    names: list[str] = []
    if identity:
        blocks.append(sparse.identity(n_items, dtype=np.float32, format="csr"))
        names.extend(f"item:{item}" for item in item_ids.tolist())
    blocks.append(item_to_cat @ cat_to_feature)
    names.extend(f"cat:{cat}" for cat in feature_cats.tolist())
    if not identity and not known.all():
        blocks.append(sparse.csr_matrix((~known).astype(np.float32)[:, None]))
        names.append(UNKNOWN_CATEGORY_FEATURE)

    matrix = sparse.hstack(blocks, format="csr", dtype=np.float32)
    row_sums = np.asarray(matrix.sum(axis=1), dtype=np.float32).ravel()
    scale = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
    matrix = sparse.csr_matrix(sparse.diags(scale) @ matrix, dtype=np.float32)
    matrix.sort_indices()
    return matrix, names
