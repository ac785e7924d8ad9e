"""Exploratory analysis of a RetailRocket dataset: what the notebooks and ``eda_summary.md`` show.

Every figure the EDA notebook plots is computed here (vectorised, on the loaders' frames), so
the notebook only calls and plots, and the same numbers are unit-tested:

* the funnel and the three business metrics of the A/B design on the history
  (:func:`business_metrics`, :func:`daily_funnel`, :func:`sample_size_per_arm`);
* visitor activity and sessions (:func:`visitor_table`), item and category concentration
  (:func:`concentration`, :func:`category_views`), category tree shape (:func:`tree_shape`);
* time: daily volume and drift of what is popular (:func:`daily_counts`, :func:`weekly_drift`);
* the property log as a change log (:func:`property_changes`, :func:`as_of_disagreement`);
* add-to-carts preceded by a view of the same item (:func:`view_before_cart`);
* what a time split leaves to the fallback and fold-in (:func:`split_coverage`);
* per-group offline scores of a served policy (:func:`score_groups`);
* the synthetic data against the real dataset's published figures (:data:`REAL_FIGURES`,
  :func:`compare_with_real`).

Why one module of this size: it is a catalogue of small independent functions (20-40 lines
each) that the EDA notebook calls; one module keeps the notebook's imports to one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.arrays import sorted_unique
from recsys.data.profile import SESSION_GAP_MS, visitor_table
from recsys.evaluation import RELEVANT, BatchRanker, first_k, ranking_metrics
from recsys.features import category_ancestors, item_category, property_as_of
from recsys.split import TimeSplit, window

__all__ = [
    "REAL_FIGURES",
    "REAL_SOURCE",
    "SESSION_GAP_MS",
    "RealFigure",
    "activity_groups",
    "as_of_disagreement",
    "business_metrics",
    "category_views",
    "compare_with_real",
    "concentration",
    "daily_counts",
    "daily_funnel",
    "find_data_dir",
    "property_changes",
    "sample_size_per_arm",
    "score_groups",
    "split_coverage",
    "tree_shape",
    "view_before_cart",
    "visitor_table",
    "weekly_drift",
]

# ----------------------------------------------------------------------------- real figures

#: where :data:`REAL_FIGURES` come from
REAL_SOURCE = (
    "RetailRocket e-commerce dataset (Kaggle, retailrocket/ecommerce-dataset), figures as "
    "published in DESIGN.md section 3 'Real dataset at full scale'"
)


@dataclass(frozen=True)
class RealFigure:
    """One published figure of the real dataset.

    ``key`` is its path in :func:`recsys.data.profile.profile_dataset`'s result
    (``section.name``); ``scales`` says whether it is a count that the generator's ``scale``
    divides; ``text`` holds figures that are not a single number (e.g. "00-04").
    """

    key: str
    label: str
    value: float | None
    scales: bool = False
    text: str | None = None


#: the real RetailRocket figures, full scale (the synthetic generator's targets)
REAL_FIGURES: tuple[RealFigure, ...] = (
    RealFigure("counts.events", "events", 2_756_101, scales=True),
    RealFigure("counts.visitors", "visitors", 1_407_580, scales=True),
    RealFigure("counts.items_in_events", "items with events", 235_061, scales=True),
    RealFigure("counts.items_with_properties", "items with properties", 417_053, scales=True),
    RealFigure("counts.property_rows", "property rows", 20_275_902, scales=True),
    RealFigure("counts.property_rows_per_item", "property rows per item", 48.6),
    RealFigure("counts.categoryid_rows_per_item", "categoryid rows per item", 1.9),
    RealFigure("counts.available_rows_per_item", "available rows per item", 3.6),
    RealFigure("counts.categories", "categories", 1_669),
    RealFigure("counts.roots", "root categories", 25),
    RealFigure("counts.leaves", "leaf categories", 1_307),
    RealFigure("counts.max_depth", "tree depth (max)", 5),
    RealFigure("event_mix.view", "share of events: view", 0.9667),
    RealFigure("event_mix.addtocart", "share of events: add to cart", 0.0252),
    RealFigure("event_mix.transaction", "share of events: transaction", 0.0081),
    RealFigure("funnel.viewed_share", "visitors who viewed", 0.9976),
    RealFigure("funnel.addtocart_share", "visitors who added to cart", 0.0268),
    RealFigure("funnel.purchase_share", "visitors who bought", 0.0083),
    RealFigure("funnel.cart_to_purchase_share", "cart adders who bought", 0.31),
    RealFigure("funnel.purchased_items_per_buyer", "purchased items per buyer", 1.9),
    RealFigure("activity.single_event_share", "visitors with 1 event", 0.712),
    RealFigure("activity.up_to_3_events_share", "visitors with <= 3 events", 0.914),
    RealFigure("activity.mean_events", "events per visitor (mean)", 1.96),
    RealFigure("activity.mean_sessions", "sessions per visitor (mean, 30-min gap)", 1.25),
    RealFigure("activity.single_session_share", "single-session visitors", 0.87),
    RealFigure(
        "activity.multi_vs_single_purchase_ratio", "purchase rate, multi vs single session", 8.0
    ),
    RealFigure("items.single_interaction_share", "items with 1 interaction", 0.313),
    RealFigure("items.up_to_10_interactions_share", "items with <= 10 interactions", 0.783),
    RealFigure("items.top100_categories_view_share", "views in the top 100 categories", 0.59),
    RealFigure("time.days", "days spanned", 138),
    RealFigure("time.events_per_day", "events per day", 19_800, scales=True),
    RealFigure("time.busiest_weekday", "busiest weekday", None, text="Tuesday"),
    RealFigure("time.peak_hour_utc", "peak hour (UTC)", None, text="00-04"),
    RealFigure("time.quietest_hour_utc", "quietest hour (UTC)", None, text="14-16"),
)


def _lookup(profile: Mapping[str, Any], key: str) -> Any:
    value: Any = profile
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def compare_with_real(profile: Mapping[str, Any], scale: float | None = None) -> pd.DataFrame:
    """A dataset's profile beside the real dataset's published figures.

    Parameters
    ----------
    profile : mapping
        :func:`recsys.data.profile.profile_dataset`'s result.
    scale : float, optional
        The generator's scale; counts marked ``scales`` are compared with ``real * scale``.
        Default: estimated as the number of visitors over the real number.

    Returns
    -------
    pandas.DataFrame
        Index ``key``; columns ``figure``, ``real`` (published, full scale; text for the
        figures that are not one number), ``expected`` (``real`` times ``scale`` for counts,
        else ``real``), ``observed`` and ``ratio`` (``observed / expected``, NaN for text).

    Examples
    --------
    >>> table = compare_with_real({"counts": {"visitors": 14_000}, "funnel":
    ...     {"addtocart_share": 0.03}, "time": {"busiest_weekday": "Tuesday"}}, scale=0.01)
    >>> table.loc["funnel.addtocart_share", ["expected", "observed"]].tolist()
    [0.0268, 0.03]
    >>> round(float(table.loc["counts.visitors", "ratio"]), 3)
    0.995
    >>> table.loc["time.busiest_weekday", "observed"]
    'Tuesday'
    """
    if scale is None:
        visitors = _lookup(profile, "counts.visitors")
        scale = float(visitors) / 1_407_580 if visitors else 1.0
    rows: list[tuple[Any, ...]] = []
    for fig in REAL_FIGURES:
        observed = _lookup(profile, fig.key)
        if fig.text is not None:
            rows.append((fig.key, fig.label, fig.text, fig.text, observed, np.nan))
            continue
        assert fig.value is not None
        expected = fig.value * scale if fig.scales else fig.value
        ratio = float(observed) / expected if observed is not None and expected else np.nan
        rows.append((fig.key, fig.label, fig.value, expected, observed, ratio))
    columns = ["key", "figure", "real", "expected", "observed", "ratio"]
    return pd.DataFrame(rows, columns=columns).set_index("key")


def find_data_dir(root: str | Path) -> tuple[Path, bool]:
    """The data folder an analysis reads: the real files if present, else the demo data.

    ``root/data/raw`` holds real RetailRocket files when a user has them (DESIGN.md);
    otherwise the synthetic demo folder ``root/var/demo/raw`` (what ``make demo`` writes).

    Returns
    -------
    tuple
        ``(folder, synthetic)``; the demo folder may not exist yet.
    """
    root = Path(root)
    real = root / "data" / "raw"
    if (real / C.EVENTS_FILE).is_file():
        return real, False
    return root / "var" / "demo" / "raw", True


# ----------------------------------------------------------------------------- funnel


def business_metrics(events: pd.DataFrame) -> dict[str, float | int | None]:
    """The A/B test's three business metrics computed on a history, every visitor "exposed".

    Definitions as in DESIGN.md's A/B contract: add-to-cart conversion = visitors who added
    at least one item / visitors; average items added per adder = add-to-cart events /
    visitors who added; cart-to-purchase conversion = visitors who added and bought /
    visitors who added.

    Returns
    -------
    dict
        ``visitors``, ``adders``, ``buyers`` (buyers among adders), ``items_added`` and the
        three ratios ``addtocart_conversion``, ``items_per_adder``,
        ``cart_to_purchase_conversion`` (None without a denominator).

    Examples
    --------
    >>> ev = pd.DataFrame({"visitorid": [1, 1, 1, 2, 3, 3],
    ...     "event": ["view", "addtocart", "addtocart", "view", "addtocart", "transaction"]})
    >>> m = business_metrics(ev)
    >>> m["addtocart_conversion"], m["items_per_adder"], m["cart_to_purchase_conversion"]
    (0.6666666666666666, 1.5, 0.5)
    """
    visitors = events[C.VISITOR].to_numpy(np.int64)
    event = events[C.EVENT].astype(str).to_numpy()
    carts = event == C.ADDTOCART
    adders = sorted_unique(visitors[carts])
    buyers = np.intersect1d(adders, visitors[event == C.PURCHASE])
    n_visitors = len(sorted_unique(visitors))

    def ratio(num: float, den: float) -> float | None:
        return float(num) / float(den) if den else None

    return {
        "visitors": n_visitors,
        "adders": len(adders),
        "buyers": len(buyers),
        "items_added": int(carts.sum()),
        "addtocart_conversion": ratio(len(adders), n_visitors),
        "items_per_adder": ratio(int(carts.sum()), len(adders)),
        "cart_to_purchase_conversion": ratio(len(buyers), len(adders)),
    }


def daily_funnel(events: pd.DataFrame) -> pd.DataFrame:
    """The business metrics per UTC day, each day's visitors counted as exposed that day.

    Returns
    -------
    pandas.DataFrame
        Index ``date``; columns ``visitors``, ``adders``, ``buyers`` and the three ratios of
        :func:`business_metrics`.
    """
    day = events[C.TIMESTAMP].to_numpy(np.int64) // C.DAY_MS
    rows = {}
    for d in np.unique(day):
        m = business_metrics(events.loc[day == d])
        rows[pd.Timestamp(int(d) * C.DAY_MS, unit="ms", tz="UTC").date()] = m
    frame = pd.DataFrame.from_dict(rows, orient="index").drop(columns="items_added")
    frame.index.name = "date"
    return frame


def sample_size_per_arm(
    rate: float, relative_lift: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Visitors per arm for a two-sided test of two proportions to detect a relative lift.

    Normal approximation: ``n = (z_{1-alpha/2} + z_{power})^2 * (p1 q1 + p2 q2) / (p2 - p1)^2``.

    Examples
    --------
    >>> sample_size_per_arm(0.0268, 0.10)
    59768
    """
    from statistics import NormalDist

    p1, p2 = rate, rate * (1 + relative_lift)
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return int(np.ceil(z**2 * (p1 * (1 - p1) + p2 * (1 - p2)) / (p2 - p1) ** 2))


# ----------------------------------------------------------------------------- concentration


def concentration(counts: np.ndarray, shares: tuple[float, ...] = (0.01, 0.1, 0.2)) -> dict:
    """How much of the total the top entities hold (a long tail in numbers).

    Parameters
    ----------
    counts : numpy.ndarray
        One count per entity (item, category, ...), any order.
    shares : tuple of float
        Top shares of entities to report.

    Returns
    -------
    dict
        ``"top_1%"`` etc.: share of the total held by that top share of entities (at least
        one entity), and ``gini``: the Gini coefficient of the counts (0 = equal).

    Examples
    --------
    >>> concentration(np.array([97, 1, 1, 1]), shares=(0.25,))
    {'top_25%': 0.97, 'gini': 0.72}
    """
    ordered = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    total = ordered.sum()
    out: dict[str, float] = {}
    for share in shares:
        top = max(1, int(np.ceil(share * len(ordered))))
        out[f"top_{share:.0%}"] = float(ordered[:top].sum() / total) if total else float("nan")
    n = len(ordered)
    ascending = ordered[::-1]
    gini = float((2 * np.arange(1, n + 1) - n - 1) @ ascending / (n * total)) if total else np.nan
    out["gini"] = round(gini, 10)
    return out


def category_views(events: pd.DataFrame, item_properties: pd.DataFrame) -> pd.Series:
    """Views per category (each item's latest category), most viewed first.

    Views of items without a known category are counted under ``-1``.
    """
    views = events.loc[(events[C.EVENT] == C.VIEW).to_numpy(dtype=bool), C.ITEM]
    items, per_item = np.unique(views.to_numpy(np.int64), return_counts=True)
    cats = item_category(items, item_properties, np.iinfo(np.int64).max)
    counts = pd.Series(per_item, index=cats).groupby(level=0).sum()
    counts.index.name = C.CATEGORY
    return counts.sort_values(ascending=False).rename("views")


def tree_shape(category_tree: pd.DataFrame) -> pd.DataFrame:
    """Depth and number of children of every category.

    Returns
    -------
    pandas.DataFrame
        Index ``categoryid``; columns ``depth`` (a root has depth 1), ``children``, ``leaf``.

    Examples
    --------
    >>> tree = pd.DataFrame({"categoryid": [1, 2, 3], "parentid": [None, 1, 1]})
    >>> tree_shape(tree)["depth"].tolist(), tree_shape(tree)["children"].tolist()
    ([1, 2, 2], [2, 0, 0])
    """
    ancestors = category_ancestors(category_tree)
    cats = category_tree[C.CATEGORY].to_numpy(np.int64)
    parents = category_tree[C.PARENT].dropna().to_numpy(np.int64)
    children = pd.Series(parents).value_counts()
    frame = pd.DataFrame(
        {
            "depth": [len(ancestors[int(c)]) for c in cats],
            "children": children.reindex(cats, fill_value=0).to_numpy(np.int64),
        },
        index=pd.Index(cats, name=C.CATEGORY),
    )
    frame["leaf"] = frame["children"] == 0
    return frame


# ----------------------------------------------------------------------------- time


def daily_counts(events: pd.DataFrame) -> pd.DataFrame:
    """Events per UTC day by type, and distinct visitors per day.

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (every day between the first and last event, zeros included);
        columns ``view``, ``addtocart``, ``transaction``, ``visitors``.
    """
    day = events[C.TIMESTAMP].to_numpy(np.int64) // C.DAY_MS
    first, last = int(day.min()), int(day.max())
    n = last - first + 1
    kind = pd.Categorical(events[C.EVENT], categories=list(C.EVENT_TYPES)).codes
    data = {
        name: np.bincount(day[kind == k] - first, minlength=n)
        for k, name in enumerate(C.EVENT_TYPES)
    }
    pairs = sorted_unique((day - first) * np.int64(2**40) + events[C.VISITOR].to_numpy(np.int64))
    data["visitors"] = np.bincount(pairs // np.int64(2**40), minlength=n)
    index = pd.to_datetime((first + np.arange(n)) * C.DAY_MS, unit="ms", utc=True).date
    return pd.DataFrame(data, index=pd.Index(index, name="date"))


def weekly_drift(events: pd.DataFrame, top: int = 100, week_ms: int = 7 * C.DAY_MS) -> pd.DataFrame:
    """How fast popularity moves: week-over-week overlap of the most interacted items.

    Weeks start at the first event. Returns one row per week after the first: ``overlap``
    (share of this week's top ``top`` items that were in last week's top ``top``),
    ``new_items`` (share of this week's interactions on items never seen before) and
    ``events``.
    """
    ts = events[C.TIMESTAMP].to_numpy(np.int64)
    items = events[C.ITEM].to_numpy(np.int64)
    week = (ts - ts.min()) // week_ms
    order = np.argsort(ts, kind="stable")
    first_seen = pd.Series(week[order]).groupby(items[order]).min()
    fresh = week == first_seen.reindex(items).to_numpy()
    rows = []
    previous: np.ndarray | None = None
    for w in range(int(week.max()) + 1):
        in_week = week == w
        ids, counts = np.unique(items[in_week], return_counts=True)
        best = ids[np.argsort(-counts, kind="stable")[:top]]
        if previous is not None and len(best):
            rows.append(
                {
                    "week": w,
                    "start": pd.Timestamp(int(ts.min() + w * week_ms), unit="ms", tz="UTC"),
                    "overlap": float(np.isin(best, previous).mean()),
                    "new_items": float(fresh[in_week].mean()),
                    "events": int(in_week.sum()),
                }
            )
        previous = best
    return pd.DataFrame(rows).set_index("week")


# ----------------------------------------------------------------------------- property log


def property_changes(item_properties: pd.DataFrame, name: str) -> pd.DataFrame:
    """The change log of one property: per snapshot time, rows and rows that change a value.

    A row "changes" the value when the item had a different value at its previous row of that
    property. Returns a frame indexed by snapshot time (UTC) with ``rows``, ``changes`` and
    ``items`` (distinct items with a row at that time).

    Examples
    --------
    >>> props = pd.DataFrame({"timestamp": [0, 0, 604_800_000, 604_800_000],
    ...     "itemid": [1, 2, 1, 2], "property": "available", "value": ["1", "0", "0", "0"]})
    >>> property_changes(props, "available")["changes"].tolist()
    [0, 1]
    """
    rows = item_properties.loc[(item_properties[C.PROPERTY] == name).to_numpy(dtype=bool)]
    ts = rows[C.TIMESTAMP].to_numpy(np.int64)
    items = rows[C.ITEM].to_numpy(np.int64)
    values = rows[C.VALUE].astype(str).to_numpy()
    order = np.lexsort((ts, items))
    ts, items, values = ts[order], items[order], values[order]
    changed = np.zeros(len(ts), dtype=bool)
    changed[1:] = (items[1:] == items[:-1]) & (values[1:] != values[:-1])
    frame = pd.DataFrame({"ts": ts, "item": items, "changed": changed})
    out = frame.groupby("ts").agg(
        rows=("item", "size"), changes=("changed", "sum"), items=("item", "nunique")
    )
    out.index = pd.to_datetime(out.index, unit="ms", utc=True)
    out.index.name = "snapshot"
    return out.astype(np.int64)


def as_of_disagreement(
    item_properties: pd.DataFrame, name: str, as_of_ms: int, item_ids: np.ndarray | None = None
) -> dict[str, float | int]:
    """How many items' value of ``name`` as of ``as_of_ms`` differs from the latest value.

    A model that took the latest value instead of the value as of its training cutoff would
    see these items "from the future".

    Returns
    -------
    dict
        ``items`` (with a value at both times), ``differ`` and ``share``; ``unknown_then``:
        items (of ``item_ids``, default: every item with a latest value) without any value
        yet at ``as_of_ms``.

    Examples
    --------
    >>> props = pd.DataFrame({"timestamp": [0, 10, 0], "itemid": [1, 1, 2],
    ...     "property": "categoryid", "value": ["5", "6", "7"]})
    >>> as_of_disagreement(props, "categoryid", 5)
    {'items': 2, 'differ': 1, 'share': 0.5, 'unknown_then': 0}
    """
    then = property_as_of(item_properties, name, as_of_ms)
    now = property_as_of(item_properties, name, np.iinfo(np.int64).max)
    ids = now.index.to_numpy(np.int64) if item_ids is None else np.asarray(item_ids, np.int64)
    both = np.intersect1d(np.intersect1d(ids, then.index), now.index)
    differ = int((then.reindex(both).to_numpy() != now.reindex(both).to_numpy()).sum())
    return {
        "items": len(both),
        "differ": differ,
        "share": differ / len(both) if len(both) else float("nan"),
        "unknown_then": int((~np.isin(ids, then.index.to_numpy(np.int64))).sum()),
    }


# ----------------------------------------------------------------------------- behaviour


def view_before_cart(events: pd.DataFrame) -> pd.DataFrame:
    """For every add-to-cart: the time since the same visitor last viewed the same item.

    Returns
    -------
    pandas.DataFrame
        One row per add-to-cart event: ``visitorid``, ``itemid``, ``timestamp``, ``lag_ms``
        (milliseconds since the latest view of that item by that visitor at or before the
        add-to-cart; NaN when there was none) and ``same_session`` (that view is at most
        30 minutes before).

    Examples
    --------
    >>> ev = pd.DataFrame({"timestamp": [0, 60_000, 5_000, 9_000_000],
    ...     "visitorid": [1, 1, 2, 1], "itemid": [7, 7, 7, 8],
    ...     "event": ["view", "addtocart", "addtocart", "addtocart"]})
    >>> view_before_cart(ev)["lag_ms"].tolist()
    [nan, 60000.0, nan]
    """
    visitors = events[C.VISITOR].to_numpy(np.int64)
    items = events[C.ITEM].to_numpy(np.int64)
    ts = events[C.TIMESTAMP].to_numpy(np.int64)
    event = events[C.EVENT].astype(str).to_numpy()
    keep = (event == C.VIEW) | (event == C.ADDTOCART)
    visitors, items, ts, is_cart = visitors[keep], items[keep], ts[keep], event[keep] != C.VIEW
    # within (visitor, item), by time; a view at the same millisecond comes first
    order = np.lexsort((is_cart, ts, items, visitors))
    visitors, items, ts, is_cart = visitors[order], items[order], ts[order], is_cart[order]
    group_start = np.ones(len(ts), dtype=bool)
    group_start[1:] = (visitors[1:] != visitors[:-1]) | (items[1:] != items[:-1])
    start_pos = np.maximum.accumulate(np.where(group_start, np.arange(len(ts)), 0))
    last_view = np.maximum.accumulate(np.where(~is_cart, np.arange(len(ts)), -1))
    has_view = last_view >= start_pos
    lag = np.where(has_view, ts - ts[np.maximum(last_view, 0)], np.nan)
    carts = is_cart
    frame = pd.DataFrame(
        {
            C.VISITOR: visitors[carts],
            C.ITEM: items[carts],
            C.TIMESTAMP: ts[carts],
            "lag_ms": lag[carts],
        }
    )
    frame["same_session"] = frame["lag_ms"] <= SESSION_GAP_MS
    return frame.sort_values([C.TIMESTAMP, C.VISITOR, C.ITEM], kind="stable").reset_index(drop=True)


def split_coverage(events: pd.DataFrame, split: TimeSplit) -> dict[str, float | int]:
    """What the holdout's add-to-carts look like from the training side of a time split.

    Training = events before ``split.holdout_start_ms``; holdout = ``[holdout_start_ms,
    end_ms)``.

    Returns
    -------
    dict
        ``cart_visitors``: holdout visitors with an add-to-cart; ``warm``/``cold``: of those,
        seen / not seen in training (``warm_share``); ``cold_with_prior_view``: cold ones who
        viewed some item in the holdout before their first add-to-cart (a session fold-in has
        something to work with; ``fold_in_share`` of the cold); ``carts``: holdout
        (visitor, item) add-to-cart pairs; ``unseen_item_carts``: of those, on items without
        any training event (no model can score them; ``unseen_item_share``).

    Examples
    --------
    >>> ev = pd.DataFrame({"timestamp": [0, 10, 11, 12, 13], "visitorid": [1, 1, 2, 2, 3],
    ...     "itemid": [5, 5, 6, 9, 9],
    ...     "event": ["view", "addtocart", "view", "addtocart", "addtocart"]})
    >>> c = split_coverage(ev, TimeSplit(0, 10, 14))
    >>> c["warm"], c["cold"], c["cold_with_prior_view"], c["unseen_item_carts"]
    (1, 2, 1, 2)
    """
    before = window(events, None, split.holdout_start_ms)
    after = window(events, split.holdout_start_ms, split.end_ms)
    known_users = sorted_unique(before[C.VISITOR].to_numpy(np.int64))
    known_items = sorted_unique(before[C.ITEM].to_numpy(np.int64))
    is_cart = (after[C.EVENT] == C.ADDTOCART).to_numpy(dtype=bool)
    carts = after.loc[is_cart]
    cart_visitors = sorted_unique(carts[C.VISITOR].to_numpy(np.int64))
    warm = np.isin(cart_visitors, known_users)
    cold = cart_visitors[~warm]
    first_cart = carts.groupby(C.VISITOR)[C.TIMESTAMP].min()
    views = after.loc[(after[C.EVENT] == C.VIEW).to_numpy(dtype=bool)]
    first_view = views.groupby(C.VISITOR)[C.TIMESTAMP].min()
    prior = first_view.reindex(cold).to_numpy() < first_cart.reindex(cold).to_numpy()
    pairs = carts[[C.VISITOR, C.ITEM]].drop_duplicates()
    unseen = ~np.isin(pairs[C.ITEM].to_numpy(np.int64), known_items)

    def share(num: int, den: int) -> float:
        return num / den if den else float("nan")

    return {
        "cart_visitors": len(cart_visitors),
        "warm": int(warm.sum()),
        "cold": len(cold),
        "warm_share": share(int(warm.sum()), len(cart_visitors)),
        "cold_with_prior_view": int(prior.sum()),
        "fold_in_share": share(int(prior.sum()), len(cold)),
        "carts": len(pairs),
        "unseen_item_carts": int(unseen.sum()),
        "unseen_item_share": share(int(unseen.sum()), len(pairs)),
    }


def activity_groups(
    targets: pd.DataFrame, events_before: pd.DataFrame, heavy_events: int
) -> np.ndarray:
    """Label target visitors by what the model knew of them: cold, warm light, warm heavy.

    Parameters
    ----------
    targets : pandas.DataFrame
        :func:`recsys.evaluation.holdout_targets`' output.
    events_before : pandas.DataFrame
        The events before the window (the training data's events).
    heavy_events : int
        A warm visitor with at least this many earlier events is "heavy".

    Returns
    -------
    numpy.ndarray
        One label per target row: ``"cold"``, ``"warm, light"`` or ``"warm, heavy"``.

    Examples
    --------
    >>> targets = pd.DataFrame({"visitorid": [1, 2, 3]})
    >>> before = pd.DataFrame({"visitorid": [1, 1, 1, 2]})
    >>> activity_groups(targets, before, heavy_events=3).tolist()
    ['warm, heavy', 'warm, light', 'cold']
    """
    counts = events_before[C.VISITOR].value_counts()
    n = counts.reindex(targets[C.VISITOR].to_numpy(np.int64), fill_value=0).to_numpy()
    return np.where(n == 0, "cold", np.where(n >= heavy_events, "warm, heavy", "warm, light"))


def score_groups(
    rankers: Mapping[str, BatchRanker],
    targets: pd.DataFrame,
    group: np.ndarray,
    k: int,
    n_catalogue: int,
) -> pd.DataFrame:
    """Ranking metrics of every policy on every group of target visitors.

    Parameters
    ----------
    rankers : mapping of str to BatchRanker
        Served policies by name.
    targets : pandas.DataFrame
        :func:`recsys.evaluation.holdout_targets`' output.
    group : numpy.ndarray
        A label per target row (e.g. ``"warm, heavy"``).
    k, n_catalogue : int
        Cut-off and catalogue size (for coverage).

    Returns
    -------
    pandas.DataFrame
        Index ``(model, group)``; columns as in :func:`recsys.evaluation.ranking_metrics`.
    """
    group = np.asarray(group)
    users = targets[C.VISITOR].to_numpy(np.int64)
    rows = {}
    for name, ranker in rankers.items():
        for label in pd.unique(group):
            mask = group == label
            recommended = first_k(np.asarray(ranker.recommend_batch(users[mask], k)), k)
            relevant = list(targets.loc[mask, RELEVANT])
            rows[(name, label)] = ranking_metrics(recommended, relevant, k, n_catalogue)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "group"])
    return table
