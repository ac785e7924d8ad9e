"""
### Retrain the add-to-cart recommender on fresh events

Every task is a thin call of a stage of `recsys.pipeline` over one run folder
(`$RECSYS_VAR_DIR/airflow-runs/<run id>`); tasks pass only that path and a few numbers.

**Flow**: `check_store` (fresh events in the interval, enough volume, schema: stale or broken
data fails here and nothing is registered) → `prepare` (snapshot of the training window from
the event store, time split, MLflow run) → `tune` (Optuna on the validation window) →
`fit_and_evaluate` (fit up to the holdout start, score every policy and baseline on the
holdout as served) → `decide` (the gate: the candidate must beat every baseline and the
champion's *configuration*, refitted up to this holdout's start when the champion's model
saw the holdout) → `refit` (the chosen configuration on every event up to the interval end:
the model that is served) → `register` (new version of `recsys-lightfm`) → `promote` (alias
`champion`, or `challenger` when the gate says no) → `reload_service` (`POST /admin/reload`;
a service that is down is only a warning: it also polls the alias).

**Interval end** (training reads events strictly before it): the `interval_end` param when
given; else a scheduled run's `data_interval_end`; else (a manual trigger) the newest event in
the store + 1 ms, i.e. "train on everything there is now".

**Settings** come from `RECSYS_*` variables, as for the CLI and the service: `RECSYS_VAR_DIR`,
`RECSYS_DB_URL`, `RECSYS_MLFLOW_TRACKING_URI`, `RECSYS_SERVICE_URL`, `RECSYS_ADMIN_TOKEN`,
`RECSYS_ALERT_WEBHOOK_URL` (a failed task posts there).

(Over 400 lines because this docstring is the DAG's documentation in the Airflow UI and the
trigger form's parameters are declared here with their titles, bounds and help texts; the
task bodies are short calls of `recsys.pipeline.stages`.)
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, chain, dag, get_current_context, task

if TYPE_CHECKING:  # the library loads inside the tasks: parsing this file stays fast
    from recsys.config import Settings
    from recsys.pipeline.config import PipelineConfig

DAG_ID = "retrain_recommender"
#: PipelineConfig's LightFM defaults (the DAG file imports no recsys; a test keeps them equal)
DEFAULT_EPOCHS = 10
DEFAULT_COMPONENTS = 32
log = logging.getLogger(__name__)

#: the run's knobs; bounds mirror recsys.pipeline.config.PipelineConfig, which validates them
PARAMS = {
    "window_days": Param(
        None,
        type=["null", "integer"],
        minimum=2,
        title="Training window (days)",
        description="Days of events before the interval end to train on; empty = all events.",
    ),
    "holdout_days": Param(
        7,
        title="Holdout (days)",
        type="integer",
        minimum=1,
        maximum=90,
        description="Days held out to judge models.",
    ),
    "validation_days": Param(
        7,
        title="Validation (days)",
        type="integer",
        minimum=0,
        maximum=90,
        description="Days before the holdout for tuning.",
    ),
    "trials": Param(
        3,
        title="Tuning trials",
        type="integer",
        minimum=0,
        maximum=200,
        description="Optuna trials; 0 = no tuning.",
    ),
    "timeout_s": Param(
        900,
        title="Tuning budget (s)",
        type="number",
        exclusiveMinimum=0,
        description="Tuning time budget (seconds).",
    ),
    "epochs": Param(
        DEFAULT_EPOCHS,
        title="LightFM epochs",
        type="integer",
        minimum=1,
        maximum=500,
        description="LightFM epochs (untuned runs).",
    ),
    "no_components": Param(
        DEFAULT_COMPONENTS,
        title="LightFM components",
        type="integer",
        minimum=1,
        maximum=512,
        description="LightFM embedding size.",
    ),
    "learning_rate": Param(
        0.05,
        title="LightFM learning rate",
        type="number",
        exclusiveMinimum=0,
        maximum=1,
        description="LightFM learning rate.",
    ),
    "candidates": Param(
        ["lightfm", "lightfm+recent", "ranker"],
        title="Servable policies",
        type="array",
        items={"type": "string", "enum": ["lightfm", "lightfm+recent", "ranker"]},
        minItems=1,
        description="Policies the run may serve; the best on the validation windows serves.",
    ),
    "backtest_windows": Param(
        2,
        title="Validation windows",
        type="integer",
        minimum=1,
        maximum=12,
        description="Consecutive validation windows tuning and selection average over.",
    ),
    "ranker_windows": Param(
        2,
        title="Ranker windows",
        type="integer",
        minimum=1,
        maximum=12,
        description="Windows before a cutoff the learned ranker trains on.",
    ),
    "ranker_iterations": Param(
        300,
        title="Ranker trees",
        type="integer",
        minimum=10,
        maximum=5000,
        description="Most trees of the learned ranker (early stopping picks fewer).",
    ),
    "min_lift": Param(
        0.0,
        title="Minimum lift",
        type="number",
        minimum=-1,
        maximum=1,
        description="Promote when the 95% lower bound of the headline difference vs every "
        "rival (paired bootstrap over visitors) is above this.",
    ),
    "deterministic": Param(
        False,
        title="Deterministic",
        type="boolean",
        description="One thread for LightFM and CatBoost: the same data gives the same model.",
    ),
    "promote": Param(
        True,
        title="Promote",
        type="boolean",
        description="Move `champion` when the gate passes (off: challenger).",
    ),
    "interval_end": Param(
        None,
        title="Interval end",
        type=["null", "string"],
        format="date-time",
        description="Train on events before this instant (ISO 8601); empty = the run's rule.",
    ),
    "min_events": Param(
        1000,
        title="Minimum events",
        type="integer",
        minimum=0,
        description="Fewest events in the training window.",
    ),
    "min_holdout_addtocart": Param(
        10,
        title="Minimum holdout add-to-carts",
        type="integer",
        minimum=0,
        description="Fewest add-to-cart events in the holdout.",
    ),
    "max_staleness_days": Param(
        1.0,
        title="Maximum staleness (days)",
        type="number",
        exclusiveMinimum=0,
        description="Oldest the newest event may be before the interval end (days).",
    ),
}


def notify_failure(context: Any) -> None:
    """On-failure callback: log the failure and post it to RECSYS_ALERT_WEBHOOK_URL if set."""
    from recsys.config import Settings
    from recsys.notify import post_alert

    ti = context["ti"]
    post_alert(
        Settings().alert_webhook_url,
        {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "try_number": ti.try_number,
            "error": str(context.get("exception")),
        },
    )


def _settings() -> Settings:
    from recsys.config import Settings

    return Settings()


def _workdir(run_id: str) -> str:
    """The run folder of a DAG run: one per run id, so a re-run of it overwrites it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return str((_settings().var_dir / "airflow-runs" / name).resolve())


def _requested_end_ms(context: Any) -> int | None:
    """The interval end asked for: the param, else a scheduled run's data interval end, else
    None (the newest stored event + 1 ms)."""
    requested = context["params"].get("interval_end")
    if requested:
        when = datetime.fromisoformat(requested)
        return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)
    run = context["dag_run"]
    # run_type is a str enum: compare values (its str() is the member's name)
    if run.run_type in ("scheduled", "backfill") and run.data_interval_end is not None:
        return int(run.data_interval_end.timestamp() * 1000)
    return None


def _config(params: dict[str, Any], end_ms: int | None) -> PipelineConfig:
    """The run's configuration from the DAG params (validated: a bad value fails here)."""
    from recsys.pipeline.config import DEFAULT_LIGHTFM, PipelineConfig

    lightfm = DEFAULT_LIGHTFM | {k: params[k] for k in ("epochs", "no_components", "learning_rate")}
    return PipelineConfig(
        end_ms=end_ms,
        window_days=params["window_days"],
        holdout_days=params["holdout_days"],
        validation_days=params["validation_days"],
        trials=params["trials"],
        timeout_s=params["timeout_s"],
        lightfm=lightfm,
        candidates=params["candidates"],
        backtest_windows=params["backtest_windows"],
        ranker_windows=params["ranker_windows"],
        ranker={"iterations": params["ranker_iterations"]},
        min_lift=params["min_lift"],
        deterministic=params["deterministic"],
        promote=params["promote"],
        min_events=params["min_events"],
        min_holdout_addtocart=params["min_holdout_addtocart"],
        max_staleness_days=params["max_staleness_days"],
        progress=False,
    )


@dag(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # runs share the registry: one promotion at a time
    dagrun_timeout=timedelta(hours=6),
    params=PARAMS,
    doc_md=__doc__,
    tags=["recsys", "training"],
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": notify_failure,
    },
)
def retrain_recommender() -> None:
    """The DAG: see the module docstring (shown as the DAG's docs in the UI)."""

    @task
    def check_store() -> dict[str, Any]:
        """#### Check the event store
        Resolves the interval end and checks the store: schema, events within
        `max_staleness_days` of the interval end, `min_events` in the training window,
        `min_holdout_addtocart` in the holdout. A failure here is final (no retry): nothing
        is trained or registered. Returns the numbers checked."""
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException
        from pydantic import ValidationError

        from recsys.exceptions import DataCheckError
        from recsys.pipeline import check

        context = get_current_context()
        try:
            report = check(_config(context["params"], _requested_end_ms(context)), _settings())
        except (DataCheckError, ValidationError) as exc:
            raise AirflowFailException(str(exc)) from exc
        return {**asdict(report), "staleness_days": report.staleness_days}

    @task
    def prepare(checked: dict[str, Any]) -> str:
        """#### Prepare
        Snapshots the training window (events, category/availability rows, category tree)
        from the event store into the run folder, splits it in time and opens the MLflow
        run. Returns the run folder."""
        from recsys.pipeline import prepare as prepare_stage

        context = get_current_context()
        workdir = _workdir(context["run_id"])
        prepare_stage(
            _config(context["params"], checked["end_ms"]),
            workdir,
            _settings(),
            tags={"airflow_dag_id": DAG_ID, "airflow_run_id": context["run_id"]},
        )
        return workdir

    @task
    def tune(workdir: str) -> dict[str, Any]:
        """#### Tune
        Optuna search of LightFM parameters and the served policy on the validation window
        (`trials` = 0 keeps the params given). Returns the chosen configuration."""
        from recsys.pipeline import tune as tune_stage

        return tune_stage(workdir, _settings())

    @task
    def fit_and_evaluate(workdir: str) -> dict[str, float]:
        """#### Fit and evaluate
        Fits the chosen configuration up to the holdout start and scores it and every
        baseline on the holdout as served. Returns the candidate's gate metrics."""
        from recsys.pipeline import fit_and_evaluate as evaluate_stage

        return evaluate_stage(workdir, _settings())

    @task
    def decide(workdir: str) -> dict[str, Any]:
        """#### Decide (the gate)
        The candidate must beat every baseline and the champion's configuration on the same
        holdout; a champion whose model saw the holdout is refitted up to its start first.
        Returns the decision and its reason."""
        from dataclasses import asdict

        from recsys.pipeline import decide as decide_stage

        return asdict(decide_stage(workdir, _settings()))

    @task
    def refit(workdir: str) -> int:
        """#### Refit on every event
        The chosen configuration refitted on every event up to the interval end: the model
        that is registered and served. Returns its cutoff (epoch ms)."""
        from recsys.pipeline import RunFolder
        from recsys.pipeline import refit as refit_stage

        refit_stage(workdir, _settings())
        return RunFolder(workdir).split.end_ms

    @task
    def register(workdir: str) -> str:
        """#### Register
        Logs the refitted bundle to the run and registers a new version of the model.
        Returns the version."""
        from recsys.pipeline import register as register_stage

        return register_stage(workdir, _settings())

    @task
    def promote(workdir: str) -> dict[str, str]:
        """#### Promote
        Moves `champion` to the new version when the gate passed (and `promote` is on),
        else `challenger`; the reason is tagged on the version and the run."""
        from recsys.pipeline import RunFolder
        from recsys.pipeline import promote as promote_stage

        promote_stage(workdir, _settings())
        return RunFolder(workdir).read("promoted.json")

    @task
    def reload_service(promoted: dict[str, str]) -> dict[str, Any] | None:
        """#### Reload the service
        `POST $RECSYS_SERVICE_URL/admin/reload` with `RECSYS_ADMIN_TOKEN` after a promotion
        (skipped otherwise). A service that is down or refuses is a logged warning, not a
        failure: it also polls the alias."""
        from airflow.sdk.exceptions import AirflowSkipException

        from recsys.config import CHAMPION_ALIAS
        from recsys.notify import request_reload

        if promoted["alias"] != CHAMPION_ALIAS:
            raise AirflowSkipException(f"version {promoted['version']} was not promoted")
        settings = _settings()
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        return request_reload(settings.service_url, token)

    # XComArgs stand for the values at run time (typed Any: mypy sees XComArg, not str)
    checked: Any = check_store()
    workdir: Any = prepare(checked)
    promoted: Any = promote(workdir)
    chain(
        workdir,
        tune(workdir),
        fit_and_evaluate(workdir),
        decide(workdir),
        refit(workdir),
        register(workdir),
        promoted,
        reload_service(promoted),
    )


retrain_recommender()
