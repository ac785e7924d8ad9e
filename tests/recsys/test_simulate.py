"""The simulator's behaviour model, holdout and bounds (the HTTP loop runs end to end in
``tests/fastapi_service/test_ab_end_to_end.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.columns import DAY_MS
from recsys.exceptions import ConfigurationError
from recsys.simulate import Behaviour, SimVisitor, check_loopback, decide, load_holdout

pytestmark = pytest.mark.abtest


def test_decisions_depend_on_the_seed_and_visitor_only() -> None:
    visitor = SimVisitor(7, (), frozenset({3, 4}))
    shown = [1, 3, 5, 4, 9]

    def run(seed: int) -> list:
        return [
            decide(visitor, shown, Behaviour(), 0.3, np.random.default_rng([seed, 7]))
            for _ in range(3)
        ]

    assert run(1) == run(1)
    many = [
        decide(visitor, shown, Behaviour(), 0.3, np.random.default_rng([s, 7])) for s in range(300)
    ]
    assert len({(d.recommended, d.organic, d.bought) for d in many}) > 3


def test_wanted_items_near_the_top_are_taken_most() -> None:
    behaviour = Behaviour(hit=0.5, miss=0.0, decay=0.8, organic=0.0)
    visitor = SimVisitor(1, (), frozenset({10, 14}))
    taken = {10: 0, 14: 0}
    for seed in range(4000):
        decision = decide(
            visitor, [10, 11, 12, 13, 14], behaviour, 0.0, np.random.default_rng(seed)
        )
        assert set(decision.recommended) <= {10, 14}  # miss = 0: nothing unwanted
        for item in decision.recommended:
            taken[item] += 1
    # position 0: 0.5; position 4: 0.5 * 0.8**4 = 0.2048
    assert taken[10] / 4000 == pytest.approx(0.5, abs=0.03)
    assert taken[14] / 4000 == pytest.approx(0.2048, abs=0.03)


def test_wanted_items_not_shown_are_found_organically_and_bought() -> None:
    behaviour = Behaviour(hit=0.0, miss=0.0, organic=1.0)
    decision = decide(
        SimVisitor(1, (), frozenset({5})), [1, 2], behaviour, 1.0, np.random.default_rng(0)
    )
    assert (decision.recommended, decision.organic, decision.bought) == ((), (5,), frozenset({5}))
    with pytest.raises(ConfigurationError, match="hit must be a probability"):
        Behaviour(hit=1.5)


def test_only_loopback_services_are_driven() -> None:
    assert check_loopback("http://localhost:8000") == "http://localhost:8000"
    assert check_loopback("http://[::1]:8000/") == "http://[::1]:8000"
    assert check_loopback("http://127.0.0.7:1") == "http://127.0.0.7:1"
    for url in ("http://10.0.0.1:8000", "http://192.168.1.2", "ftp://127.0.0.1", "127.0.0.1:80"):
        with pytest.raises(ConfigurationError):
            check_loopback(url)


def test_the_holdout_starts_at_the_model_cutoff_and_lasts_its_days() -> None:
    t0 = 1_700_000_000_000
    stamps = [t0, t0 + DAY_MS, t0 + 3 * DAY_MS, t0 + 400 * DAY_MS]  # the last: a later simulation
    events = pd.DataFrame({"timestamp": stamps, "visitorid": 1, "event": "view", "itemid": 2})
    part, start, stop = load_holdout(events, t0 + DAY_MS, holdout_days=7)
    assert (start, stop) == (t0 + DAY_MS, t0 + 8 * DAY_MS)
    assert part["timestamp"].tolist() == [t0 + DAY_MS, t0 + 3 * DAY_MS]
    with pytest.raises(ConfigurationError, match="saw all the data"):
        load_holdout(events.iloc[:3], t0 + 10 * DAY_MS)
