"""recsys.eda: hand-computed figures on small literal data, and the real-figures table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys import columns as C
from recsys import eda
from recsys.data.load import load_dataset
from recsys.data.profile import profile_dataset
from recsys.split import TimeSplit
from tests.helpers import DAY, T0, WEEK, make_events, make_properties

pytestmark = pytest.mark.data

MIN = 60_000


def test_business_metrics_follow_the_ab_definitions() -> None:
    # visitor 1: 2 carts, buys one; visitor 2: views only; visitor 3: cart, no purchase;
    # visitor 4: a purchase without a cart (not a cart-to-purchase conversion)
    events = make_events(
        [
            (T0, 1, C.VIEW, 10),
            (T0 + 1, 1, C.ADDTOCART, 10),
            (T0 + 2, 1, C.ADDTOCART, 11),
            (T0 + 3, 1, C.PURCHASE, 10),
            (T0, 2, C.VIEW, 10),
            (T0, 3, C.ADDTOCART, 12),
            (T0, 4, C.PURCHASE, 12),
        ]
    )
    m = eda.business_metrics(events)
    assert (m["visitors"], m["adders"], m["buyers"], m["items_added"]) == (4, 2, 1, 3)
    assert m["addtocart_conversion"] == 0.5
    assert m["items_per_adder"] == 1.5
    assert m["cart_to_purchase_conversion"] == 0.5


def test_daily_funnel_counts_each_day_on_its_own() -> None:
    events = make_events(
        [(T0, 1, C.VIEW, 10), (T0 + 1, 1, C.ADDTOCART, 10), (T0 + DAY, 1, C.VIEW, 10)]
        + [(T0 + DAY, 2, C.VIEW, 11)]
    )
    daily = eda.daily_funnel(events)
    assert daily["visitors"].tolist() == [1, 2]
    assert daily["addtocart_conversion"].tolist() == [1.0, 0.0]
    assert daily["items_per_adder"].isna().tolist() == [False, True]


def test_sample_size_grows_as_the_lift_shrinks() -> None:
    assert eda.sample_size_per_arm(0.03, 0.05) > 3 * eda.sample_size_per_arm(0.03, 0.10)
    # the textbook example: 10% vs 12% needs ~3,841 per arm at alpha 0.05, power 0.8
    assert abs(eda.sample_size_per_arm(0.10, 0.20) - 3841) <= 5


def test_view_before_cart_finds_the_latest_earlier_view_of_the_same_item() -> None:
    events = make_events(
        [
            (T0, 1, C.VIEW, 10),
            (T0 + 5 * MIN, 1, C.VIEW, 10),  # the latest view before the cart
            (T0 + 7 * MIN, 1, C.ADDTOCART, 10),  # lag 2 min, same session
            (T0 + 2 * DAY, 1, C.ADDTOCART, 10),  # lag from the same view: 2 days
            (T0, 2, C.VIEW, 11),
            (T0 + MIN, 2, C.ADDTOCART, 12),  # viewed another item only: no lag
            (T0 + MIN, 3, C.ADDTOCART, 13),  # the view comes after the cart
            (T0 + 2 * MIN, 3, C.VIEW, 13),
            (T0 + MIN, 4, C.VIEW, 14),  # view and cart at the same millisecond
            (T0 + MIN, 4, C.ADDTOCART, 14),
            (T0, 5, C.VIEW, 10),  # another visitor's view of item 10 does not count
        ]
    )
    carts = eda.view_before_cart(events).set_index([C.VISITOR, C.TIMESTAMP])
    assert carts.loc[(1, T0 + 7 * MIN), "lag_ms"] == 2 * MIN
    assert carts.loc[(1, T0 + 2 * DAY), "lag_ms"] == 2 * DAY - 5 * MIN
    assert np.isnan(carts.loc[(2, T0 + MIN), "lag_ms"])
    assert np.isnan(carts.loc[(3, T0 + MIN), "lag_ms"])
    assert carts.loc[(4, T0 + MIN), "lag_ms"] == 0
    # rows in time order: visitors 2, 3, 4 at T0 + 1 min, then visitor 1 twice
    assert carts["same_session"].tolist() == [False, False, True, True, False]
    assert len(carts) == 5


def test_split_coverage_counts_warm_cold_fold_in_and_unseen_items() -> None:
    split = TimeSplit(
        validation_start_ms=T0 + DAY, holdout_start_ms=T0 + 2 * DAY, end_ms=T0 + 3 * DAY
    )
    h = T0 + 2 * DAY
    events = make_events(
        [
            (T0, 1, C.VIEW, 10),  # visitor 1 is warm
            (T0, 9, C.VIEW, 11),
            (h + 1, 1, C.ADDTOCART, 10),
            (h + 2, 1, C.ADDTOCART, 10),  # the same pair twice counts once
            (h + 1, 2, C.VIEW, 12),  # cold, viewed before carting: fold-in has data
            (h + 2, 2, C.ADDTOCART, 12),  # item 12 unseen in training
            (h + 1, 3, C.ADDTOCART, 11),  # cold, no earlier view
            (h + 2, 3, C.VIEW, 11),
            (h + 1, 4, C.VIEW, 11),  # no add-to-cart: not a target
        ]
    )
    c = eda.split_coverage(events, split)
    assert (c["cart_visitors"], c["warm"], c["cold"], c["cold_with_prior_view"]) == (3, 1, 2, 1)
    assert (c["carts"], c["unseen_item_carts"]) == (3, 1)
    assert c["fold_in_share"] == 0.5


def test_property_changes_and_disagreement_as_of_a_time() -> None:
    props = make_properties(
        [
            (T0, 1, C.AVAILABLE, "1"),
            (T0, 2, C.AVAILABLE, "1"),
            (T0 + WEEK, 1, C.AVAILABLE, "0"),  # a change
            (T0 + WEEK, 2, C.AVAILABLE, "1"),  # a repeat, not a change
            (T0 + 2 * WEEK, 3, C.AVAILABLE, "1"),  # new item
            (T0, 1, C.CATEGORY, "7"),
        ]
    )
    changes = eda.property_changes(props, C.AVAILABLE)
    assert changes["rows"].tolist() == [2, 2, 1]
    assert changes["changes"].tolist() == [0, 1, 0]
    got = eda.as_of_disagreement(props, C.AVAILABLE, T0 + WEEK)
    assert got == {"items": 2, "differ": 1, "share": 0.5, "unknown_then": 1}


def test_concentration_and_gini() -> None:
    equal = eda.concentration(np.full(100, 5), shares=(0.1,))
    assert equal == {"top_10%": pytest.approx(0.1), "gini": pytest.approx(0.0)}
    one = eda.concentration(np.array([0, 0, 0, 10]), shares=(0.25,))
    assert one == {"top_25%": 1.0, "gini": pytest.approx(0.75)}


def test_tree_shape_depths_and_children() -> None:
    tree = pd.DataFrame(
        {C.CATEGORY: [1, 2, 3, 4, 5], C.PARENT: pd.array([None, None, 1, 3, 3], dtype="Int64")}
    )
    shape = eda.tree_shape(tree)
    assert shape["depth"].to_dict() == {1: 1, 2: 1, 3: 2, 4: 3, 5: 3}
    assert shape["children"].to_dict() == {1: 1, 2: 0, 3: 2, 4: 0, 5: 0}
    assert shape["leaf"].sum() == 3


def test_daily_counts_fill_empty_days() -> None:
    events = make_events(
        [(T0, 1, C.VIEW, 10), (T0 + 1, 2, C.VIEW, 10), (T0 + 2 * DAY, 1, C.ADDTOCART, 10)]
    )
    daily = eda.daily_counts(events)
    assert daily[C.VIEW].tolist() == [2, 0, 0]
    assert daily[C.ADDTOCART].tolist() == [0, 0, 1]
    assert daily["visitors"].tolist() == [2, 0, 1]


def test_weekly_drift_overlap_and_new_items() -> None:
    # week 0: items 1, 2; week 1: items 2, 3 (3 is new)
    events = make_events(
        [(T0, 1, C.VIEW, 1), (T0, 1, C.VIEW, 2), (T0 + WEEK, 1, C.VIEW, 2)]
        + [(T0 + WEEK + 1, 1, C.VIEW, 3)]
    )
    drift = eda.weekly_drift(events, top=2)
    assert drift["overlap"].tolist() == [0.5]
    assert drift["new_items"].tolist() == [0.5]


class _Fixed:
    """A ranker recommending the same items to everyone."""

    def __init__(self, items: list[int]) -> None:
        self.items = np.array(items)

    def recommend_batch(self, user_ids: np.ndarray, k: int) -> np.ndarray:
        return np.tile(self.items[:k], (len(user_ids), 1))


def test_score_groups_scores_each_group_of_targets() -> None:
    targets = pd.DataFrame(
        {C.VISITOR: [1, 2, 3], "relevant": [np.array([5]), np.array([6]), np.array([5])]}
    )
    before = pd.DataFrame({C.VISITOR: [1, 1, 2]})
    groups = eda.activity_groups(targets, before, heavy_events=2)
    assert groups.tolist() == ["warm, heavy", "warm, light", "cold"]
    table = eda.score_groups({"fixed": _Fixed([5, 7])}, targets, groups, k=2, n_catalogue=10)
    assert table.loc[("fixed", "warm, heavy"), "precision@2"] == 0.5
    assert table.loc[("fixed", "warm, light"), "precision@2"] == 0.0
    assert table.loc[("fixed", "cold"), "users"] == 1


def test_find_data_dir_prefers_real_files(tmp_path: Path) -> None:
    assert eda.find_data_dir(tmp_path) == (tmp_path / "var" / "demo" / "raw", True)
    real = tmp_path / "data" / "raw"
    real.mkdir(parents=True)
    (real / C.EVENTS_FILE).write_text("timestamp,visitorid,event,itemid,transactionid\n")
    assert eda.find_data_dir(tmp_path) == (real, False)


def test_every_real_figure_is_in_the_profile_and_the_generator_matches_it(tiny_raw: Path) -> None:
    profile = profile_dataset(load_dataset(tiny_raw))
    table = eda.compare_with_real(profile)
    assert table["observed"].notna().all(), table[table["observed"].isna()]
    assert len(table) == len(eda.REAL_FIGURES)
    # the funnel and the event mix are the generator's calibrated targets
    for key in ("funnel.addtocart_share", "event_mix.view", "activity.single_session_share"):
        assert table.loc[key, "ratio"] == pytest.approx(1, abs=0.1), key
