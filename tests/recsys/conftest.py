"""Shared fixtures of the library tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: seconds to make, and enough returning visitors in the holdout for a stable headline metric
TINY_SCALE = 0.05


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic RetailRocket files at 5% scale (~140k events, ~40 warm add-to-cart visitors in the holdout), generated once per test session."""
    from recsys.data.synth import synthesize

    out = tmp_path_factory.mktemp("raw")
    synthesize(out, scale=TINY_SCALE, seed=7, progress=False)
    return out
