"""The knobs of one pipeline run, validated once for every caller (CLI, DAG, notebooks)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.columns import ADDTOCART, EVENT_TYPES
from recsys.evaluation import WARM, metric_key
from recsys.interactions import DEFAULT_EVENT_WEIGHTS
from recsys.names import DEFAULT_RECENT_SLOTS

#: LightFM parameters used as they are without tuning, and as the search's first trial
DEFAULT_LIGHTFM: dict[str, Any] = {
    "loss": "warp",
    "no_components": 32,
    "learning_rate": 0.05,
    "item_alpha": 1e-6,
    "user_alpha": 1e-6,
    "epochs": 10,
    "recent_slots": DEFAULT_RECENT_SLOTS,
}


class PipelineConfig(BaseModel):
    """Knobs of one pipeline run; every field has a working default.

    The one source of defaults and bounds: the CLI's options and the DAG's params are built
    from this model, and a value out of range fails here with a message naming the field.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    db_url: str | None = Field(
        None,
        description="Event store training reads (SQLAlchemy URL); default: RECSYS_DB_URL, "
        "else the SQLite store under var/.",
    )
    end_ms: int | None = Field(
        None,
        ge=0,
        description="Interval end (epoch ms, exclusive): training reads events before it; "
        "default: the newest stored event + 1 ms.",
    )
    window_days: int | None = Field(
        None, ge=1, description="Training window in days ending at the interval end; None = all."
    )
    holdout_days: int = Field(7, ge=1, description="Days at the end held out for evaluation.")
    validation_days: int = Field(
        7, ge=0, description="Days before the holdout used for tuning (>= 1 when tuning)."
    )
    k: int = Field(5, ge=1, le=100, description="Length of the evaluated lists (precision@k).")
    trials: int = Field(10, ge=0, description="Optuna trials; 0 = the defaults, no tuning.")
    timeout_s: float | None = Field(900.0, gt=0, description="Tuning time budget in seconds.")
    lightfm: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_LIGHTFM),
        description="LightFM parameters (and the blend's recent_slots) used without tuning.",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Interaction weight per event type (also weighs the popularity fallback).",
    )
    popularity_window_days: int = Field(14, ge=1, description="Window of popularity rankings.")
    precompute_k: int = Field(
        10, ge=0, description="Served answers precomputed per known visitor; 0 = rank live."
    )
    promote: bool = Field(
        True, description="Move `champion` when the gate passes; False only tags `challenger`."
    )
    min_events: int = Field(1000, ge=0, description="Fewest events in the training window.")
    min_holdout_addtocart: int = Field(
        10, ge=0, description="Fewest add-to-cart events in the holdout (what the gate judges)."
    )
    max_staleness_days: float = Field(
        1.0, gt=0, description="Oldest the newest event may be, in days before the interval end."
    )
    backtest_windows: int = Field(
        2,
        ge=1,
        description="Consecutive validation windows (validation_days each, ending at the "
        "holdout) that tuning and the choice of the served policy average over.",
    )
    candidates: list[str] = Field(
        default_factory=lambda: ["lightfm", "lightfm+recent", "ranker"],
        description="Policies the run may serve (chosen on the validation windows).",
    )
    ranker: dict[str, Any] = Field(
        default_factory=dict, description="CatBoost settings of the learned ranker."
    )
    ranker_windows: int = Field(
        2, ge=1, description="Windows before a cutoff the learned ranker trains on."
    )
    ranker_sessions: bool = Field(
        True, description="The ranker also learns from add-to-cart moments with their session."
    )
    min_lift: float = Field(
        0.0,
        description="The gate promotes when the 95% lower bound of the candidate's headline "
        "minus every rival's (paired bootstrap over visitors) is above this.",
    )
    bootstrap_resamples: int = Field(2000, ge=100, description="Resamples of the gate.")
    ablation: bool = Field(
        True, description="Also evaluate the ranker without LightFM (what LightFM adds)."
    )
    learning_curve: bool = Field(
        True, description="Log LightFM's headline per epoch on the last validation window."
    )
    deterministic: bool = Field(
        False,
        description="One thread for LightFM and CatBoost: the same data and seed give the "
        "same champion, bit for bit (slower).",
    )
    seed: int = 42
    progress: bool = Field(True, description="Progress bars on the terminal.")

    @property
    def threads(self) -> int:
        """Threads of LightFM and CatBoost (1 in deterministic mode)."""
        return 1 if self.deterministic else 2

    @field_validator("candidates")
    @classmethod
    def _servable(cls, names: list[str]) -> list[str]:
        allowed = ("lightfm", "lightfm+recent", "ranker")
        if not names or set(names) - set(allowed):
            raise ValueError(f"candidates must be some of {allowed}, got {names}")
        return names

    @field_validator("event_weights")
    @classmethod
    def _known_event_types(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; expected some of {EVENT_TYPES}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"weights must be >= 0, got {weights}")
        return weights

    @model_validator(mode="after")
    def _tuning_needs_validation_days(self) -> Self:
        if self.trials > 0 and self.validation_days < 1:
            raise ValueError("tuning (trials > 0) needs validation_days >= 1")
        return self

    @model_validator(mode="after")
    def _window_holds_the_splits(self) -> Self:
        if self.window_days is not None and self.window_days <= (
            self.holdout_days + self.validation_days
        ):
            raise ValueError(
                f"window_days ({self.window_days}) must exceed holdout_days + validation_days "
                f"({self.holdout_days} + {self.validation_days}): no training days would be left"
            )
        return self

    # ------------------------------------------------------------------ metric names

    @property
    def headline(self) -> str:
        """The headline metric key, e.g. ``precision@5``."""
        return metric_key("precision", self.k)

    @property
    def gate_metrics(self) -> tuple[str, ...]:
        """What the gate compares, in order: the headline, then the metric that breaks exact
        ties (small holdouts tie often on precision: hits are counts)."""
        return (self.headline, metric_key("ndcg", self.k))


#: the headline's target and segment: add-to-cart events of visitors known before the window
HEADLINE_TARGET = ADDTOCART
HEADLINE_SEGMENT = WARM
