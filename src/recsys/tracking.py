"""MLflow tracking and registry: the bundle as a pyfunc model, model download and cache.

Only the MLflow client API is used here (``mlflow-skinny`` is enough), so the service can
import this module to fetch the champion without LightFM or the full MLflow server.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from recsys.config import CHAMPION_ALIAS, Settings
from recsys.exceptions import ModelNotFoundError

log = logging.getLogger(__name__)

#: artifact key of the bundle folder inside the pyfunc model
BUNDLE_ARTIFACT = "bundle"
#: file in the cache folder naming the last bundle that loaded successfully
CACHE_POINTER = "LATEST"


#: experiment tag holding the experiment's kind, as the MLflow UI's kind selector writes it
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: the kind of a model-training experiment ("Machine learning" in the UI), not a GenAI one
TRAINING_KIND = "custom_model_development"
#: experiment (and run) tag the UI shows as the description
NOTE_TAG = "mlflow.note.content"
#: experiment tags ``<prefix><id>`` hold the runs table's saved views (MLflow >= 3.15)
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: id of the saved view sorted by the headline metric (``?viewStateShareKey=headline``)
HEADLINE_VIEW = "headline"
EXPERIMENT_NOTE = (
    "Training runs of the add-to-cart recommender: one run per `recsys train` / Airflow run. "
    "Each run is named after its served policy, LightFM loss and size, and training window; "
    "its Dataset inputs are the training window and the holdout. Compare runs by the headline "
    "`served_precision_at_5` (precision@5 on holdout add-to-carts of warm visitors) beside the "
    "baselines `recent.*` and `popular.*`; the saved view *Headline* sorts by it."
)


def runs_view(sort_by: str, columns: Sequence[str] = (), name: str = "Headline") -> dict[str, Any]:
    """A saved view of the runs table: the runs that logged metric ``sort_by``, sorted by it
    (descending), showing the ``columns`` (``metrics.`key```, ``params.`key``` ...).

    The filter leaves out the nested tuning trials (they log validation metrics only): the UI
    nests children under their parent only when runs are sorted by time.

    The envelope the MLflow UI stores under ``mlflow.sharedViewState.<id>``: ``name``,
    ``createdAt``/``updatedAt`` (epoch ms) and the view's ``state`` as a JSON string.

    >>> view = runs_view("served_precision_at_5", ["params.`policy`"])
    >>> json.loads(view["state"])["orderByKey"]
    'metrics.`served_precision_at_5`'
    """
    run_name, extra = "attributes.`Run Name`", ["attributes.`Dataset`", "attributes.`Models`"]
    state = {
        "orderByKey": f"metrics.`{sort_by}`",
        "orderByAsc": False,
        "searchFilter": f"metrics.{sort_by} >= 0",
        "selectedColumns": [*columns, *extra],
        # the run's name first and wide enough to read, then the chosen columns in order
        "columnOrder": [run_name, *columns, *extra],
        "columnWidths": {
            run_name: 360,
            extra[0]: 300,
            **{c: 150 for c in columns if c.startswith("metrics.")},
        },
    }
    now = int(time.time() * 1000)
    return {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}


def _describe_experiment(
    client: MlflowClient, experiment: Any, sort_by: str | None, columns: Sequence[str]
) -> None:
    """Make the experiment a training experiment with a description and a headline view.

    Tags are written only when they differ, so calling this for every stage costs one read.
    """
    tags = dict(experiment.tags)
    wanted = {EXPERIMENT_KIND_TAG: TRAINING_KIND, NOTE_TAG: EXPERIMENT_NOTE}
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    if sort_by is None:
        return
    key = VIEW_TAG_PREFIX + HEADLINE_VIEW
    view = runs_view(sort_by, columns)
    try:
        old = json.loads(tags[key])
        if old.get("state") == view["state"]:
            return
        view["createdAt"] = old.get("createdAt", view["createdAt"])
    except (KeyError, ValueError, AttributeError):
        pass
    client.set_experiment_tag(experiment.experiment_id, key, json.dumps(view))


def configure(
    settings: Settings, sort_by: str | None = None, columns: Sequence[str] = ()
) -> MlflowClient:
    """Point MLflow at the settings' tracking store and make sure the experiment exists.

    The experiment is (made) a model-training experiment with a description; with
    ``sort_by`` it also gets the saved runs view "Headline" sorted by that metric and
    showing ``columns`` (see :func:`runs_view` and :func:`experiment_url`).
    """
    uri = settings.resolved_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = mlflow.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        experiment_id = mlflow.create_experiment(
            settings.experiment_name,
            artifact_location=settings.resolved_artifact_root,
            tags={EXPERIMENT_KIND_TAG: TRAINING_KIND},
        )
        experiment = client.get_experiment(experiment_id)
    _describe_experiment(client, experiment, sort_by, columns)
    mlflow.set_experiment(settings.experiment_name)
    return client


def experiment_url(server_url: str, experiment_id: str, view: str | None = HEADLINE_VIEW) -> str:
    """The runs table of an experiment in the MLflow UI at ``server_url``, in the UI's
    machine-learning mode, opened on a saved view.

    The MLflow 3.17 UI picks GenAI or machine-learning pages with a switch kept in the
    browser (default GenAI) that ``workflowType`` in the URL overrides.

    >>> experiment_url("http://127.0.0.1:5000", "1")
    'http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=headline'
    """
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else "")
    return f"{server_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


class BundleModel(PythonModel):
    """Pyfunc wrapper: ``predict(DataFrame[user_id])`` -> top-k item ids per user.

    The ranking is the served one (``recsys.serving.Recommender`` with the bundle's policy).
    """

    def load_context(self, context: Any) -> None:
        from recsys.bundle import Bundle
        from recsys.names import DEFAULT_POLICY
        from recsys.serving import Recommender

        bundle = Bundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))
        self.recommender = Recommender(bundle, policy=bundle.metadata.get("policy", DEFAULT_POLICY))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        k = int((params or {}).get("k", 5))
        users = model_input["user_id"].astype("int64").to_numpy()
        recs = [self.recommender.recommend(int(u), k) for u in users]
        return pd.DataFrame(
            {
                "user_id": users,
                "item_ids": [r.item_ids for r in recs],
                "scores": [r.scores for r in recs],
                "source": [r.source for r in recs],
            }
        )


def log_bundle_model(bundle_dir: Path, model_name: str, name: str = "model") -> str:
    """Log ``bundle_dir`` as a pyfunc model in the active run and register a version.

    Returns the new registered version (a string, as MLflow reports it).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "user_id")]),
        params=ParamSchema([ParamSpec("k", "long", 5)]),
    )
    import recsys

    with tempfile.TemporaryDirectory() as tmp:
        # MLflow keeps the folder's own name under artifacts/: make it the one readers expect
        if bundle_dir.name != BUNDLE_ARTIFACT:
            bundle_dir = Path(shutil.copytree(bundle_dir, Path(tmp) / BUNDLE_ARTIFACT))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=BundleModel(),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            code_paths=[str(Path(recsys.__file__).parent)],
            signature=signature,
            registered_model_name=model_name,
            pip_requirements=["mlflow-skinny==3.17.2", "numpy", "pandas", "pydantic-settings"],
        )
    return str(info.registered_model_version)


def parse_model_uri(model_uri: str) -> tuple[str, str, str] | None:
    """Split ``models:/name@alias`` or ``models:/name/version``; None for a local path.

    >>> parse_model_uri("models:/recsys-lightfm@champion")
    ('recsys-lightfm', 'alias', 'champion')
    >>> parse_model_uri("models:/recsys-lightfm/3")
    ('recsys-lightfm', 'version', '3')
    >>> parse_model_uri("var/bundle") is None
    True
    """
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/").strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, "alias", alias
    name, _, version = ref.rpartition("/")
    if not name or not version.isdigit():
        raise ModelNotFoundError(f"model URI {model_uri!r} is not models:/NAME@ALIAS or NAME/N")
    return name, "version", version


def resolve_version(model_uri: str, tracking_uri: str | None = None) -> str | None:
    """The registered version a ``models:/`` URI points at now (None for a local path).

    Raises ModelNotFoundError when the registry cannot be reached or has no such model.
    """
    parsed = parse_model_uri(model_uri)
    if parsed is None:
        return None
    name, kind, ref = parsed
    if kind == "version":
        return ref
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        return str(client.get_model_version_by_alias(name, ref).version)
    except MlflowException as exc:
        raise ModelNotFoundError(f"cannot resolve {model_uri}: {exc}") from exc
    except Exception as exc:  # connection errors surface as many types; all mean "unreachable"
        raise ModelNotFoundError(f"registry unreachable for {model_uri}: {exc}") from exc


def _local_version(bundle_dir: Path) -> str:
    meta = bundle_dir / "metadata.json"
    return (
        str(json.loads(meta.read_text()).get("model_version", "local"))
        if meta.is_file()
        else "local"
    )


def download_bundle(
    model_uri: str, cache_dir: Path, tracking_uri: str | None = None
) -> tuple[Path, str]:
    """Fetch the bundle behind ``model_uri`` into ``cache_dir`` (once per version).

    A local folder is returned as it is. Returns ``(bundle folder, model version)``.
    """
    parsed = parse_model_uri(model_uri)
    if parsed is None:
        path = Path(model_uri)
        if not path.is_dir():
            raise ModelNotFoundError(f"no bundle folder at {model_uri!r}")
        return path, _local_version(path)
    name = parsed[0]
    version = resolve_version(model_uri, tracking_uri)
    assert version is not None
    target = cache_dir / f"{name}-v{version}"
    if not (target / BUNDLE_ARTIFACT).is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            try:
                client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
                source = client.get_model_version_download_uri(name, version)
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/artifacts/{BUNDLE_ARTIFACT}",
                    dst_path=str(Path(tmp) / "staged"),
                    tracking_uri=tracking_uri,
                )
            except Exception as exc:  # any failure here means "this version is not usable"
                raise ModelNotFoundError(f"cannot download {name} v{version}: {exc}") from exc
            staged = Path(tmp) / "staged"
            if not (staged / BUNDLE_ARTIFACT).is_dir():
                raise ModelNotFoundError(f"{name} v{version} holds no {BUNDLE_ARTIFACT} artifact")
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)  # atomic within the cache folder
    return target / BUNDLE_ARTIFACT, version


def remember_cached(cache_dir: Path, bundle_dir: Path, version: str) -> None:
    """Record ``bundle_dir`` as the last bundle that loaded, for starts without a registry."""
    pointer = cache_dir / CACHE_POINTER
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(f"{version}\n{bundle_dir.resolve()}\n")
    tmp.replace(pointer)


def latest_cached(cache_dir: Path) -> tuple[Path, str] | None:
    """The last bundle recorded by :func:`remember_cached`, if it is still on disk."""
    pointer = cache_dir / CACHE_POINTER
    if not pointer.is_file():
        return None
    version, path = pointer.read_text().splitlines()[:2]
    return (Path(path), version) if Path(path).is_dir() else None


def champion_version(client: MlflowClient, model_name: str) -> str | None:
    """The version holding the champion alias, or None when there is none yet."""
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException:
        return None
