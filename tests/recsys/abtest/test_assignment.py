"""Assignment: stable (across processes, restarts, reloads), balanced, weighted, independent."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from recsys.abtest import Router, assign, bucket, parse_experiments
from recsys.abtest.assignment import BUCKETS

pytestmark = pytest.mark.abtest

N = 20_000


def _experiment(name: str = "e1", weights: tuple[float, ...] = (1, 1), **fields: object):
    variants = [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]
    return parse_experiments({"experiments": [{"name": name, "variants": variants, **fields}]})[0]


def test_bucket_is_the_first_8_bytes_of_sha256_of_salt_colon_id() -> None:
    digest = hashlib.sha256(b"spring-sale:1234567").digest()
    assert bucket("spring-sale", 1234567) == int.from_bytes(digest[:8], "big")
    # golden values: a change of the hash or of the text hashed would reassign every visitor
    # in a running experiment
    assert bucket("e1", 0) == 0x03956E313DA13BB2
    assert bucket("e1", 0) < BUCKETS // 2  # so visitor 0 is in the first half: v0
    assert [assign(_experiment(), u) for u in range(8)] == [
        "v0",
        "v1",
        "v0",
        "v1",
        "v0",
        "v0",
        "v0",
        "v1",
    ]


def test_assignment_is_the_same_in_another_process() -> None:
    """Replicas and restarts: a fresh interpreter (another hash seed) assigns the same."""
    users = list(range(0, 5000, 37))
    here = [assign(_experiment(), u) for u in users]
    code = (
        "from recsys.abtest import assign, parse_experiments\n"
        "e = parse_experiments({'experiments': [{'name': 'e1', 'variants': "
        "[{'name': 'v0', 'weight': 1}, {'name': 'v1', 'weight': 1}]}]})[0]\n"
        f"print(','.join(assign(e, u) for u in {users!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip().split(",") == here


def test_balance_follows_the_weights() -> None:
    for weights in ((1, 1), (9, 1), (1, 2, 1)):
        exp = _experiment(weights=weights)
        names = [assign(exp, u) for u in range(N)]
        counts = [names.count(f"v{i}") for i in range(len(weights))]
        expected = np.array(weights) / sum(weights) * N
        # a correct split fails this 1 time in 10,000
        assert stats.chisquare(counts, expected).pvalue > 1e-4, (weights, counts)


def test_a_zero_weight_variant_gets_nobody() -> None:
    exp = _experiment(weights=(1, 0, 1))
    assert "v1" not in {assign(exp, u) for u in range(2000)}


def test_experiments_with_different_salts_are_independent() -> None:
    first, second = _experiment("e1"), _experiment("e2")
    a = np.array([assign(first, u) == "v0" for u in range(N)])
    b = np.array([assign(second, u) == "v0" for u in range(N)])
    table = [[(a & b).sum(), (a & ~b).sum()], [(~a & b).sum(), (~a & ~b).sum()]]
    assert stats.chi2_contingency(table).pvalue > 1e-4, table


def test_router_follows_the_time_window_and_agrees_with_assign() -> None:
    exp = _experiment(start="2026-01-01T00:00:00Z", end="2026-02-01T00:00:00Z")
    router = Router([exp])
    inside = exp.start_s + 1
    assert router.route(7, exp.start_s - 1) is None
    assert router.route(7, exp.end_s) is None
    assert router.route(7, inside) == ("e1", assign(exp, 7))
    # a visitor's variant never changes while the experiment runs
    assert {router.route(7, inside + hours * 3600) for hours in range(0, 700, 7)} == {
        ("e1", assign(exp, 7))
    }
    assert not Router([])
