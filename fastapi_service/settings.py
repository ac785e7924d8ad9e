"""Settings of the recommendation service (environment prefix ``RECSYS_``).

Reading settings touches no file, folder or network; the service creates its cache
folder and opens the event store only when it starts.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.abtest.config import DEFAULT_WINDOW_S
from recsys.bundle import HISTORY_CAP
from recsys.config import CHAMPION_ALIAS, MODEL_NAME, Settings
from recsys.data.schema import FUTURE_TOLERANCE_MS
from recsys.names import Policy

DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"


class ServiceSettings(BaseSettings):
    """Every field can be set as ``RECSYS_<FIELD>`` (e.g. ``RECSYS_MODEL_URI``)."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore", populate_by_name=True)

    # model
    model_uri: str = Field(
        default=DEFAULT_MODEL_URI,
        description="models:/NAME@ALIAS, models:/NAME/VERSION or a local bundle folder.",
    )
    tracking_uri: str | None = Field(
        # the library's store (recsys.config.Settings: var_dir), so `make demo` needs no setting
        default_factory=lambda: Settings().resolved_tracking_uri,
        validation_alias=AliasChoices(
            "tracking_uri", "RECSYS_TRACKING_URI", "RECSYS_MLFLOW_TRACKING_URI"
        ),
        description="MLflow tracking URI (the image sets the team server's URL).",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Settings().var_dir / "model-cache",
        description="Downloaded bundles (<cache_dir>/<model>-v<version>/) and the LATEST pointer.",
    )
    policy: Policy | None = Field(
        default=None,
        description="Serving policy; default: the policy recorded in the bundle metadata.",
    )
    candidates: int | None = Field(
        default=None,
        ge=1,
        description="Candidate set size passed to the Recommender (None = its default).",
    )
    poll_interval_s: float = Field(
        default=30.0, ge=0, description="Seconds between alias polls; 0 disables polling."
    )
    registry_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds the registry has at start before the cached bundle (if any) "
        "serves meanwhile; the start-up load goes on and swaps the registry's model in.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of POST /admin/reload; unset disables the endpoint."
    )

    # events
    db_url: str = Field(
        default_factory=lambda: Settings().resolved_db_url,
        description="SQLAlchemy URL of the event store (default: the library's, under var_dir).",
    )
    max_batch: int = Field(
        default=1000, ge=1, description="Most events accepted by one POST /events."
    )
    future_tolerance_s: float = Field(
        default=FUTURE_TOLERANCE_MS / 1000,
        ge=0,
        description="POST /events refuses events dated more than this after the server clock.",
    )
    history_visitors: int = Field(
        default=100_000, ge=1, description="Visitors whose posted events are kept in memory (LRU)."
    )
    history_items: int = Field(
        default=HISTORY_CAP,
        ge=1,
        description="Recent views and add-to-carts kept per visitor (default: as many items "
        "as a bundle keeps).",
    )
    online_state_url: str | None = Field(
        default=None,
        description="Redis URL of the online histories shared by replicas and workers "
        "(e.g. redis://127.0.0.1:6379/0); unset = in process (one replica, one worker).",
    )
    online_state_prefix: str = Field(
        default="recsys:history:",
        description="Prefix of the online-state keys in Redis (one per shop or environment).",
    )
    history_ttl_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="How far back the online history reaches: with Redis a visitor's history "
        "expires this long after their last event; in process it is rebuilt from the store's "
        "views and add-to-carts of this period (purchases: since the served model's cutoff).",
    )
    rebuild_history: bool = Field(
        default=True,
        description="In process: at start, rebuild the online history from the event store "
        "(events since the served model's cutoff). Off only to replay stored days the model "
        "never saw as new traffic (`make demo HOLDBACK=N`).",
    )
    history_poll_s: float = Field(
        default=0.2,
        gt=0,
        description="In process: seconds between reads of new events from the store (events "
        "other workers, replicas or imports wrote reach this worker's history within it).",
    )
    exposure_flush_s: float = Field(
        default=1.0, gt=0, description="Seconds between writes of buffered exposures to the store."
    )
    exposure_buffer: int = Field(
        default=100_000,
        ge=1,
        description="Most exposures buffered in memory; older ones are dropped.",
    )
    exposure_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Exposures older than this are deleted from the store (checked at most "
        "every 10 minutes, after a flush); 0 keeps them forever. Keep it longer than any A/B "
        "experiment plus its attribution window.",
    )
    experiment: str = Field(
        default="default",
        description="Experiment name written with exposures served outside any A/B experiment.",
    )

    # A/B experiments
    experiments_file: Path | None = Field(
        default=None,
        description="YAML file of A/B experiments (recsys.abtest.config); unset = none: every "
        "visitor gets the champion.",
    )
    attribution_window_s: float = Field(
        default=DEFAULT_WINDOW_S,
        gt=0,
        description="Events without request_id count for a visitor's variant this many seconds "
        "after their first exposure.",
    )
    ab_metrics_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between recomputations of the per-variant business metrics from "
        "the event store (at least 10x the last computation's duration, which grows with the "
        "experiment's exposures); 0 disables them.",
    )

    # server
    host: str = Field(
        default="127.0.0.1", description="Interface uvicorn binds (0.0.0.0 in the image)."
    )
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="TCP port; 0 = any free one (uvicorn logs the port it bound).",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="uvicorn worker processes (metrics are per process; histories are shared "
        "through the event store, or Redis).",
    )
    keep_alive_timeout_s: int = Field(
        default=5,
        ge=1,
        description="uvicorn closes a keep-alive connection idle this long after a response.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection that has not sent a complete request header this many "
        "seconds after it opened or after its previous response is closed (uvicorn has no "
        "such timeout: a silent or half-open client would hold its connection forever).",
    )
    limit_concurrency: int = Field(
        default=2048,
        ge=1,
        description="Open connections (idle keep-alive ones included) or running requests per "
        "worker beyond which uvicorn answers 503 at once: at the few thousand requests/s one "
        "worker serves in ~10 ms, tens are in flight, so 2048 only bounds the memory an overload "
        "or a connection flood takes. Keep it below the open-file limit (ulimit -n).",
    )
    log_level: str = Field(default="info", description="Log level of the service and uvicorn.")
    access_log: bool = Field(
        default=False, description="uvicorn access log (off: it costs throughput)."
    )

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        # compose passes `${RECSYS_ADMIN_TOKEN:-}` as an empty string when the secret is absent
        return None if value in ("", None) else value

    @field_validator(
        "tracking_uri", "policy", "experiments_file", "online_state_url", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def max_body_bytes(self) -> int:
        """Largest POST body accepted before parsing (about 1 KiB per event)."""
        return 1024 * (self.max_batch + 1)
