"""Profile of a RetailRocket dataset: the figures DESIGN.md quotes for the real data.

``profile_dataset`` computes counts, event mix, per-visitor funnel, activity, item long tail,
time span and duplicates as a nested, JSON-serialisable dict (plain ints, floats, strings,
``None`` where a ratio has no denominator); ``render_profile`` turns it into rich tables.
Everything is vectorised: the full dataset (2.76M events, 20M property rows) takes seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from recsys import columns as C
from recsys.arrays import index_of, weekday
from recsys.data.load import Dataset
from recsys.features import property_as_of

#: a gap longer than this between two events of a visitor starts a new session
SESSION_GAP_MS = 30 * 60_000
TOP_CATEGORIES = 100
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if len(mask) else None


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def visitor_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per visitor: events by type, sessions, first and last event.

    Sessions split a visitor's events at gaps longer than 30 minutes (:data:`SESSION_GAP_MS`).

    Returns
    -------
    pandas.DataFrame
        Index ``visitorid`` (ascending); columns ``events``, ``view``, ``addtocart``,
        ``transaction``, ``sessions``, ``first_ms``, ``last_ms`` (all int64).

    Examples
    --------
    >>> ev = pd.DataFrame({"timestamp": [0, 60_000, 4_000_000, 0], "visitorid": [1, 1, 1, 2],
    ...     "event": ["view", "addtocart", "view", "view"], "itemid": [5, 5, 6, 5]})
    >>> visitor_table(ev)[["events", "addtocart", "sessions"]].to_dict("list")
    {'events': [3, 1], 'addtocart': [1, 0], 'sessions': [2, 1]}
    """
    ts = events[C.TIMESTAMP].to_numpy(np.int64)
    kind = pd.Categorical(events[C.EVENT], categories=list(C.EVENT_TYPES)).codes
    visitor_ids, visitor = np.unique(events[C.VISITOR].to_numpy(np.int64), return_inverse=True)
    n = len(visitor_ids)
    # sessions: sort by (visitor, time); a new visitor or a gap > 30 min starts one
    order = np.lexsort((ts, visitor))
    sv, st = visitor[order], ts[order]
    starts = np.ones(len(order), bool)
    starts[1:] = (sv[1:] != sv[:-1]) | (np.diff(st) > SESSION_GAP_MS)
    first_ms = np.full(n, np.iinfo(np.int64).max)
    last_ms = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first_ms, visitor, ts)
    np.maximum.at(last_ms, visitor, ts)
    return pd.DataFrame(
        {
            "events": np.bincount(visitor, minlength=n),
            **{
                name: np.bincount(visitor[kind == k], minlength=n)
                for k, name in enumerate(C.EVENT_TYPES)
            },
            "sessions": np.bincount(sv[starts], minlength=n),
            "first_ms": first_ms,
            "last_ms": last_ms,
        },
        index=pd.Index(visitor_ids, name=C.VISITOR),
    ).astype(np.int64)


def profile_dataset(ds: Dataset) -> dict[str, Any]:
    """Compute the dataset profile.

    Parameters
    ----------
    ds
        Events, item properties and category tree as returned by
        :func:`recsys.data.load.load_dataset`.

    Returns
    -------
    dict
        Sections ``counts``, ``event_mix``, ``funnel``, ``activity``, ``items``, ``time``,
        ``duplicates_dropped``; every value is JSON-serialisable.  Shares are fractions in
        [0, 1].  Sessions split a visitor's events at gaps longer than 30 minutes;
        "purchase share" is the share of visitors with a purchase; tree depth counts the nodes
        on the path from a root (a root alone has depth 1).
    """
    ev = ds.events
    ts = ev[C.TIMESTAMP].to_numpy(np.int64)
    item = ev[C.ITEM].to_numpy(np.int64)
    kind = pd.Categorical(ev[C.EVENT], categories=list(C.EVENT_TYPES)).codes
    visitors = visitor_table(ev)
    n_visitors = len(visitors)
    views, carts, buys = (visitors[name].to_numpy() for name in C.EVENT_TYPES)
    events_per_visitor = visitors["events"].to_numpy()
    sessions = visitors["sessions"].to_numpy()
    multi = sessions > 1
    buyer = buys > 0
    conv_single = _share(buyer[~multi])
    conv_multi = _share(buyer[multi])

    items_in_events, interactions = np.unique(item, return_counts=True)
    return {
        "counts": _counts(ds, len(ev), n_visitors, len(items_in_events)),
        "event_mix": {name: _share(kind == k) for k, name in enumerate(C.EVENT_TYPES)},
        "funnel": {
            "viewed_share": _share(views > 0),
            "addtocart_share": _share(carts > 0),
            "purchase_share": _share(buyer),
            "cart_to_purchase_share": _ratio((buyer & (carts > 0)).sum(), (carts > 0).sum()),
            "purchased_items_per_buyer": _ratio(buys.sum(), buyer.sum()),
        },
        "activity": {
            "single_event_share": _share(events_per_visitor == 1),
            "up_to_3_events_share": _share(events_per_visitor <= 3),
            "mean_events": _ratio(len(ev), n_visitors),
            "mean_sessions": _ratio(sessions.sum(), n_visitors),
            "single_session_share": _share(~multi),
            "single_session_purchase_share": conv_single,
            "multi_session_purchase_share": conv_multi,
            "multi_vs_single_purchase_ratio": (
                _ratio(conv_multi, conv_single) if conv_multi is not None and conv_single else None
            ),
        },
        "items": _long_tail(ds, item[kind == 0], interactions),
        "time": _time(ts),
        "duplicates_dropped": {
            **{k: int(v) for k, v in ds.duplicates_dropped.items()},
            "total": int(sum(ds.duplicates_dropped.values())),
        },
    }


def _counts(ds: Dataset, n_events: int, n_visitors: int, n_items: int) -> dict[str, Any]:
    props = ds.item_properties
    name = props[C.PROPERTY]
    items_with_props = int(props[C.ITEM].nunique())
    tree = ds.category_tree
    cats = tree[C.CATEGORY].to_numpy(np.int64)
    parent_col = tree[C.PARENT]
    is_root = parent_col.isna().to_numpy()
    parent = parent_col.fillna(-1).to_numpy(np.int64)
    # parent position (-1 for roots and for parents missing from the tree)
    parent_idx = pd.Index(cats).get_indexer(parent)
    depth = np.ones(len(cats), np.int64)
    cur = parent_idx
    for _ in range(len(cats)):  # bounded: a cycle cannot loop forever
        if not (cur >= 0).any():
            break
        depth += cur >= 0
        cur = np.where(cur >= 0, parent_idx[np.maximum(cur, 0)], -1)
    return {
        "events": int(n_events),
        "visitors": int(n_visitors),
        "items_in_events": int(n_items),
        "items_with_properties": items_with_props,
        "property_rows": len(props),
        "property_rows_per_item": _ratio(len(props), items_with_props),
        "categoryid_rows_per_item": _ratio((name == C.CATEGORY).sum(), items_with_props),
        "available_rows_per_item": _ratio((name == C.AVAILABLE).sum(), items_with_props),
        "categories": len(cats),
        "roots": int(is_root.sum()),
        "leaves": int((~np.isin(cats, parent[parent >= 0])).sum()),
        "max_depth": int(depth.max()) if len(cats) else None,
    }


def _item_categories(props: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Latest ``categoryid`` per item: (sorted item ids, category ids).

    Items whose latest value is not a number are left out.
    """
    latest = property_as_of(props, C.CATEGORY, np.iinfo(np.int64).max)
    value = pd.to_numeric(latest, errors="coerce").to_numpy(np.float64)
    keep = ~np.isnan(value)
    return latest.index.to_numpy(np.int64)[keep], value[keep].astype(np.int64)


def _long_tail(ds: Dataset, viewed: np.ndarray, interactions: np.ndarray) -> dict[str, Any]:
    cat_items, cat_of = _item_categories(ds.item_properties)
    pos = index_of(cat_items, viewed)
    known = pos >= 0
    _, per_cat = np.unique(cat_of[pos[known]], return_counts=True)
    top = np.sort(per_cat)[::-1][:TOP_CATEGORIES].sum()
    return {
        "single_interaction_share": _share(interactions == 1),
        "up_to_10_interactions_share": _share(interactions <= 10),
        "views_with_category_share": _share(known),
        "top100_categories_view_share": _ratio(top, known.sum()),
    }


def _time(ts: np.ndarray) -> dict[str, Any]:
    if not len(ts):
        return {"first_utc": None, "last_utc": None, "days": None, "events_per_day": None}
    first, last = int(ts.min()), int(ts.max())
    days = (last - first) / C.DAY_MS
    hour = np.bincount((ts // C.HOUR_MS) % 24, minlength=24)
    per_weekday = np.bincount(weekday(ts), minlength=7)
    return {
        "first_utc": _utc(first),
        "last_utc": _utc(last),
        "days": days,
        "events_per_day": _ratio(len(ts), days),
        "busiest_weekday": WEEKDAYS[int(per_weekday.argmax())],
        "peak_hour_utc": int(hour.argmax()),
        "quietest_hour_utc": int(hour.argmin()),
        "weekday_share": {
            d: float(n / len(ts)) for d, n in zip(WEEKDAYS, per_weekday, strict=True)
        },
        "hour_share": [float(n / len(ts)) for n in hour],
    }


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2%}" if "share" in key or key in C.EVENT_TYPES else f"{value:,.2f}"
    if isinstance(value, list):
        return " ".join(f"{v:.0%}" if "share" in key else str(v) for v in value)
    return str(value)


def render_profile(profile: dict[str, Any]) -> list[Table]:
    """One two-column table (metric, value) per section of :func:`profile_dataset`'s result.

    Shares render as percentages; nested dicts are flattened to ``section.key`` rows.
    """
    tables = []
    for section, values in profile.items():
        table = Table(title=section.replace("_", " "), title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in values.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    table.add_row(f"{key}.{sub}", _fmt(key, v))
            else:
                table.add_row(key, _fmt(key, value))
        tables.append(table)
    return tables
