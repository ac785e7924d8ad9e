"""Resolve, download, cache and load the served model (blocking; run in a worker thread).

A ``models:/`` URI is fetched through :mod:`recsys.tracking` into the cache folder, and a
pointer to the last bundle that loaded is kept there, so a restart while the registry is
down serves that bundle. Any other URI is a local bundle folder, loaded in place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from fastapi_service.settings import ServiceSettings
from fastapi_service.state import LoadedModel
from recsys.bundle import Bundle
from recsys.names import DEFAULT_POLICY
from recsys.serving import Recommender

log = logging.getLogger(__name__)


def is_registry_uri(model_uri: str) -> bool:
    """True for ``models:/...`` URIs, False for local bundle folders."""
    return model_uri.startswith("models:/")


def _tracking(settings: ServiceSettings) -> ModuleType:
    """:mod:`recsys.tracking`, with MLflow pointed at the settings' tracking URI.

    MLflow is imported only when a registry is used. The URI is also set process-wide as
    the registry URI: ``models:/`` downloads resolve through the registry URI, which would
    otherwise default to a local store instead of ``settings.tracking_uri``.
    """
    from recsys import tracking

    if settings.tracking_uri:
        import mlflow

        if mlflow.get_registry_uri() != settings.tracking_uri:
            mlflow.set_tracking_uri(settings.tracking_uri)
            mlflow.set_registry_uri(settings.tracking_uri)
    return tracking


def resolve_version(settings: ServiceSettings) -> str | None:
    """Registered version the model URI points at now; None for a local folder.

    Raises
    ------
    recsys.exceptions.ModelNotFoundError
        When the registry cannot be reached or has no such model/alias.
    """
    if not is_registry_uri(settings.model_uri):
        return None
    return _tracking(settings).resolve_version(settings.model_uri, settings.tracking_uri)


def load_model(settings: ServiceSettings, version: str | None = None) -> LoadedModel:
    """Fetch (once per version) and load the model named by ``settings.model_uri``, or that
    model's registered ``version`` when the caller already resolved the alias.

    The bundle must also answer a warm and a cold request before it is returned, so a
    bundle that loads but cannot serve never replaces a working one.

    Raises
    ------
    Exception
        Whatever the registry, the download, the bundle or the smoke test raised.
    """
    uri = settings.model_uri
    if is_registry_uri(uri):
        tracking = _tracking(settings)
        if version is not None:  # no second alias lookup, and exactly the version resolved
            uri = f"models:/{tracking.parse_model_uri(uri)[0]}/{version}"
        path, version = tracking.download_bundle(uri, settings.cache_dir, settings.tracking_uri)
        model = _build(settings, path, version, "registry")
        tracking.remember_cached(settings.cache_dir, path, version)
        return model
    path = Path(uri)
    bundle = Bundle.load(path)
    return _build(
        settings, path, str(bundle.metadata.get("model_version", "local")), "local", bundle
    )


def load_cached(settings: ServiceSettings) -> LoadedModel | None:
    """The last bundle that loaded from the registry, or None when there is none."""
    if not is_registry_uri(settings.model_uri):
        return None
    cached = _tracking(settings).latest_cached(settings.cache_dir)
    if cached is None:
        return None
    path, version = cached
    return _build(settings, path, version, "cache")


def _build(
    settings: ServiceSettings,
    path: Path,
    version: str,
    source: str,
    bundle: Bundle | None = None,
) -> LoadedModel:
    bundle = Bundle.load(path) if bundle is None else bundle
    policy = settings.policy or str(bundle.metadata.get("policy") or DEFAULT_POLICY)
    recommender = Recommender(bundle, policy=policy, candidates=settings.candidates)
    recommender.warm_up()  # build the index here, in the loader thread, not in a request
    _smoke_test(bundle, recommender)
    log.info("loaded model version %s (%s) from %s, policy %s", version, source, path, policy)
    return LoadedModel(
        bundle=bundle,
        recommender=recommender,
        version=version,
        uri=settings.model_uri,
        path=path,
        source=source,
        policy=policy,
    )


def _smoke_test(bundle: Bundle, recommender: Recommender) -> None:
    # (warm_up already answered the first known visitor) an id the model does not know:
    # one past the largest (or 0 if that one is taken)
    cold = int(bundle.user_ids[-1]) + 1 if bundle.n_users else 0
    cold = cold if cold < 2**63 else 0
    recommender.recommend(cold, 5)
    if bundle.n_items:
        recommender.recommend(cold, 5, session_items=[int(bundle.item_ids[0])])
