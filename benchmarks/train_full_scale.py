"""Full-scale training benchmark: the real pipeline (tuning included) on 2.8M events.

Runs, in one process and one report:

* the vectorised interaction build against a naive Python loop over the same events (ratio);
* every pipeline stage (``recsys.pipeline.stages``: check -> prepare -> tune -> fit_and_evaluate
  -> decide -> refit) on an event store holding the full-scale data, with each stage's wall
  time and the process's peak memory;
* the holdout table of every policy (baselines, LightFM, the learned ranker and its ablation
  without LightFM), statically (precision@5 on add-to-carts of warm visitors: the headline) and
  by replay (next add-to-cart hit rate / MRR, warm and cold visitors);
* the gate's paired-bootstrap intervals of the served policy against every baseline, and the
  served policy's ratio to the best baseline;
* with ``--seeds``, the headline of the ranker refitted with other seeds on the same split (the
  seed-to-seed spread).

The served bundle is saved to ``--bundle-out`` for ``benchmarks/serve_full_scale.py``.

    .venv/bin/python benchmarks/train_full_scale.py [--data DIR] [--trials 4] [--seeds 3]

Without --data it generates full-scale synthetic files into var/bench/raw (once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from recsys.config import Settings
from recsys.data import EventStore
from recsys.data.synth import synthesize
from recsys.evaluation import WARM
from recsys.evaluation.replay import REPLAY_TARGET
from recsys.interactions import DEFAULT_EVENT_WEIGHTS, build_interactions, build_interactions_naive
from recsys.pipeline import PipelineConfig, stages
from recsys.pipeline.candidates import ABLATION, PolicyBuilder, name_of
from recsys.pipeline.compare import BASELINES, headline


def peak_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--var", type=Path, default=Path("var/bench"))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1, help="ranker seeds for the spread")
    parser.add_argument("--bundle-out", type=Path, default=Path("var/bench/bundle"))
    parser.add_argument("--naive-sample", type=float, default=1.0)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}",
        flush=True,
    )
    folder = args.data or args.var / "raw"
    if not (folder / "events.csv").is_file():
        synthesize(folder, scale=1.0, seed=42, progress=True)
    db = args.var / "events.db"
    times: dict[str, float] = {}
    started = time.perf_counter()
    if not db.is_file():
        EventStore(f"sqlite:///{db}").import_folder(folder)
    times["import into the store (once)"] = time.perf_counter() - started
    settings = Settings(var_dir=args.var / "state", db_url=f"sqlite:///{db}")
    cfg = PipelineConfig(trials=args.trials, progress=True)
    workdir = args.var / "run"
    t0 = time.perf_counter()
    checked = stages.check(cfg, settings)
    stages.prepare(cfg.model_copy(update={"end_ms": checked.end_ms}), workdir, settings)
    times["check + prepare"] = time.perf_counter() - t0
    for name in ("tune", "fit_and_evaluate", "decide", "refit"):
        t0 = time.perf_counter()
        getattr(stages, name)(workdir, settings)
        times[name] = time.perf_counter() - t0
        print(f"   {name}: {times[name]:.1f} s (peak RSS {peak_gib():.2f} GiB)", flush=True)
    pipeline_s = sum(v for k, v in times.items() if k != "import into the store (once)")

    run = stages.RunFolder(workdir)
    split = run.split
    data = run.training_data(split.holdout_start_ms)
    train = data.events.sample(frac=args.naive_sample, random_state=0)
    t0 = time.perf_counter()
    build_interactions_naive(train, data.user_ids, data.item_ids, DEFAULT_EVENT_WEIGHTS)
    naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_interactions(train, data.user_ids, data.item_ids, DEFAULT_EVENT_WEIGHTS)
    vectorised = time.perf_counter() - t0

    import pandas as pd

    results = pd.read_parquet(workdir / "results.parquet")
    chosen, decision = run.read("tuning.json"), run.read("decision.json")
    served = name_of(chosen["policy"])
    static = results.xs(("addtocart", WARM), level=("target", "segment"))
    replayed = results.xs(REPLAY_TARGET, level="target")
    best_baseline = max(BASELINES, key=lambda n: headline(results, n, cfg.k))

    spread = [headline(results, "ranker", cfg.k)]
    if args.seeds > 1:
        from recsys.evaluation import visitor_scores, window_targets

        events = run.load_dataset().events
        targets = window_targets(events, data.user_ids, split.holdout_start_ms, split.end_ms)
        warm = targets["addtocart"][targets["addtocart"]["segment"] == WARM]
        for seed in range(1, args.seeds):
            knobs = run.config.model_copy(update={"seed": cfg.seed + seed})
            rec = PolicyBuilder(knobs, chosen["params"], run.fits).build(data, ["ranker"])
            values = visitor_scores(rec["ranker"].recommend_batch, warm, cfg.k)[cfg.headline]
            spread.append(float(values.mean()))

    args.bundle_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.bundle_out, ignore_errors=True)
    shutil.copytree(run.bundle_dir, args.bundle_out)

    print("\n=== results ===")
    print(
        f"events {len(run.load_dataset().events):,}; training users {len(data.user_ids):,}, "
        f"items {len(data.item_ids):,}, interactions {data.interactions.nnz:,}"
    )
    print(
        f"interaction build on {len(train):,} events: naive {naive:.2f} s, vectorised "
        f"{vectorised:.3f} s -> {naive / vectorised:.0f}x (goal >= 20x)"
    )
    print(f"\nserved policy: {served} (chosen on {cfg.backtest_windows} validation windows)")
    print(
        "validation means:", json.dumps({k: round(v, 4) for k, v in chosen["validation"].items()})
    )
    head = cfg.headline
    cols = [head, f"recall@{cfg.k}", f"ndcg@{cfg.k}", f"hitrate@{cfg.k}", "users"]
    print(f"\nholdout, add-to-cart targets, warm visitors ({int(static['users'].max())}):")
    print(static[cols].round(4).to_string())
    print("\nreplay (next add-to-cart with the session before it):")
    rcols = [f"hitrate@{cfg.k}", f"mrr@{cfg.k}", "events"]
    print(replayed[rcols].unstack("segment").round(4).to_string())
    ratio = static.loc[served, head] / static.loc[best_baseline, head]
    print(
        f"\nserved {served} {static.loc[served, head]:.4f} vs best baseline {best_baseline} "
        f"{static.loc[best_baseline, head]:.4f}: {ratio:.2f}x (goal >= 1.2x)"
    )
    for rival, diff in decision["differences"].items():
        print(
            f"  gate vs {rival:<14} {diff['mean']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]"
        )
    print(f"  gate: {decision['reason'][:200]}")
    if ABLATION in static.index:
        lift = static.loc["ranker", head] - static.loc[ABLATION, head]
        print(
            f"\nablation: ranker {static.loc['ranker', head]:.4f}, without LightFM "
            f"{static.loc[ABLATION, head]:.4f} (LightFM adds {lift:+.4f})"
        )
    cold = replayed.xs("cold", level="segment")
    print(
        f"cold visitors, replay hit@{cfg.k}: served {cold.loc[served, f'hitrate@{cfg.k}']:.4f} vs "
        f"popular_carts {cold.loc['popular_carts', f'hitrate@{cfg.k}']:.4f} "
        f"({cold.loc[served, f'hitrate@{cfg.k}'] / max(cold.loc['popular_carts', f'hitrate@{cfg.k}'], 1e-9):.1f}x; goal >= 3x)"
    )
    if len(spread) > 1:
        print(
            f"ranker headline over {len(spread)} seeds: {np.round(spread, 4).tolist()} "
            f"(mean {np.mean(spread):.4f}, sd {np.std(spread, ddof=1):.4f})"
        )
    print("\nstage times:")
    for name, seconds in times.items():
        print(f"  {name:<34} {seconds:8.1f} s")
    print(f"  {'pipeline (check .. refit)':<34} {pipeline_s:8.1f} s (goal < 20 min)")
    print(f"peak RSS of the process: {peak_gib():.2f} GiB")


if __name__ == "__main__":
    main()
