"""The A/B loop end to end: a LightFM champion and popularity as variants of a real service,
simulated holdout visitors, then the report.

The champion is trained on the session's synthetic data up to 21 days before its end, so the
holdout holds about 300 visitors who added to cart (the simulator's shoppers). Offline the
champion's precision@5 beats popularity's; online, through real HTTP, its add-to-cart
conversion must be better with p < 0.05. An A/A run (the champion twice) must show no
significant difference. Each run takes a few seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from service_testkit import Server, wait_until
from typer.testing import CliRunner

from recsys.abtest import load_experiments
from recsys.abtest.report import Report, build_report
from recsys.cli import app
from recsys.data import EventStore, load_dataset
from recsys.simulate import simulate

pytestmark = [pytest.mark.service, pytest.mark.abtest, pytest.mark.slow]

HOLDOUT_DAYS = 21
SEED = 1
FAST = {
    "loss": "warp",
    "no_components": 16,
    "learning_rate": 0.05,
    "item_alpha": 1e-6,
    "user_alpha": 1e-6,
    "epochs": 5,
}
AB = """
experiments:
  - name: champion-vs-popular
    variants:
      - {name: popular, policy: popular}
      - {name: champion}
"""
AA = """
experiments:
  - name: champion-twice
    variants:
      - {name: a}
      - {name: b}
"""


@pytest.fixture(scope="module")
def champion(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small LightFM champion (served policy ``blend``) and the offline precision@5 of it
    and of popularity on the holdout after its cutoff."""
    from recsys.bundle import serving_lists
    from recsys.evaluation import score_policies, window_targets
    from recsys.interactions import prepare_training_data
    from recsys.pipeline.fitting import fit_lightfm, served_bundle
    from recsys.serving import ItemSearch, Recommender
    from recsys.split import make_split

    ds = load_dataset(tiny_raw)
    split = make_split(ds.events, HOLDOUT_DAYS, 0)
    data = prepare_training_data(
        ds.events, ds.item_properties, ds.category_tree, split.holdout_start_ms
    )
    model = fit_lightfm(data, dict(FAST), 42, 14)
    bundle = served_bundle(model, data, serving_lists(data, 14), FAST)
    bundle.metadata.update(policy="blend", cutoff_ms=split.holdout_start_ms, model_version="1")
    path = tmp_path_factory.mktemp("champion") / "bundle"
    bundle.save(path)
    search = ItemSearch(bundle)
    rankers = {
        "champion": Recommender(bundle, policy="blend", search=search),
        "popular": Recommender(bundle, policy="popular", search=search),
    }
    targets = window_targets(
        ds.events, data.user_ids, split.holdout_start_ms, split.end_ms, ["addtocart"]
    )
    table = score_policies(rankers, targets, 5, bundle.n_items)
    precision = {
        name: float(table.loc[(name, "addtocart", "all"), "precision@5"]) for name in rankers
    }
    return {"bundle": path, "precision": precision, "events": ds.events}


def run_experiment(
    server_factory: Callable[..., Server], champion: dict, tmp_path: Path, text: str, name: str
) -> tuple[Report, Server]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    server = server_factory(
        {
            "RECSYS_MODEL_URI": str(champion["bundle"]),
            "RECSYS_EXPERIMENTS_FILE": str(path),
            "RECSYS_AB_METRICS_INTERVAL_S": "0.5",
        },
        name=name,
    )
    result = simulate(
        server.url,
        champion["events"],
        2000,
        60,
        seed=SEED,
        population="shoppers",
        concurrency=4,
        holdout_days=HOLDOUT_DAYS,
    )
    assert result.failures == 0, result.errors
    assert result.visitors > 250
    store = EventStore(server.env["RECSYS_DB_URL"])
    # exposures reach the store within the flush interval (0.2 s)
    wait_until(lambda: len(store.read_exposures()) == result.visitors, 10, "exposures flushed")
    (config,) = load_experiments(path)
    return build_report(store, config.name, config), server


def test_the_better_offline_variant_converts_better_online(
    server_factory: Callable[..., Server], champion: dict, tmp_path: Path
) -> None:
    started = time.monotonic()
    assert champion["precision"]["champion"] > champion["precision"]["popular"]
    report, server = run_experiment(server_factory, champion, tmp_path, AB, "ab")
    conversion = report.metric("addtocart_conversion", "champion")
    assert conversion.comparison is not None
    assert conversion.value > report.metric("addtocart_conversion", "popular").value
    assert conversion.comparison.p_value < 0.05, conversion
    assert conversion.comparison.lift_low > 0
    assert not report.srm.mismatch
    # the champion's carts come from its lists: a larger recommended-item share
    share = report.metric("recommended_item_share", "champion")
    assert share.value > report.metric("recommended_item_share", "popular").value
    # the live gauges agree with the report (the service computed them from the same store)
    wait_until(
        lambda: (
            server.metric(
                r'recsys_ab_exposed_visitors\{experiment="champion-vs-popular",variant="champion"\}'
            )
            == report.counts.loc["champion", "exposed_visitors"]
        ),
        10,
        "the gauges caught up",
    )
    # the command line renders the same report
    runner = CliRunner()
    db = ["--db", server.env["RECSYS_DB_URL"], "--experiment", "champion-vs-popular"]
    out = runner.invoke(app, ["ab", "report", *db, "--format", "json"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.output)
    assert document["counts"]["champion"]["exposed_visitors"] == int(
        report.counts.loc["champion", "exposed_visitors"]
    )
    png = tmp_path / "report.png"
    out = runner.invoke(app, ["ab", "report", *db, "--format", "png", "--out", str(png)])
    assert out.exit_code == 0 and png.stat().st_size > 10_000, out.output
    assert time.monotonic() - started < 90


def test_an_aa_run_shows_no_significant_difference(
    server_factory: Callable[..., Server], champion: dict, tmp_path: Path
) -> None:
    report, _ = run_experiment(server_factory, champion, tmp_path, AA, "aa")
    for metric in ("addtocart_conversion", "items_added_per_user", "recommended_item_share"):
        comparison = report.metric(metric, "b").comparison
        assert comparison is not None
        assert not comparison.significant(), (metric, comparison)
    assert not report.srm.mismatch
