"""Full-scale training benchmark: data -> matrices -> LightFM fit -> evaluation -> MLflow log.

Prints the time of each stage, LightFM's interactions/s, and the speed-up of the vectorised
interaction build over the naive Python loop over rows, both measured here on the same data.

    .venv/bin/python benchmarks/train_full_scale.py [--data DIR] [--epochs 5] [--naive-sample 1.0]

Without --data it generates full-scale synthetic files into var/bench/raw (once).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from recsys.bundle import serving_lists
from recsys.config import Settings
from recsys.data import load_dataset
from recsys.data.synth import synthesize
from recsys.evaluation import score_policies, window_targets
from recsys.interactions import (
    DEFAULT_EVENT_WEIGHTS,
    build_interactions,
    build_interactions_naive,
    prepare_training_data,
)
from recsys.models.lightfm import LightFMModel
from recsys.pipeline.compare import baseline_policies, lightfm_policies
from recsys.serving import precompute_answers
from recsys.split import make_split
from recsys.tracking import configure


@contextmanager
def stage(times: dict[str, float], name: str) -> Iterator[None]:
    """Time one named stage into ``times`` and say so."""
    print(f"-> {name} ...", flush=True)
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start
    print(f"   {name}: {times[name]:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--bundle-out",
        type=Path,
        default=Path("var/bench/bundle"),
        help="where the fitted bundle is saved (serve_full_scale.py loads it)",
    )
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument(
        "--naive-sample",
        type=float,
        default=1.0,
        help="share of training events the naive loop runs on (the ratio is per event)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    times: dict[str, float] = {}
    folder = args.data
    if folder is None:
        folder = Path("var/bench/raw")
        if not (folder / "events.csv").is_file():
            with stage(times, "synthesize scale 1"):
                synthesize(folder, scale=1.0, seed=42, progress=True)
    with stage(times, "load + validate CSV files"):
        ds = load_dataset(folder)
    events = ds.events
    split = make_split(events)
    with stage(times, "prepare (vectorised): events -> interactions + item features"):
        data = prepare_training_data(
            events, ds.item_properties, ds.category_tree, split.holdout_start_ms
        )
    train = (
        data.events.sample(frac=args.naive_sample, random_state=0)
        if args.naive_sample < 1
        else data.events
    )
    with stage(times, "naive Python loop: events -> interactions"):
        build_interactions_naive(train, data.user_ids, data.item_ids, DEFAULT_EVENT_WEIGHTS)
    with stage(times, "vectorised: same events -> interactions"):
        build_interactions(train, data.user_ids, data.item_ids, DEFAULT_EVENT_WEIGHTS)
    model = LightFMModel(epochs=args.epochs, no_components=args.components)
    with stage(times, "LightFM fit"):
        model.fit(data)
    with stage(times, "export bundle"):
        lists = serving_lists(data)
        bundle = model.to_bundle(data, lists)
        bundle.metadata.update(policy="blend", model_version="bench")
    targets = window_targets(events, data.user_ids, split.holdout_start_ms, split.end_ms)
    with stage(times, "baselines: popular + recently viewed"):
        policies = baseline_policies(data, lists)
    policies |= lightfm_policies(bundle)  # one shared ItemSearch, built on first use
    with stage(times, "evaluate 4 policies (both targets, 3 segments)"):
        results = score_policies(policies, targets, 5, len(data.item_ids))
    with stage(times, "precompute served answers (top-10 per known visitor)"):
        bundle.answers = precompute_answers(policies["lightfm+recent"], 10)
        bundle.save(args.bundle_out)
    settings = Settings(var_dir=Path("var/bench"))
    configure(settings)
    with (
        stage(times, "MLflow log (metrics + bundle artifact)"),
        mlflow.start_run(run_name="benchmark"),
    ):
        mlflow.log_metrics({f"stage_{i}_seconds": v for i, v in enumerate(times.values())})
        mlflow.log_artifacts(str(args.bundle_out), "bundle")

    t = times
    print("\n=== results ===")
    print(
        f"events {len(events):,}; training users {len(data.user_ids):,}, items {len(data.item_ids):,}, "
        f"interactions {data.interactions.nnz:,}"
    )
    naive, vec = (
        t["naive Python loop: events -> interactions"],
        t["vectorised: same events -> interactions"],
    )
    print(
        f"interaction build on {len(train):,} events: naive {naive:.2f} s, vectorised {vec:.3f} s "
        f"-> {naive / vec:.0f}x faster (goal >= 20x)"
    )
    prep = t["prepare (vectorised): events -> interactions + item features"]
    print(f"whole prepare stage (matrices + item features): {prep:.2f} s (goal < 30 s)")
    fit = t["LightFM fit"]
    print(
        f"LightFM: {args.epochs} epochs in {fit:.1f} s -> "
        f"{data.interactions.nnz * args.epochs / fit:,.0f} interactions/s"
    )
    print("\nholdout results (last 7 days; k=5):")
    print(results.round(4).to_string())
    for name, seconds in t.items():
        print(f"  {name:<62} {seconds:8.2f} s")


if __name__ == "__main__":
    main()
