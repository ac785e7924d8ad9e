"""The served model's lifecycle: resolve, download, cache, load, poll, reload and swap.

A ``models:/`` URI is resolved and fetched through :mod:`recsys.tracking` into the cache
folder, with a pointer to the last bundle that loaded, so a restart while the registry is
down serves that bundle. Any other URI is a local bundle folder, loaded in place.

The served model is one immutable :class:`LoadedModel` in :attr:`ModelManager.current`;
swapping it is a single attribute assignment (atomic in CPython), and a request that already
read it keeps using its model until it finishes, so a reload never breaks a request in flight.
Blocking work (registry calls, downloads, loading, index building) runs in worker threads.

With A/B experiments the loaded model also carries one :class:`Arm` per variant: the
champion, the ``challenger`` alias or a pinned version, each under its policy. Every distinct
version is loaded once, with one :class:`~recsys.serving.ItemSearch`, and shared by the arms
that use it (a ``popular`` arm is a Recommender over an already loaded bundle: a few arrays
of catalogue length); arms of the same version and policy share one Recommender. A reload
resolves every alias again and swaps the champion and the arms together.

Why one module of this size: the lifecycle is one state machine (resolve -> fetch -> load ->
swap, for the champion and every arm) whose steps share the cache layout and the current
model.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NoReturn

from starlette.concurrency import run_in_threadpool

from fastapi_service.errors import ModelNotReady, ReloadFailed
from fastapi_service.metrics import ServiceMetrics
from fastapi_service.settings import ServiceSettings
from recsys.abtest import Assignment, Experiment, model_references
from recsys.bundle import Bundle
from recsys.config import CHAMPION_ALIAS
from recsys.data.schema import MAX_ID
from recsys.exceptions import ConfigurationError, ModelNotFoundError
from recsys.names import DEFAULT_POLICY, Policy
from recsys.serving import ItemSearch, Recommender

log = logging.getLogger(__name__)

#: where a served model came from
ModelSource = Literal["registry", "cache", "local"]
#: what asked for a (re)load; a metrics label
Trigger = Literal["startup", "poll", "admin"]


@dataclass(frozen=True)
class Arm:
    """What one experiment variant serves: a Recommender and the model version behind it."""

    recommender: Recommender
    version: str
    policy: Policy


@dataclass(frozen=True)
class LoadedModel:
    """A bundle ready to serve, with where it came from, and the experiment arms over it."""

    bundle: Bundle
    recommender: Recommender
    version: str
    uri: str
    path: Path
    source: ModelSource
    policy: Policy
    loaded_at: float = field(default_factory=time.time)
    #: (experiment, variant) -> its arm; empty without experiments (or while they are paused)
    arms: Mapping[Assignment, Arm] = field(default_factory=dict)
    #: version of every model reference of the arms other than the champion
    references: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reload:
    """What one reload did: ``model`` serves now, ``previous`` served when it started."""

    status: Literal["reloaded", "unchanged"]
    model: LoadedModel
    previous: LoadedModel | None


REGISTRY_UNREACHABLE = "registry_unreachable"
LOAD_FAILED = "model_load_failed"
SERVING_CACHE = "serving_cache"
#: the model's problems as readiness tells clients: stable code -> message (details: the log)
PROBLEMS = {
    REGISTRY_UNREACHABLE: "the model registry cannot be reached",
    LOAD_FAILED: "loading the model failed; see the service log",
    SERVING_CACHE: "serving the cached bundle: the model registry cannot be reached",
}


class ModelManager:
    """Owner of the served model and of the registry status that readiness reports.

    Parameters
    ----------
    settings
        Model URI, tracking URI, cache folder, policy, candidates and poll interval.
    metrics
        Where reload outcomes, polls, registry reachability and the model gauges go.
    experiments
        Validated A/B experiments whose arms are loaded beside the champion.

    Raises
    ------
    ConfigurationError
        When a variant names a registry alias or version but the model URI is a local folder.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        experiments: Sequence[Experiment] = (),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.experiments = tuple(experiments)
        check_servable(settings, self.experiments)
        #: the served model; None until one loads
        self.current: LoadedModel | None = None
        #: whether the last registry lookup succeeded; None while no registry was asked
        self.registry_reachable: bool | None = None
        #: the last problem, for the log (may hold paths and driver errors)
        self.last_error: str | None = None
        #: its stable code for clients (a key of PROBLEMS; None: no problem)
        self.problem: str | None = None
        #: registry version whose load failed; polling does not retry it until the alias moves
        self._failed_version: str | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def served(self) -> LoadedModel:
        """The served model.

        Raises
        ------
        ModelNotReady
            While no model is loaded.
        """
        model = self.current  # one read: a reload cannot change the model under the caller
        if model is None:
            raise ModelNotReady("no model is loaded yet; see /health/ready")
        return model

    async def start(self) -> None:
        """Load the model, then poll the alias, in the background; returns at once.

        Readiness (``current`` not None) says when a model is in.
        """
        self._task = asyncio.create_task(self._run(), name="model-manager")

    async def stop(self) -> None:
        """Cancel the background load and polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        startup = asyncio.create_task(self.reload("startup"), name="startup-reload")
        wait = (
            self.settings.registry_timeout_s if is_registry_uri(self.settings.model_uri) else None
        )
        done, _ = await asyncio.wait({startup}, timeout=wait)
        if not done:  # MLflow's own retries take minutes on a dead or silent registry
            self.last_error = f"registry gave no answer within {wait:g} s (registry_timeout_s)"
            await self._serve_cache(self.last_error)  # meanwhile; the startup reload goes on
        try:
            await startup
        except ReloadFailed as exc:
            if self.current is None:
                await self._serve_cache(str(exc))
                if self.current is None:
                    log.error("no model to serve (%s); not ready", exc)
        if self.settings.poll_interval_s > 0:
            await self._poll_forever()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            self.metrics.polls.inc()
            try:
                await self.reload("poll")
            except ReloadFailed:
                pass  # logged and counted by reload(); the current model keeps serving
            except Exception:  # the loop must outlive any surprise
                log.exception("model poll failed")

    async def reload(self, trigger: Trigger, force: bool = False) -> Reload:
        """Load the model the URI points at now and serve it, unless nothing changed.

        Parameters
        ----------
        trigger
            What asked for it (metrics label). A ``poll`` tolerates an unreachable registry
            while a model serves, never retries a version that failed and leaves a local
            folder alone.
        force
            Reload even if the registry still points at the served version.

        Returns
        -------
        Reload
            ``reloaded`` or ``unchanged``, with the served and the previous model.

        Raises
        ------
        ReloadFailed
            When the registry or the new bundle fails; the served model is kept.
        """
        async with self._lock:
            current = self.current
            version = None
            references: dict[str, str] = {}
            if is_registry_uri(self.settings.model_uri):
                try:
                    version, references = await run_in_threadpool(self._resolve)
                except Exception as exc:
                    self._set_reachable(False)
                    self.last_error = f"registry lookup failed: {exc}"
                    self.problem = REGISTRY_UNREACHABLE
                    if trigger == "poll" and current is not None:
                        log.warning(
                            "%s; still serving version %s", self.last_error, current.version
                        )
                        return Reload("unchanged", current, current)
                    self._fail(trigger, REGISTRY_UNREACHABLE, self.last_error, exc)
                self._set_reachable(True)
                if current is not None and not force:
                    if version == current.version and references == current.references:
                        if current.source == "cache":  # the registry is back, same version
                            self._serve(replace(current, source="registry"))
                        if trigger != "poll":  # unchanged polls would drown the other outcomes
                            self.metrics.reloads.labels(trigger=trigger, outcome="unchanged").inc()
                        return Reload("unchanged", current, current)
                    if trigger == "poll" and version == self._failed_version:
                        return Reload("unchanged", current, current)  # wait for the alias to move
            elif trigger == "poll" and current is not None:
                return Reload("unchanged", current, current)  # a folder reloads on demand only
            try:
                model = await run_in_threadpool(
                    load_model, self.settings, version, self.experiments, references, current
                )
            except Exception as exc:
                self._failed_version = version
                what = f"version {version}" if version else self.settings.model_uri
                self._fail(trigger, LOAD_FAILED, f"loading {what} failed: {exc}", exc)
            self._serve(model)
            self.metrics.reloads.labels(trigger=trigger, outcome="success").inc()
            return Reload("reloaded", model, current)

    def _resolve(self) -> tuple[str | None, dict[str, str]]:
        """The champion's version and the experiments' references, from the registry."""
        return resolve_version(self.settings), resolve_references(self.settings, self.experiments)

    def _fail(self, trigger: Trigger, problem: str, message: str, exc: Exception) -> NoReturn:
        self.metrics.reloads.labels(trigger=trigger, outcome="failure").inc()
        self.last_error, self.problem = message, problem
        serving = self.current.version if self.current else "nothing"
        log.error("%s reload failed, serving %s: %s", trigger, serving, message)
        raise ReloadFailed(f"{message}; still serving {serving}") from exc

    def _set_reachable(self, reachable: bool) -> None:
        self.registry_reachable = reachable
        self.metrics.registry_reachable.set(1 if reachable else 0)

    async def _serve_cache(self, why: str) -> None:
        """Serve the last bundle that loaded, if any and if nothing serves yet."""
        cached = await run_in_threadpool(self._load_cached)
        if cached is not None and self.current is None:
            self._serve(cached)
            log.warning(
                "serving cached model version %s from %s: %s", cached.version, cached.path, why
            )

    def _load_cached(self) -> LoadedModel | None:
        try:
            return load_cached(self.settings, self.experiments)
        except Exception as exc:
            log.error("cached model unusable: %s", exc)
            return None

    def _serve(self, model: LoadedModel) -> None:
        """Swap ``model`` in (the atomic assignment) and point the gauges at it."""
        error = self.last_error
        previous, self.current = self.current, model
        self._failed_version = None
        self.last_error, self.problem = None, None
        if model.source == "cache":
            self._set_reachable(False)
            self.last_error = f"serving the cached bundle: {error}"
            self.problem = SERVING_CACHE
        self.metrics.set_model(
            model.version,
            model.source,
            model.loaded_at,
            trained_at(model.bundle.metadata),
            catalogue_items=int(model.bundle.item_available.sum()),
        )
        log.info(
            "serving model version %s (%s), previously %s",
            model.version,
            model.source,
            previous.version if previous else "none",
        )
        del previous
        freeze_heap()


# ---------------------------------------------------------------------------- loading
# blocking functions: the manager runs them in worker threads


def is_registry_uri(model_uri: str) -> bool:
    """True for ``models:/...`` URIs, False for local bundle folders."""
    return model_uri.startswith("models:/")


def public_uri(model_uri: str) -> str:
    """The model URI as clients see it: a registry URI, never a local path.

    >>> public_uri("models:/recsys-lightfm@champion"), public_uri("/srv/bundle")
    ('models:/recsys-lightfm@champion', 'local bundle')
    """
    return model_uri if is_registry_uri(model_uri) else "local bundle"


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
    version: str = _tracking(settings).resolve_version(settings.model_uri, settings.tracking_uri)
    return version


def check_servable(settings: ServiceSettings, experiments: Sequence[Experiment]) -> None:
    """Fail early when a variant names a registry model the model URI cannot give.

    Raises
    ------
    ConfigurationError
        A variant names the challenger alias or a version while the URI is a local folder.
    """
    if is_registry_uri(settings.model_uri):
        return
    for experiment in experiments:
        for index, variant in enumerate(experiment.variants):
            if variant.model != CHAMPION_ALIAS:
                raise ConfigurationError(
                    f"{settings.experiments_file or 'experiments'}: experiment "
                    f"{experiment.name!r}: variants[{index}].model: {variant.model!r} needs a "
                    f"registry model URI (models:/...), but RECSYS_MODEL_URI is the local "
                    f"folder {settings.model_uri!r}"
                )


def resolve_references(
    settings: ServiceSettings, experiments: Sequence[Experiment]
) -> dict[str, str]:
    """Registered version of every model the experiments name besides the champion (an alias
    is looked up, a version number is itself)."""
    if not experiments:
        return {}
    tracking = _tracking(settings)
    name = tracking.parse_model_uri(settings.model_uri)[0]
    versions = {}
    for reference in sorted(model_references(experiments)):
        if reference.isdigit():
            versions[reference] = reference
        else:
            versions[reference] = str(
                tracking.resolve_version(f"models:/{name}@{reference}", settings.tracking_uri)
            )
    return versions


def load_model(
    settings: ServiceSettings,
    version: str | None = None,
    experiments: Sequence[Experiment] = (),
    references: Mapping[str, str] | None = None,
    previous: LoadedModel | None = None,
) -> LoadedModel:
    """Fetch (once per version) and load the model named by ``settings.model_uri``, or that
    model's registered ``version`` when the caller already resolved the alias, with the arms
    of ``experiments`` (their other models at the ``references`` resolved by the caller).

    The bundle must also answer a warm and a cold request before it is returned, so a
    bundle that loads but cannot serve never replaces a working one. Bundles of the
    ``previous`` model's arms are reused when their version is still needed.

    Raises
    ------
    Exception
        Whatever the registry, the download, the bundle or the smoke test raised.
    """
    uri = settings.model_uri
    if is_registry_uri(uri):
        tracking = _tracking(settings)
        name = tracking.parse_model_uri(uri)[0]
        if version is not None:  # no second alias lookup, and exactly the version resolved
            uri = f"models:/{name}/{version}"
        path, version = tracking.download_bundle(uri, settings.cache_dir, settings.tracking_uri)
        refs = (
            dict(references)
            if references is not None
            else resolve_references(settings, experiments)
        )

        def fetch(number: str) -> Bundle:
            folder, _ = tracking.download_bundle(
                f"models:/{name}/{number}", settings.cache_dir, settings.tracking_uri
            )
            return Bundle.load(folder)

        model = _build(
            settings, path, str(version), "registry", None, experiments, refs, fetch, previous
        )
        tracking.remember_cached(settings.cache_dir, path, version)
        return model
    path = Path(uri)
    bundle = Bundle.load(path)
    return _build(
        settings,
        path,
        str(bundle.metadata.get("model_version", "local")),
        "local",
        bundle,
        experiments,
    )


def load_cached(
    settings: ServiceSettings, experiments: Sequence[Experiment] = ()
) -> LoadedModel | None:
    """The last bundle that loaded from the registry, or None when there is none.

    Without a registry only the champion's arms and pinned versions found in the cache can be
    served; when any other arm is missing the experiments pause (every visitor gets the
    champion, outside any experiment) rather than serve a variant that is not theirs.
    """
    if not is_registry_uri(settings.model_uri):
        return None
    tracking = _tracking(settings)
    cached = tracking.latest_cached(settings.cache_dir)
    if cached is None:
        return None
    path, version = cached
    name = tracking.parse_model_uri(settings.model_uri)[0]
    references = {r: r for r in model_references(experiments) if r.isdigit()}

    def fetch(number: str) -> Bundle:
        return Bundle.load(settings.cache_dir / f"{name}-v{number}" / "bundle")

    try:
        return _build(settings, path, version, "cache", None, experiments, references, fetch)
    except (KeyError, OSError, ModelNotFoundError) as exc:
        log.error("experiments paused: their models are not in the cache (%s)", exc)
        return _build(settings, path, version, "cache")


def _build(
    settings: ServiceSettings,
    path: Path,
    version: str,
    source: ModelSource,
    bundle: Bundle | None = None,
    experiments: Sequence[Experiment] = (),
    references: Mapping[str, str] | None = None,
    fetch: Callable[[str], Bundle] | None = None,
    previous: LoadedModel | None = None,
) -> LoadedModel:
    bundle = Bundle.load(path) if bundle is None else bundle
    policy = settings.policy or Policy(bundle.metadata.get("policy") or DEFAULT_POLICY)
    recommender = Recommender(bundle, policy=policy, candidates=settings.candidates)
    recommender.warm_up()  # build the index here, in the loader thread, not in a request
    _smoke_test(bundle, recommender)
    log.info("loaded model version %s (%s) from %s, policy %s", version, source, path, policy)
    references = dict(references or {})
    arms = _arms(settings, experiments, recommender, version, references, fetch, previous)
    return LoadedModel(
        bundle=bundle,
        recommender=recommender,
        version=version,
        uri=settings.model_uri,
        path=path,
        source=source,
        policy=policy,
        arms=arms,
        references=references,
    )


def _arms(
    settings: ServiceSettings,
    experiments: Sequence[Experiment],
    champion: Recommender,
    version: str,
    references: Mapping[str, str],
    fetch: Callable[[str], Bundle] | None,
    previous: LoadedModel | None,
) -> dict[Assignment, Arm]:
    """One arm per variant of every experiment not over yet, sharing bundles and indexes.

    Raises
    ------
    KeyError
        A variant names a model reference that ``references`` does not resolve.
    """
    # one (bundle, search) per version: the champion's, then the previous model's arms'
    loaded: dict[str, tuple[Bundle, ItemSearch]] = {version: (champion.bundle, champion.search)}
    if previous is not None:
        for arm in previous.arms.values():
            if arm.version != version:
                loaded.setdefault(arm.version, (arm.recommender.bundle, arm.recommender.search))
    recommenders: dict[tuple[str, Policy], Recommender] = {(version, champion.policy): champion}
    now = time.time()
    arms: dict[Assignment, Arm] = {}
    for experiment in experiments:
        if experiment.end_s <= now:
            continue  # over: never routed to again
        for variant in experiment.variants:
            number = version if variant.model == CHAMPION_ALIAS else references[variant.model]
            if number not in loaded:
                assert fetch is not None, "a registry reference without a way to fetch it"
                other = fetch(number)
                loaded[number] = (other, ItemSearch(other))
            bundle, search = loaded[number]
            policy = variant.policy or (
                champion.policy
                if number == version
                else Policy(bundle.metadata.get("policy") or DEFAULT_POLICY)
            )
            rec = recommenders.get((number, policy))
            if rec is None:
                rec = Recommender(
                    bundle, policy=policy, candidates=settings.candidates, search=search
                )
                rec.warm_up()
                _smoke_test(bundle, rec)
                recommenders[(number, policy)] = rec
                log.info(
                    "experiment %s variant %s: version %s, policy %s",
                    experiment.name,
                    variant.name,
                    number,
                    policy,
                )
            arms[(experiment.name, variant.name)] = Arm(rec, number, policy)
    return arms


def _smoke_test(bundle: Bundle, recommender: Recommender) -> None:
    # (warm_up already answered the first known visitor) an id the model does not know:
    # one past the largest (or 0 if that one is taken)
    cold = int(bundle.user_ids[-1]) + 1 if bundle.n_users else 0
    cold = cold if cold <= MAX_ID else 0
    recommender.recommend(cold, 5)
    if bundle.n_items:
        recommender.recommend(cold, 5, session_items=[int(bundle.item_ids[0])])


def trained_at(metadata: dict[str, Any]) -> float | None:
    """Unix time the bundle was trained (ISO text or epoch seconds/ms), None when unknown.

    >>> trained_at({"trained_at": "1970-01-02T00:00:00+00:00"})
    86400.0
    >>> trained_at({"trained_at": 1_700_000_000_000}), trained_at({})
    (1700000000.0, None)
    """
    value = metadata.get("trained_at")
    if isinstance(value, int | float) and math.isfinite(value):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def freeze_heap() -> None:
    """Move every object alive now (the served model, the app) to the permanent generation.

    Full collections would otherwise scan the ~100k long-lived objects of a loaded model
    and stall requests for tens of ms; frozen objects are never scanned. Unfreezing first
    lets the collection free what a previous model left in reference cycles; this one
    collection pauses once per model swap, not during serving.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
