"""Every policy a run compares, built for one cutoff from shared LightFM fits.

A run judges three kinds of policies on the same windows: the baselines (no model at all),
LightFM's own rankings, and the learned ranker over candidates from all sources (plus the
ranker without LightFM, to measure what LightFM adds). :class:`PolicyBuilder` makes them for
any cutoff, fitting each (cutoff, configuration) once through :class:`~recsys.models.fits.
BaseFits`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from recsys.interactions import TrainingData
from recsys.models.fits import BaseFits
from recsys.models.ranker import RankerModel
from recsys.names import Policy
from recsys.pipeline.compare import BASELINES, LIGHTFM_POLICIES
from recsys.pipeline.config import PipelineConfig
from recsys.serving import ItemSearch, Recommender

#: the policies a run may serve, by result-table name
CANDIDATES: Final[Mapping[str, Policy]] = {
    **{name: policy for policy, name in LIGHTFM_POLICIES.items()},
    "ranker": Policy.RANKER,
}
#: the learned ranker without LightFM (no model candidates, no model score): what LightFM adds
ABLATION: Final = "ranker-no-lightfm"


def name_of(policy: str) -> str:
    """The result-table name of a servable policy (``blend`` -> ``lightfm+recent``; a baseline
    is named after its policy)."""
    if policy in BASELINES:
        return str(policy)
    return next(name for name, p in CANDIDATES.items() if p == policy)


def policy_of(name: str) -> Policy:
    """The serving policy of a result-table name (the inverse of :func:`name_of`)."""
    return CANDIDATES[name] if name in CANDIDATES else Policy(name)


@dataclass
class PolicyBuilder:
    """Builds a run's policies for any cutoff.

    Attributes
    ----------
    cfg : PipelineConfig
        The run's knobs (popularity window, ranker settings, seed, threads).
    params : dict
        LightFM parameters (with ``epochs`` and the blend's ``recent_slots``).
    fits : BaseFits
        Shared fits.
    reports : dict
        What each ranker trained on (by result-table name), from the last :meth:`build`.
    """

    cfg: PipelineConfig
    params: dict[str, Any]
    fits: BaseFits
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ranker(self, lightfm: bool = True) -> RankerModel:
        """The learned ranker of this configuration (``lightfm`` False: the ablation)."""
        cfg = self.cfg
        return RankerModel(
            self.params if lightfm else None,
            windows=cfg.ranker_windows,
            window_days=cfg.validation_days,
            ranker=cfg.ranker,
            sessions=cfg.ranker_sessions,
            seed=cfg.seed,
            threads=cfg.threads,
            popularity_window_days=cfg.popularity_window_days,
            fits=self.fits,
        )

    def build(self, data: TrainingData, names: Iterable[str]) -> dict[str, Recommender]:
        """The policies called ``names`` (baselines, candidates, the ablation) fitted on
        ``data``, each as served; policies of one bundle share its search."""
        cfg = self.cfg
        out: dict[str, Recommender] = {}
        wanted = list(names)
        if set(wanted) & set(BASELINES):
            base = self.fits.bundle(data, None, cfg.seed, cfg.threads, cfg.popularity_window_days)
            search = ItemSearch(base)
            out |= {n: Recommender(base, policy=n, search=search) for n in wanted if n in BASELINES}
        lightfm = [n for n in wanted if n in LIGHTFM_POLICIES.values()]
        if lightfm:
            bundle = self.fits.bundle(
                data, self.params, cfg.seed, cfg.threads, cfg.popularity_window_days
            )
            search = ItemSearch(bundle)
            out |= {n: Recommender(bundle, policy=CANDIDATES[n], search=search) for n in lightfm}
        for name, uses_lightfm in (("ranker", True), (ABLATION, False)):
            if name in wanted:
                model = self.ranker(uses_lightfm).fit(data)
                assert model.fitted is not None
                out[name] = Recommender(
                    model.to_bundle(data), policy=Policy.RANKER, tree_scorer=model.fitted.predict
                )
                self.reports[name] = model.report
        unknown = sorted(set(wanted) - set(out))
        if unknown:
            raise ValueError(f"unknown policies {unknown}")
        return {n: out[n] for n in wanted}
