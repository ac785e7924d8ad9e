"""Dataset profile: hand-computed figures on a tiny literal dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from recsys import columns as C
from recsys.data import profile as profile_module
from recsys.data.load import Dataset
from recsys.data.profile import profile_dataset, render_profile

pytestmark = pytest.mark.data

T0 = 1_430_622_000_000  # Sunday 2015-05-03 03:00 UTC
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000

# visitor 1: two views of item 10, cart, purchase, then a view of item 20 two hours later
#            (5 events, 2 sessions, buyer)
# visitor 2: one view of item 40 on Monday                     (1 event)
# visitor 3: views of items 30 and 20 on Tuesday, 5 min apart  (2 events, 1 session)
# visitor 4: an add-to-cart of item 30 without any view        (1 event)
EVENTS = [
    (T0, 1, C.VIEW, 10, None),
    (T0 + 10 * MIN, 1, C.VIEW, 10, None),
    (T0 + 11 * MIN, 1, C.ADDTOCART, 10, None),
    (T0 + 12 * MIN, 1, C.PURCHASE, 10, 77),
    (T0 + 2 * HOUR, 1, C.VIEW, 20, None),
    (T0 + DAY, 2, C.VIEW, 40, None),
    (T0 + 2 * DAY, 3, C.VIEW, 30, None),
    (T0 + 2 * DAY + 5 * MIN, 3, C.VIEW, 20, None),
    (T0 + 2 * DAY + HOUR, 4, C.ADDTOCART, 30, None),
]
# item 10 moves from category 100 to 101; item 40 has no category; item 50 has no events
PROPERTIES = [
    (T0, 10, C.CATEGORY, "100"),
    (T0 + DAY, 10, C.CATEGORY, "101"),
    (T0, 10, C.AVAILABLE, "1"),
    (T0, 10, "888", "n1.000"),
    (T0, 20, C.CATEGORY, "101"),
    (T0, 20, C.AVAILABLE, "0"),
    (T0 + DAY, 20, C.AVAILABLE, "1"),
    (T0, 30, C.CATEGORY, "102"),
    (T0, 50, "790", "123 456"),
]
# roots 1 and 2; 1 -> 3 -> {4, 5}
TREE = [(1, None), (2, None), (3, 1), (4, 3), (5, 3)]


def _dataset() -> Dataset:
    ts, vis, ev, item, tx = (list(col) for col in zip(*EVENTS, strict=True))
    events = pd.DataFrame(
        {
            C.TIMESTAMP: np.array(ts, np.int64),
            C.VISITOR: np.array(vis, np.int64),
            C.EVENT: pd.Categorical(ev, categories=list(C.EVENT_TYPES)),
            C.ITEM: np.array(item, np.int64),
            C.TRANSACTION: pd.array(tx, dtype="Int64"),
        }
    )
    events[C.DATETIME] = pd.to_datetime(events[C.TIMESTAMP], unit="ms", utc=True)
    props = pd.DataFrame(PROPERTIES, columns=list(C.PROPERTIES_COLUMNS))
    props[C.PROPERTY] = props[C.PROPERTY].astype("category")
    tree = pd.DataFrame(
        {
            C.CATEGORY: np.array([c for c, _ in TREE], np.int64),
            C.PARENT: pd.array([p for _, p in TREE], dtype="Int64"),
        }
    )
    return Dataset(events, props, tree, {C.EVENTS_FILE: 2, C.CATEGORY_TREE_FILE: 0})


def test_profile_of_a_literal_dataset_matches_hand_computed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(profile_module, "TOP_CATEGORIES", 1)
    p = profile_dataset(_dataset())
    assert p["counts"] == {
        "events": 9,
        "visitors": 4,
        "items_in_events": 4,
        "items_with_properties": 4,  # 10, 20, 30, 50
        "property_rows": 9,
        "property_rows_per_item": 9 / 4,
        "categoryid_rows_per_item": 4 / 4,
        "available_rows_per_item": 3 / 4,
        "categories": 5,
        "roots": 2,
        "leaves": 3,  # 2, 4, 5
        "max_depth": 3,  # 1 -> 3 -> 4
    }
    assert p["event_mix"] == {C.VIEW: 6 / 9, C.ADDTOCART: 2 / 9, C.PURCHASE: 1 / 9}
    assert p["funnel"] == {
        "viewed_share": 3 / 4,
        "addtocart_share": 2 / 4,
        "purchase_share": 1 / 4,
        "cart_to_purchase_share": 1 / 2,
        "purchased_items_per_buyer": 1.0,
    }
    assert p["activity"] == {
        "single_event_share": 2 / 4,
        "up_to_3_events_share": 3 / 4,
        "mean_events": 9 / 4,
        "mean_sessions": 5 / 4,
        "single_session_share": 3 / 4,
        "single_session_purchase_share": 0.0,
        "multi_session_purchase_share": 1.0,
        "multi_vs_single_purchase_ratio": None,  # no single-session buyer: no ratio
    }
    # interactions: item 10 -> 4, 20 -> 2, 30 -> 2, 40 -> 1; views by latest category:
    # 101 (items 10, 10, 20, 20) 4, 102 (item 30) 1, unknown (item 40) 1
    assert p["items"] == {
        "single_interaction_share": 1 / 4,
        "up_to_10_interactions_share": 1.0,
        "views_with_category_share": 5 / 6,
        "top100_categories_view_share": 4 / 5,  # the top *1* category here
    }
    t = p["time"]
    assert t["first_utc"] == "2015-05-03T03:00:00+00:00"
    assert t["last_utc"] == "2015-05-05T04:00:00+00:00"
    assert t["days"] == pytest.approx(2 + 1 / 24)
    assert t["events_per_day"] == pytest.approx(9 / (2 + 1 / 24))
    assert t["busiest_weekday"] == "Sunday"  # 5 events, Tuesday 3, Monday 1
    assert t["weekday_share"]["Tuesday"] == pytest.approx(3 / 9)
    assert (t["peak_hour_utc"], t["hour_share"][3], t["hour_share"][5]) == (3, 7 / 9, 1 / 9)
    assert p["duplicates_dropped"] == {C.EVENTS_FILE: 2, C.CATEGORY_TREE_FILE: 0, "total": 2}


def test_profile_is_json_serialisable_and_renders_one_table_per_section() -> None:
    p = profile_dataset(_dataset())
    assert json.loads(json.dumps(p)) == p
    tables = render_profile(p)
    assert [t.title for t in tables] == [s.replace("_", " ") for s in p]
    assert [t.row_count for t in tables[:2]] == [len(p["counts"]), 3]
    console = Console(record=True, width=120)
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert "66.67%" in text  # view share
    assert "2.25" in text  # mean events
    assert "Sunday" in text


def test_profile_of_an_empty_dataset_has_no_ratios() -> None:
    ds = _dataset()
    empty = Dataset(ds.events.iloc[:0], ds.item_properties.iloc[:0], ds.category_tree.iloc[:0], {})
    p = profile_dataset(empty)
    assert p["counts"]["events"] == 0 and p["counts"]["max_depth"] is None
    assert p["funnel"]["addtocart_share"] is None and p["time"]["days"] is None
    assert json.dumps(p) and render_profile(p)
