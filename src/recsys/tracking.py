"""MLflow tracking and registry: the bundle as a pyfunc model, the quality gate, model download.

Only the MLflow client API is used here (``mlflow-skinny`` is enough), so the service can
import this module to fetch the champion without LightFM or the full MLflow server.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
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


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking store and make sure the experiment exists."""
    uri = settings.resolved_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(settings.experiment_name) is None:
        mlflow.create_experiment(
            settings.experiment_name, artifact_location=settings.resolved_artifact_root
        )
    mlflow.set_experiment(settings.experiment_name)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the quality gate."""

    promote: bool
    reason: str


def gate(
    candidate: tuple[float, ...],
    champion: tuple[float, ...] | None,
    baselines: dict[str, tuple[float, ...]],
    metrics: tuple[str, ...],
) -> GateDecision:
    """Promote only a model that beats the current champion and every baseline.

    Scores are tuples compared in order: the headline metric decides, the next one breaks an
    exact tie (small holdouts tie often on precision@5: hits are counts).

    >>> gate((0.10, 0.2), (0.08, 0.3), {"popular": (0.05, 0.1)}, ("p@5", "ndcg@5")).promote
    True
    >>> gate((0.10, 0.2), (0.12, 0.1), {"popular": (0.05, 0.1)}, ("p@5", "ndcg@5")).reason
    'p@5 0.1000 does not beat champion 0.1200'
    >>> gate((0.10, 0.3), None, {"recent": (0.10, 0.2)}, ("p@5", "ndcg@5")).reason
    'first model: p@5 0.1000 beats every baseline (ndcg@5 breaks a tie)'
    >>> gate((0.10, 0.2), None, {"recent": (0.10, 0.2)}, ("p@5", "ndcg@5")).promote
    False
    """

    def describe(other: tuple[float, ...], name: str) -> str:
        return f"{metrics[0]} {candidate[0]:.4f} does not beat {name} {other[0]:.4f}" + (
            f" ({', '.join(metrics[1:])} tie too)" if candidate[0] == other[0] else ""
        )

    def tie_note(others: list[tuple[float, ...]]) -> str:
        return f" ({metrics[1]} breaks a tie)" if any(o[0] == candidate[0] for o in others) else ""

    for name, value in baselines.items():
        if not candidate > value:
            return GateDecision(False, describe(value, f"baseline {name}"))
    note = tie_note(list(baselines.values()))
    if champion is None:
        return GateDecision(
            True, f"first model: {metrics[0]} {candidate[0]:.4f} beats every baseline{note}"
        )
    if not candidate > champion:
        return GateDecision(False, describe(champion, "champion"))
    note = tie_note([*baselines.values(), champion])
    return GateDecision(
        True,
        f"{metrics[0]} {candidate[0]:.4f} beats champion {champion[0]:.4f} and every baseline{note}",
    )


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
