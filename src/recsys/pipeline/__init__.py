"""Check -> train -> evaluate -> gate -> refit -> register -> promote, as stages every
consumer calls.

:func:`run_pipeline` is the composition the CLI (``recsys train``) runs; the Airflow DAG runs
the stages (:mod:`.stages`) one task each; they pass a run folder between them.

The configuration and the gate import quickly; the stages (MLflow, LightFM, Optuna) load on
first use, so that ``recsys --help`` and DAG parsing stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from recsys.pipeline.config import DEFAULT_LIGHTFM, PipelineConfig
from recsys.pipeline.gate import GateDecision, gate

_LAZY = {
    "compare": ("BASELINES", "LIGHTFM_POLICIES", "gate_score", "headline"),
    "stages": (
        "ChampionComparison",
        "PipelineResult",
        "RunFolder",
        "check",
        "decide",
        "fit_and_evaluate",
        "prepare",
        "promote",
        "refit",
        "register",
        "run_pipeline",
        "tune",
    ),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = ["DEFAULT_LIGHTFM", "GateDecision", "PipelineConfig", "gate", *_HOME]
