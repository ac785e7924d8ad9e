"""Attribution of events to an experiment's variants, and the per-variant business metrics.

Rules (one experiment ``E``, the exposures it logged in the analysed period):

* a visitor belongs to the variant of their **first** exposure in ``E`` (assignment is a hash
  of the visitor id, so all their exposures carry that variant unless the file changed);
* an add-to-cart or purchase posted **with a request id** belongs to the exposure of that id:
  counted for ``E`` when that exposure is one of ``E``'s (whatever its time), never when it is
  another experiment's;
* an event **without** one (or with an id no exposure has) belongs to its visitor's variant when
  it happens in ``[first exposure, first exposure + window)``;
* an attributed add-to-cart is **recommended** when its item was in a list shown to that visitor
  in ``E`` at or before the event (or in the list of the exposure it names).

Per visitor this gives: items added (add-to-cart events), whether they added, whether they
bought, recommended items added, and, item by item, which recommended items they carted and
bought (the item-level cart-to-purchase). :func:`variant_counts` sums visitors per variant into
the metrics as the product defines them; the same numbers feed the report's statistics and the
service's Prometheus gauges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.abtest.config import DEFAULT_WINDOW_S
from recsys.data.store import ACTIVITY, LINKED_EXPERIMENT, EventStore, parse_item_ids

# per-visitor columns
FIRST_EXPOSURE: Final = "first_exposure_ms"
EXPOSURES: Final = "exposures"
VARIANTS_SEEN: Final = "variants_seen"
ITEMS_ADDED: Final = "items_added"
ADDED: Final = "added"
BOUGHT: Final = "bought"
RECOMMENDED_ADDED: Final = "recommended_items_added"
RECOMMENDED_PAIRS: Final = "recommended_pairs"
RECOMMENDED_PAIRS_BOUGHT: Final = "recommended_pairs_bought"
PRE_ACTIVITY: Final = "pre_events"

# per-variant columns: the names of the exported gauges without their prefix
EXPOSED_VISITORS: Final = "exposed_visitors"
ADDTOCART_VISITORS: Final = "addtocart_visitors"
BUYER_VISITORS: Final = "buyer_visitors"
ADDTOCART_CONVERSION: Final = "addtocart_conversion"
ITEMS_PER_USER: Final = "items_added_per_user"
CART_TO_PURCHASE: Final = "cart_to_purchase_conversion"
RECOMMENDED_SHARE: Final = "recommended_item_share"
#: the per-variant numbers, in the order of the gauges
VARIANT_COLUMNS: Final = (
    EXPOSURES,
    EXPOSED_VISITORS,
    ADDTOCART_VISITORS,
    ITEMS_ADDED,
    BUYER_VISITORS,
    ADDTOCART_CONVERSION,
    ITEMS_PER_USER,
    CART_TO_PURCHASE,
    RECOMMENDED_SHARE,
)

_ITEM = "item"


@dataclass(frozen=True)
class ExperimentData:
    """What the event store holds about one experiment in an analysed period.

    ``exposures.item_ids`` holds lists of item ids or their stored text (``"3,1,2"``): only the
    lists of visitors who added to cart are ever needed, and parsing every list would cost
    more than the rest of the attribution.
    """

    experiment: str
    exposures: pd.DataFrame
    outcomes: pd.DataFrame
    window_ms: int
    until_ms: int | None


def load_experiment(
    store: EventStore,
    experiment: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    window_s: float = DEFAULT_WINDOW_S,
) -> ExperimentData:
    """Exposures of ``experiment`` in ``[since_ms, until_ms)`` and the events that may be
    attributed to them (up to ``until_ms``)."""
    exposures = store.read_exposures(since_ms, until_ms, experiment=experiment, parse_items=False)
    outcomes = store.read_outcomes(experiment, since_ms, until_ms)
    return ExperimentData(experiment, exposures, outcomes, int(window_s * 1000), until_ms)


def attribute(data: ExperimentData) -> pd.DataFrame:
    """The attributed add-to-cart and purchase events of an experiment.

    Returns
    -------
    pandas.DataFrame
        Columns timestamp, visitorid (the exposed visitor), event, itemid, ``variant`` and
        ``recommended`` (add-to-carts of a shown item), one row per attributed event.
    """
    exposures, outcomes = data.exposures, data.outcomes
    columns = [C.TIMESTAMP, C.VISITOR, C.EVENT, C.ITEM, C.VARIANT, "recommended"]
    if exposures.empty or outcomes.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    first = _first_exposures(exposures)
    linked_here = (outcomes[LINKED_EXPERIMENT] == data.experiment).to_numpy(dtype=bool)
    linked_elsewhere = outcomes[LINKED_EXPERIMENT].notna().to_numpy(dtype=bool) & ~linked_here
    # by request id: the exposure's visitor, when that exposure is in the analysed period
    by_request = outcomes.loc[linked_here, [C.TIMESTAMP, C.EVENT, C.ITEM, C.REQUEST_ID]].merge(
        exposures[[C.REQUEST_ID, C.VISITOR]], on=C.REQUEST_ID, how="inner"
    )
    # by window: events of exposed visitors, not linked to any exposure
    free = outcomes.loc[~linked_here & ~linked_elsewhere, [C.TIMESTAMP, C.VISITOR, C.EVENT, C.ITEM]]
    free = free.merge(first[[C.VISITOR, FIRST_EXPOSURE]], on=C.VISITOR, how="inner")
    stamp = free[C.TIMESTAMP].to_numpy()
    start = free[FIRST_EXPOSURE].to_numpy()
    free = free.loc[(stamp >= start) & (stamp < start + data.window_ms)].assign(
        **{C.REQUEST_ID: None}
    )
    events = pd.concat(
        [by_request[[*columns[:4], C.REQUEST_ID]], free[[*columns[:4], C.REQUEST_ID]]],
        ignore_index=True,
    )
    if data.until_ms is not None:
        events = events.loc[events[C.TIMESTAMP].to_numpy() < data.until_ms]
    events = events.merge(first[[C.VISITOR, C.VARIANT]], on=C.VISITOR, how="left")
    events["recommended"] = _recommended(events, exposures)
    return (
        events[columns].sort_values([C.TIMESTAMP, C.VISITOR], kind="stable").reset_index(drop=True)
    )


def _first_exposures(exposures: pd.DataFrame) -> pd.DataFrame:
    """Per exposed visitor: first exposure time, its variant, exposure count, variants seen."""
    ordered = exposures.sort_values(C.TIMESTAMP, kind="stable")
    grouped = ordered.groupby(C.VISITOR, sort=True)
    return pd.DataFrame(
        {
            FIRST_EXPOSURE: grouped[C.TIMESTAMP].first(),
            C.VARIANT: grouped[C.VARIANT].first(),
            EXPOSURES: grouped.size(),
            VARIANTS_SEEN: grouped[C.VARIANT].nunique(),
        }
    ).reset_index()


def _recommended(events: pd.DataFrame, exposures: pd.DataFrame) -> np.ndarray:
    """Whether each add-to-cart's item was shown to its visitor before it (or in the list of
    the exposure it names)."""
    carts = (events[C.EVENT] == C.ADDTOCART).to_numpy(dtype=bool)
    # only the lists of visitors who added to cart matter: a small share of the exposures
    mine = exposures[C.VISITOR].isin(events.loc[carts, C.VISITOR]).to_numpy(dtype=bool)
    shown = exposures.loc[mine, [C.REQUEST_ID, C.VISITOR, C.TIMESTAMP, C.ITEM_IDS]]
    if len(shown) and isinstance(shown[C.ITEM_IDS].iloc[0], str):
        shown = shown.assign(**{C.ITEM_IDS: parse_item_ids(shown[C.ITEM_IDS]).to_numpy()})
    shown = shown.explode(C.ITEM_IDS).dropna(subset=[C.ITEM_IDS])
    shown = shown.astype({C.ITEM_IDS: np.int64}).rename(columns={C.ITEM_IDS: C.ITEM})
    first_shown = (
        shown.groupby([C.VISITOR, C.ITEM], sort=False)[C.TIMESTAMP]
        .min()
        .rename("shown_ms")
        .reset_index()
    )
    keyed = events[[C.VISITOR, C.ITEM, C.TIMESTAMP, C.REQUEST_ID]].reset_index(drop=True)
    before = keyed.merge(first_shown, on=[C.VISITOR, C.ITEM], how="left")
    shown_ms = before["shown_ms"].to_numpy(dtype=np.float64)
    seen_before = ~np.isnan(shown_ms) & (shown_ms <= before[C.TIMESTAMP].to_numpy())
    listed = shown[[C.REQUEST_ID, C.ITEM]].drop_duplicates().assign(listed=True)
    in_list = (
        keyed.merge(listed, on=[C.REQUEST_ID, C.ITEM], how="left")["listed"]
        .notna()
        .to_numpy(dtype=bool)
    )
    return carts & (seen_before | in_list)


def visitor_outcomes(data: ExperimentData) -> pd.DataFrame:
    """One row per exposed visitor: variant, exposures and attributed outcomes.

    Returns
    -------
    pandas.DataFrame
        Columns visitorid, variant, first_exposure_ms, exposures, variants_seen, items_added,
        added (0/1), bought (0/1), recommended_items_added, recommended_pairs (distinct items
        added from a recommendation), recommended_pairs_bought (of those, bought at or after
        the add-to-cart); sorted by visitor.

    Examples
    --------
    Visitor 1 saw items 7 and 8 in variant ``a`` and carted 7 through the request (and bought
    it); visitor 2 (``b``) carted item 9, never shown, an hour later without a request id:

    >>> exposures = pd.DataFrame({"request_id": ["r1", "r2"], "timestamp": [0, 0],
    ...     "visitorid": [1, 2], "variant": ["a", "b"], "item_ids": [[7, 8], [5, 6]]})
    >>> outcomes = pd.DataFrame({"timestamp": [10, 20, 3_600_000],
    ...     "visitorid": [1, 1, 2], "event": ["addtocart", "transaction", "addtocart"],
    ...     "itemid": [7, 7, 9], "request_id": ["r1", "r1", None],
    ...     "linked_experiment": ["e", "e", None]})
    >>> table = visitor_outcomes(ExperimentData("e", exposures, outcomes, 86_400_000, None))
    >>> table[["visitorid", "variant", "items_added", "added", "bought",
    ...        "recommended_items_added", "recommended_pairs_bought"]].values.tolist()
    [[1, 'a', 1, 1, 1, 1, 1], [2, 'b', 1, 1, 0, 0, 0]]
    """
    visitors = _first_exposures(data.exposures) if not data.exposures.empty else None
    counts = [ITEMS_ADDED, ADDED, BOUGHT, RECOMMENDED_ADDED, RECOMMENDED_PAIRS]
    if visitors is None:
        empty = {c: pd.Series(dtype=np.int64) for c in (C.VISITOR, FIRST_EXPOSURE, EXPOSURES)}
        frame = pd.DataFrame(empty).assign(**{C.VARIANT: pd.Series(dtype=object)})
        return frame.assign(
            **{VARIANTS_SEEN: 0}, **dict.fromkeys([*counts, RECOMMENDED_PAIRS_BOUGHT], 0)
        )
    events = attribute(data)
    carts = events.loc[(events[C.EVENT] == C.ADDTOCART).to_numpy(dtype=bool)]
    buys = events.loc[(events[C.EVENT] == C.PURCHASE).to_numpy(dtype=bool)]
    per = pd.DataFrame(index=pd.Index(visitors[C.VISITOR], name=C.VISITOR))
    per[ITEMS_ADDED] = carts.groupby(C.VISITOR).size()
    per[BOUGHT] = buys.groupby(C.VISITOR).size()
    per[RECOMMENDED_ADDED] = (
        carts.loc[carts["recommended"].to_numpy(dtype=bool)].groupby(C.VISITOR).size()
    )
    # item level: recommended (visitor, item) carts, and whether a purchase of it followed
    rec = (
        carts.loc[carts["recommended"].to_numpy(dtype=bool)]
        .groupby([C.VISITOR, C.ITEM], sort=False)[C.TIMESTAMP]
        .min()
        .rename("carted_ms")
        .reset_index()
    )
    last_buy = (
        buys.groupby([C.VISITOR, C.ITEM], sort=False)[C.TIMESTAMP]
        .max()
        .rename("bought_ms")
        .reset_index()
    )
    rec = rec.merge(last_buy, on=[C.VISITOR, C.ITEM], how="left")
    rec["converted"] = rec["bought_ms"].to_numpy() >= rec["carted_ms"].to_numpy()
    per[RECOMMENDED_PAIRS] = rec.groupby(C.VISITOR).size()
    per[RECOMMENDED_PAIRS_BOUGHT] = rec.groupby(C.VISITOR)["converted"].sum()
    per = per.fillna(0).astype(np.int64)
    per[ADDED] = (per[ITEMS_ADDED] > 0).astype(np.int64)
    per[BOUGHT] = (per[BOUGHT] > 0).astype(np.int64)
    out = visitors.merge(per.reset_index(), on=C.VISITOR, how="left")
    return out[
        [
            C.VISITOR,
            C.VARIANT,
            FIRST_EXPOSURE,
            EXPOSURES,
            VARIANTS_SEEN,
            ITEMS_ADDED,
            ADDED,
            BOUGHT,
            RECOMMENDED_ADDED,
            RECOMMENDED_PAIRS,
            RECOMMENDED_PAIRS_BOUGHT,
        ]
    ]


def with_pre_activity(
    store: EventStore, experiment: str, visitors: pd.DataFrame, pre_days: float | None = None
) -> pd.DataFrame:
    """``visitors`` with ``pre_events``: each visitor's events before their first exposure in
    the experiment (the last ``pre_days`` days of them; None = all history), the covariate of
    CUPED. Activity before a visitor's first exposure cannot depend on their variant."""
    activity = store.visitor_activity(experiment, pre_days)
    out = visitors.merge(activity, on=C.VISITOR, how="left")
    return (
        out.rename(columns={ACTIVITY: PRE_ACTIVITY})
        .fillna({PRE_ACTIVITY: 0})
        .astype({PRE_ACTIVITY: np.int64})
    )


def variant_counts(
    visitors: pd.DataFrame, exposures: pd.DataFrame, variants: Sequence[str] = ()
) -> pd.DataFrame:
    """The per-variant metrics as the product defines them.

    ``addtocart_conversion`` = adding visitors / exposed visitors; ``items_added_per_user`` =
    items added / adding visitors; ``cart_to_purchase_conversion`` = buying visitors / adding
    visitors; ``recommended_item_share`` = recommended items added / items added (NaN when a
    denominator is 0).

    Parameters
    ----------
    visitors
        :func:`visitor_outcomes`.
    exposures
        The exposure rows (their count per variant is ``exposures``).
    variants
        Variants to report even without exposures (the configured ones), first.

    Returns
    -------
    pandas.DataFrame
        Index ``variant``; columns :data:`VARIANT_COLUMNS` and ``recommended_items_added``.

    Examples
    --------
    >>> visitors = pd.DataFrame({"variant": ["a", "a", "a", "b"], "items_added": [0, 2, 1, 0],
    ...     "added": [0, 1, 1, 0], "bought": [0, 1, 0, 0], "recommended_items_added": [0, 1, 1, 0]})
    >>> exposures = pd.DataFrame({"variant": ["a", "a", "a", "a", "b"]})
    >>> counts = variant_counts(visitors, exposures, ["a", "b"])
    >>> counts.loc["a", ["exposures", "addtocart_conversion", "items_added_per_user",
    ...     "cart_to_purchase_conversion", "recommended_item_share"]].round(4).tolist()
    [4.0, 0.6667, 1.5, 0.5, 0.6667]
    """
    order = list(dict.fromkeys([*variants, *sorted(set(visitors[C.VARIANT]))]))
    grouped = visitors.groupby(C.VARIANT)
    frame = pd.DataFrame(
        {
            EXPOSURES: exposures.groupby(C.VARIANT).size(),
            EXPOSED_VISITORS: grouped.size(),
            ADDTOCART_VISITORS: grouped[ADDED].sum(),
            ITEMS_ADDED: grouped[ITEMS_ADDED].sum(),
            BUYER_VISITORS: grouped[BOUGHT].sum(),
            RECOMMENDED_ADDED: grouped[RECOMMENDED_ADDED].sum(),
        }
    )
    frame = frame.reindex(order).fillna(0).astype(np.int64)
    frame.index.name = C.VARIANT
    ratio = _ratio
    frame[ADDTOCART_CONVERSION] = ratio(frame[ADDTOCART_VISITORS], frame[EXPOSED_VISITORS])
    frame[ITEMS_PER_USER] = ratio(frame[ITEMS_ADDED], frame[ADDTOCART_VISITORS])
    frame[CART_TO_PURCHASE] = ratio(frame[BUYER_VISITORS], frame[ADDTOCART_VISITORS])
    frame[RECOMMENDED_SHARE] = ratio(frame[RECOMMENDED_ADDED], frame[ITEMS_ADDED])
    return frame[[*VARIANT_COLUMNS, RECOMMENDED_ADDED]]


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    den = denominator.to_numpy(dtype=np.float64)
    num = numerator.to_numpy(dtype=np.float64)
    values = np.divide(num, den, out=np.full(len(den), np.nan), where=den > 0)
    return pd.Series(values, index=numerator.index)


def experiment_counts(
    store: EventStore,
    experiment: str,
    variants: Sequence[str] = (),
    window_s: float = DEFAULT_WINDOW_S,
) -> pd.DataFrame:
    """:func:`variant_counts` of an experiment, read from the store now (the live gauges)."""
    data = load_experiment(store, experiment, window_s=window_s)
    return variant_counts(visitor_outcomes(data), data.exposures, variants)
