import pandas as pd
import pytest

from recsys.columns import TIMESTAMP, VISITOR
from recsys.exceptions import ConfigurationError
from recsys.split import DAY_MS, TimeSplit, make_split, window
from tests.helpers import T0, make_events

pytestmark = pytest.mark.model


@pytest.fixture
def events() -> pd.DataFrame:
    # one event a day for 20 days, visitor 100 + day
    return make_events([(T0 + d * DAY_MS, 100 + d, "view", 7) for d in range(20)])


def test_make_split_puts_holdout_on_the_last_days(events: pd.DataFrame) -> None:
    split = make_split(events, holdout_days=7, validation_days=5)
    last = T0 + 19 * DAY_MS
    assert split == TimeSplit(
        validation_start_ms=last + 1 - 12 * DAY_MS,
        holdout_start_ms=last + 1 - 7 * DAY_MS,
        end_ms=last + 1,
    )
    holdout = window(events, split.holdout_start_ms, split.end_ms)
    validation = window(events, split.validation_start_ms, split.holdout_start_ms)
    train = window(events, None, split.validation_start_ms)
    # days 13..19 in holdout (day 12 is 1 ms too early), 8..12 validation, 0..7 train
    assert holdout[VISITOR].tolist() == list(range(113, 120))
    assert validation[VISITOR].tolist() == list(range(108, 113))
    assert train[VISITOR].tolist() == list(range(100, 108))


def test_make_split_counts_back_from_a_given_interval_end(events: pd.DataFrame) -> None:
    """A run's interval end (e.g. midnight) places the windows, not the last event."""
    end = T0 + 21 * DAY_MS
    split = make_split(events, holdout_days=7, validation_days=5, end_ms=end)
    assert split == TimeSplit(end - 12 * DAY_MS, end - 7 * DAY_MS, end)


def test_make_split_is_order_independent(events: pd.DataFrame) -> None:
    shuffled = events.sample(frac=1.0, random_state=0)
    assert make_split(shuffled) == make_split(events)


def test_make_split_with_zero_validation_days(events: pd.DataFrame) -> None:
    split = make_split(events, holdout_days=3, validation_days=0)
    assert split.validation_start_ms == split.holdout_start_ms
    assert window(events, split.validation_start_ms, split.holdout_start_ms).empty


@pytest.mark.parametrize(("holdout_days", "validation_days"), [(0, 7), (7, -1), (15, 5), (20, 0)])
def test_make_split_rejects_bad_windows(
    events: pd.DataFrame, holdout_days: int, validation_days: int
) -> None:
    with pytest.raises(ConfigurationError):
        make_split(events, holdout_days=holdout_days, validation_days=validation_days)


def test_make_split_rejects_empty_events(events: pd.DataFrame) -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        make_split(events.iloc[:0])


def test_window_is_half_open_and_keeps_dtypes(events: pd.DataFrame) -> None:
    start, end = T0 + 2 * DAY_MS, T0 + 5 * DAY_MS
    part = window(events, start, end)
    assert part[TIMESTAMP].tolist() == [start, start + DAY_MS, start + 2 * DAY_MS]
    assert part.dtypes.equals(events.dtypes)
    assert part.index.tolist() == [0, 1, 2]
    assert len(window(events, None, None)) == len(events)
    assert window(events, end, None)[TIMESTAMP].min() == end
    assert window(events, None, start)[TIMESTAMP].max() == start - DAY_MS
    assert window(events, end, start).empty


def test_window_does_not_modify_its_input(events: pd.DataFrame) -> None:
    # an index other than 0..n-1, so that resetting it in place would show
    events = events.set_axis(range(100, 100 + len(events)))
    before = events.copy()
    part = window(events, T0 + DAY_MS, T0 + 3 * DAY_MS)
    assert part.index.tolist() == [0, 1]
    pd.testing.assert_frame_equal(events, before)  # values, dtypes, columns and index
