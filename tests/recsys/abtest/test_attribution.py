"""Attribution both ways (request id, window), per-variant metrics and the report, on real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recsys import columns as C
from recsys.abtest import parse_experiments
from recsys.abtest.attribution import (
    ADDED,
    BOUGHT,
    ITEMS_ADDED,
    PRE_ACTIVITY,
    RECOMMENDED_ADDED,
    RECOMMENDED_PAIRS,
    RECOMMENDED_PAIRS_BOUGHT,
    experiment_counts,
    load_experiment,
    visitor_outcomes,
    with_pre_activity,
)
from recsys.abtest.report import Report, build_report, format_table, plot_report
from recsys.data.store import EventStore

pytestmark = [pytest.mark.abtest, pytest.mark.data]

T0 = 1_700_000_000_000  # a timestamp in the events contract's range
WINDOW_S = 10.0  # 10,000 ms

EXPOSURES = [
    # request_id, timestamp, visitor, experiment, variant, model_version, items
    ("r1", T0 + 1000, 1, "e", "a", "v1", [10, 11, 12]),
    ("r2", T0 + 5000, 1, "e", "a", "v1", [13]),
    ("r3", T0 + 2000, 2, "e", "b", "v1", [20, 21]),
    ("r4", T0 + 3000, 3, "e", "b", "v1", [30]),
    ("o1", T0 + 2500, 2, "other", "x", "v1", [22]),
]
EVENTS = [
    # timestamp, visitor, event, item, request id: what happens to it
    (T0 + 100, 1, "view", 10, None),  # before the first exposure: CUPED covariate
    (T0 + 200, 1, "view", 11, None),  # idem
    (T0 + 1500, 1, "addtocart", 11, "r1"),  # by request id, recommended
    (T0 + 1600, 1, "transaction", 11, "r1"),  # purchase of a recommended item
    (T0 + 1700, 1, "addtocart", 12, "r1"),  # by request id, recommended, not bought
    (T0 + 6000, 1, "addtocart", 13, None),  # by window, shown at +5000: recommended
    (T0 + 500, 2, "addtocart", 21, None),  # before visitor 2's first exposure: not counted
    (T0 + 2600, 2, "addtocart", 22, "o1"),  # another experiment's exposure: not counted
    (T0 + 12_001, 2, "addtocart", 40, None),  # after the window: not counted
    (T0 + 3500, 3, "addtocart", 99, "unknown"),  # an id no exposure has: by window
    (T0 + 3600, 3, "view", 30, None),  # views are no outcome
    (T0 + 1500, 4, "addtocart", 10, None),  # never exposed
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> EventStore:
    url = request.getfixturevalue("tmp_sqlite_url" if request.param == "sqlite" else "pg_url")
    store = EventStore(url)
    exposures = pd.DataFrame(EXPOSURES, columns=list(C.EXPOSURES_COLUMNS))
    assert store.log_exposures(exposures) == len(EXPOSURES)
    events = pd.DataFrame(EVENTS, columns=[C.TIMESTAMP, C.VISITOR, C.EVENT, C.ITEM, C.REQUEST_ID])
    events[C.TRANSACTION] = [7 if e == "transaction" else None for e in events[C.EVENT]]
    assert store.append_events(events) == len(EVENTS)
    return store


def test_events_are_attributed_by_request_id_and_by_window(store: EventStore) -> None:
    visitors = visitor_outcomes(load_experiment(store, "e", window_s=WINDOW_S)).set_index(C.VISITOR)
    assert visitors[C.VARIANT].to_dict() == {1: "a", 2: "b", 3: "b"}
    columns = [
        ITEMS_ADDED,
        ADDED,
        BOUGHT,
        RECOMMENDED_ADDED,
        RECOMMENDED_PAIRS,
        RECOMMENDED_PAIRS_BOUGHT,
    ]
    assert visitors.loc[1, columns].tolist() == [3, 1, 1, 3, 3, 1]
    assert visitors.loc[2, columns].tolist() == [0, 0, 0, 0, 0, 0]
    assert visitors.loc[3, columns].tolist() == [1, 1, 0, 0, 0, 0]
    assert visitors.loc[1, "exposures"] == 2


def test_per_variant_metrics_as_the_product_defines_them(store: EventStore) -> None:
    counts = experiment_counts(store, "e", ["a", "b"], window_s=WINDOW_S)
    assert counts.loc["a"].to_dict() == {
        "exposures": 2,
        "exposed_visitors": 1,
        "addtocart_visitors": 1,
        "items_added": 3,
        "buyer_visitors": 1,
        "addtocart_conversion": 1.0,
        "items_added_per_user": 3.0,
        "cart_to_purchase_conversion": 1.0,
        "recommended_item_share": 1.0,
        "recommended_items_added": 3,
    }
    b = counts.loc["b"]
    assert (b["exposures"], b["exposed_visitors"], b["addtocart_visitors"], b["items_added"]) == (
        2,
        2,
        1,
        1,
    )
    assert (b["addtocart_conversion"], b["items_added_per_user"]) == (0.5, 1.0)
    assert (b["cart_to_purchase_conversion"], b["recommended_item_share"]) == (0.0, 0.0)
    # a configured variant without traffic is reported with zeros
    assert experiment_counts(store, "e", ["a", "b", "c"], WINDOW_S).loc["c", "exposures"] == 0


def test_the_window_and_the_period_bound_attribution(store: EventStore) -> None:
    # a one-second window loses the add-to-cart 5 s after visitor 1's first exposure and the
    # one of visitor 3 (0.5 s after theirs is kept)
    short = visitor_outcomes(load_experiment(store, "e", window_s=1.0)).set_index(C.VISITOR)
    assert short.loc[1, ITEMS_ADDED] == 2 and short.loc[3, ITEMS_ADDED] == 1
    # up to +1650: only r1 is exposed, and only the events before then count
    early = visitor_outcomes(load_experiment(store, "e", until_ms=T0 + 1650, window_s=WINDOW_S))
    assert early[C.VISITOR].tolist() == [1]
    assert early[[ITEMS_ADDED, BOUGHT]].values.tolist() == [[1, 1]]


def test_pre_exposure_activity_is_the_cuped_covariate(store: EventStore) -> None:
    visitors = visitor_outcomes(load_experiment(store, "e", window_s=WINDOW_S))
    pre = with_pre_activity(store, "e", visitors).set_index(C.VISITOR)[PRE_ACTIVITY]
    assert pre.to_dict() == {1: 2, 2: 1, 3: 0}
    recent = with_pre_activity(store, "e", visitors, pre_days=1e-6).set_index(C.VISITOR)
    assert recent[PRE_ACTIVITY].to_dict() == {1: 0, 2: 0, 3: 0}


def test_report_table_json_and_png(store: EventStore, tmp_path: Path) -> None:
    config = parse_experiments(
        {"experiments": [{"name": "e", "variants": [{"name": "b"}, {"name": "a"}]}]}
    )[0]
    report = build_report(store, "e", config, window_s=WINDOW_S)
    assert report.control == "b" and report.variants == ["b", "a"]
    assert report.metric("addtocart_conversion", "a").value == 1.0
    assert report.metric("addtocart_conversion", "b").comparison is None
    assert report.metric("addtocart_conversion", "a").comparison.control == 0.5
    assert report.srm.observed == (2, 1)
    text = format_table(report)
    assert "Add-to-cart conversion" in text and "sample ratio check" in text and "CUPED" in text
    document = json.loads(json.dumps(report.to_dict()))
    assert document["counts"]["a"]["items_added"] == 3
    assert {m["metric"] for m in document["metrics"]} >= {
        "addtocart_conversion",
        "items_added_per_user",
        "cart_to_purchase_conversion",
        "recommended_item_share",
    }
    png = plot_report(report, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LookupError, match="no exposures"):
        build_report(store, "nothing-here")


def test_a_sample_ratio_mismatch_is_loud() -> None:
    from recsys.abtest.report import analyse

    visitors = pd.DataFrame(
        {
            C.VARIANT: ["a"] * 700 + ["b"] * 300,
            ITEMS_ADDED: 0,
            ADDED: 0,
            BOUGHT: 0,
            RECOMMENDED_ADDED: 0,
            RECOMMENDED_PAIRS: 0,
            RECOMMENDED_PAIRS_BOUGHT: 0,
        }
    )
    exposures = visitors[[C.VARIANT]]
    weights = {"a": 0.5, "b": 0.5}
    counts, metrics, srm, cuped = analyse(visitors, exposures, ["a", "b"], weights)
    assert srm.mismatch and srm.p_value < 1e-30
    report = Report("e", "a", ["a", "b"], weights, None, None, 60.0, counts, metrics, srm, cuped)
    assert "!!! SAMPLE RATIO MISMATCH (p = <0.0001 < 0.001)" in format_table(report)
