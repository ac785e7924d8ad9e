"""What the service's way of passing a browsing visitor's session costs in quality.

The replay evaluation (:mod:`recsys.evaluation.replay`) ranks at every first add-to-cart of
the holdout with the visitor's earlier events: each event, its time, the carted items, and
the add-to-cart's own time as "now". The service cannot know the add-to-cart's time when it
answers; this replays the served policy of a pipeline run three ways, on the same moments:

* ``replay``: the evaluation's protocol (the ranker is trained on it);
* ``served``: as the service passes it: the session through its online history
  (:class:`fastapi_service.state.OnlineHistory`, ``RECSYS_HISTORY_ITEMS`` events), ranked as
  of the visitor's last event;
* ``items only``: distinct items without times or cart flags, ranked as of the model's
  cutoff (the service before it kept event times and carts).

and prints each one's replay metrics and the paired bootstrap differences of MRR@5 and
hit@5 per segment.

    .venv/bin/python benchmarks/session_semantics.py [--run var/bench/run]

(``var/bench/run`` is the pipeline run ``benchmarks/train_full_scale.py`` leaves.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi_service.settings import ServiceSettings
from fastapi_service.state import OnlineHistory
from recsys import columns as C
from recsys.evaluation import paired_bootstrap
from recsys.evaluation.holdout import SEGMENT
from recsys.evaluation.replay import RANK, replay, replay_metrics
from recsys.pipeline.candidates import PolicyBuilder, name_of
from recsys.pipeline.stages import RunFolder
from recsys.serving import Recommendation, Recommender
from recsys.split import window


class Served:
    """Answers as :meth:`fastapi_service.service.Service.recommend` does (``"served"``) or
    did before it kept event times and carts (``"items only"``)."""

    def __init__(self, rec: Recommender, mode: str, cap: int) -> None:
        self.rec, self.mode, self.cap = rec, mode, cap

    def recommend(
        self,
        user_id: int,
        k: int = 5,
        session_items: Sequence[int] = (),
        session_bought: Sequence[int] = (),
        *,
        session_times: Sequence[int] | None = None,
        session_carts: Sequence[int] = (),
        now_ms: int | None = None,
    ) -> Recommendation:
        times = list(session_times or ())
        if self.mode == "items only":
            newest: dict[int, int] = {}
            for item, t in zip(session_items, times, strict=True):
                newest[item] = max(t, newest.get(item, t))
            items = sorted(newest, key=newest.__getitem__)[-self.cap :]
            return self.rec.recommend(user_id, k, items, session_bought)
        history = OnlineHistory(1, self.cap)
        carted = set(session_carts)  # the ranking marks every event of a carted item
        history.add(
            (t, user_id, item, C.ADDTOCART if item in carted else C.VIEW)
            for item, t in zip(session_items, times, strict=True)
        )
        # a purchase's time only orders the bought items, which the ranking takes as a set
        history.add((0, user_id, item, C.PURCHASE) for item in session_bought)
        s = history.get(user_id)
        return self.rec.recommend(
            user_id, k, s.items, s.bought, session_times=s.times, session_carts=s.carts
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("var/bench/run"))
    args = parser.parse_args()
    run = RunFolder(args.run)
    cfg, split = run.config, run.split
    chosen = run.read("tuning.json")
    served = name_of(chosen["policy"])
    data = run.training_data(split.holdout_start_ms)
    holdout = window(run.load_dataset().events, split.holdout_start_ms, split.end_ms)
    rec = PolicyBuilder(cfg, chosen["params"], run.fits).build(data, [served])[served]
    cap = ServiceSettings().history_items
    tables: dict[str, pd.DataFrame] = {}
    for mode in ("replay", "served", "items only"):
        ranker = rec if mode == "replay" else Served(rec, mode, cap)
        tables[mode] = replay(ranker, holdout, data.user_ids, cfg.k)
        print(f"\n{served}, {mode}:\n{replay_metrics(tables[mode], cfg.k).round(4)}")
    ranks = {m: t[RANK].to_numpy() for m, t in tables.items()}
    reciprocal = {m: np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0) for m, r in ranks.items()}
    hits = {m: (r > 0).astype(float) for m, r in ranks.items()}
    segments = tables["replay"][SEGMENT].to_numpy()
    print("\npaired bootstrap, mean difference [95% interval]:")
    for segment in ("all", *np.unique(segments)):
        mask = np.ones(len(segments), bool) if segment == "all" else segments == segment
        for a, b in (("served", "items only"), ("replay", "served")):
            rr = {m: v[mask] for m, v in reciprocal.items()}
            hit = {m: v[mask] for m, v in hits.items()}
            print(
                f"  {segment:<5} {a} - {b}: MRR@{cfg.k} {paired_bootstrap(rr[a], rr[b])}, "
                f"hit@{cfg.k} {paired_bootstrap(hit[a], hit[b])}"
            )


if __name__ == "__main__":
    main()
