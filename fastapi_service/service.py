"""The service object: serves recommendations, ingests events, reloads the model.

Routes are thin wrappers around :class:`Service`; all mutable state lives in it.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math
import secrets
import time
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from fastapi_service.loader import is_registry_uri, load_cached, load_model, resolve_version
from fastapi_service.metrics import ServiceMetrics
from fastapi_service.schemas import Event, EventsAccepted
from fastapi_service.settings import ServiceSettings
from fastapi_service.state import (
    ExposureBuffer,
    LoadedModel,
    ModelState,
    OnlineHistory,
)
from recsys import columns as C
from recsys.exceptions import DataValidationError

log = logging.getLogger("fastapi_service")

#: this service runs no experiment yet: every visitor gets the control variant
VARIANT = "control"


class ReloadError(Exception):
    """A reload did not produce a servable model; the previous model keeps serving."""


class Service:
    """Everything one app instance holds: settings, model state, histories, metrics, store."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.state = ModelState()
        self.metrics = ServiceMetrics()
        self.history = OnlineHistory(settings.history_visitors, settings.history_items)
        self.exposures = ExposureBuffer(settings.exposure_buffer)
        self.store: Any = None
        self.store_error: str | None = None
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        # request ids: a random per-process prefix and a counter, 32 hex digits like a uuid4
        # hex but without the os.urandom call per request; unique across restarts/processes
        self._request_prefix = secrets.token_hex(8)
        self._request_numbers = itertools.count()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the event store and start loading the model and the background loops.

        Returns at once: the model loads in the background and readiness says when it is in.
        """
        await run_in_threadpool(self._open_store)
        self._tasks = [
            asyncio.create_task(self._initial_load(), name="initial-load"),
            asyncio.create_task(self._flush_forever(), name="exposure-flush"),
        ]

    async def stop(self) -> None:
        """Cancel the background loops and write the buffered exposures."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush_exposures()

    def _open_store(self) -> None:
        from recsys.data.store import EventStore, safe_url

        url = self.settings.db_url
        try:
            store = EventStore(url)
            store.create_schema()  # also creates the folder of a SQLite file
        except Exception as exc:
            # the service still recommends; POST /events answers 503 until a restart
            self.store_error = f"{type(exc).__name__}: {exc}"
            log.error("event store %s unavailable: %s", safe_url(url), self.store_error)
            return
        self.store = store

    async def _initial_load(self) -> None:
        try:
            await self.reload("startup")
        except ReloadError as exc:
            try:
                cached = await run_in_threadpool(load_cached, self.settings)
            except Exception as cache_exc:
                log.error("cached model unusable: %s", cache_exc)
                cached = None
            if cached is None:
                log.error("no model to serve (%s); not ready", exc)
            else:
                self._serve(cached)
                log.warning(
                    "serving cached model version %s from %s: %s",
                    cached.version,
                    cached.path,
                    exc,
                )
        if self.settings.poll_interval_s > 0:
            await self._poll_forever()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.reload("poll")
            except ReloadError:
                pass  # logged and counted by reload(); the current model keeps serving
            except Exception:
                log.exception("model poll failed")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.exposure_flush_s)
            await self.flush_exposures()

    # ------------------------------------------------------------------ model
    async def reload(self, trigger: str, force: bool = False) -> tuple[str, LoadedModel]:
        """Load the model the URI points at now and serve it, unless nothing changed.

        Parameters
        ----------
        trigger
            ``startup``, ``poll`` or ``admin`` (metrics label).
        force
            Reload even if the registry still points at the served version.

        Returns
        -------
        tuple
            ``("reloaded" | "unchanged", served model)``.

        Raises
        ------
        ReloadError
            When the registry or the new bundle fails; the served model is kept.
        """
        async with self._reload_lock:
            current = self.state.current
            version = None
            if is_registry_uri(self.settings.model_uri):
                try:
                    version = await run_in_threadpool(resolve_version, self.settings)
                except Exception as exc:
                    self._set_reachable(False)
                    self.state.last_error = f"registry lookup failed: {exc}"
                    if trigger == "poll" and current is not None:
                        log.warning(
                            "%s; still serving version %s", self.state.last_error, current.version
                        )
                        return "unchanged", current
                    return self._fail(trigger, self.state.last_error, exc)
                self._set_reachable(True)
                if current is not None and not force:
                    if version == current.version:
                        return self._unchanged(trigger, current)
                    if trigger == "poll" and version == self.state.failed_version:
                        return "unchanged", current  # already failed; wait for the alias to move
            elif trigger == "poll" and current is not None:
                return "unchanged", current  # a local folder is reloaded on demand only
            try:
                model = await run_in_threadpool(load_model, self.settings, version)
            except Exception as exc:
                self.state.failed_version = version
                what = f"version {version}" if version else self.settings.model_uri
                return self._fail(trigger, f"loading {what} failed: {exc}", exc)
            self._serve(model)
            self.metrics.reloads.labels(trigger=trigger, outcome="success").inc()
            return "reloaded", model

    def _unchanged(self, trigger: str, current: LoadedModel) -> tuple[str, LoadedModel]:
        if trigger != "poll":  # polls that find nothing new would drown the other outcomes
            self.metrics.reloads.labels(trigger=trigger, outcome="unchanged").inc()
        return "unchanged", current

    def _fail(self, trigger: str, message: str, exc: Exception) -> Any:
        self.metrics.reloads.labels(trigger=trigger, outcome="failure").inc()
        self.state.last_error = message
        serving = self.state.current.version if self.state.current else None
        log.error("%s reload failed, serving %s: %s", trigger, serving or "nothing", message)
        raise ReloadError(message) from exc

    def _set_reachable(self, reachable: bool) -> None:
        self.state.registry_reachable = reachable
        self.metrics.registry_reachable.set(1 if reachable else 0)

    def _serve(self, model: LoadedModel) -> None:
        error = self.state.last_error
        previous = self.state.swap(model)
        if model.source == "cache":
            self._set_reachable(False)
            self.state.last_error = f"serving the cached bundle: {error}"
        self.metrics.set_model(
            model.version, model.source, model.loaded_at, trained_at(model.bundle.metadata)
        )
        log.info(
            "serving model version %s (%s), previously %s",
            model.version,
            model.source,
            previous.version if previous else "none",
        )
        del previous
        freeze_heap()

    # ------------------------------------------------------------------ requests
    def recommend(self, user_id: int, k: int) -> dict[str, Any]:
        """Top-``k`` items for a visitor, with the visitor's posted events taken into account.

        Returns the :class:`~fastapi_service.schemas.RecommendationResponse` fields as a plain
        dict (JSON-ready; a NaN score would be written as null): building pydantic objects per
        request would cost more than the ranking itself.
        """
        model = self.state.current  # one read: a reload cannot change the model under us
        if model is None:
            raise HTTPException(503, "no model is loaded yet; see /health/ready")
        items, bought = self.history.get(user_id)
        rec = model.recommender.recommend(user_id, k, items, bought)
        self.metrics.observe_recommendation(rec.source, VARIANT, rec.scores)
        request_id = f"{self._request_prefix}{next(self._request_numbers):016x}"
        exposure = (
            request_id,
            int(time.time() * 1000),
            user_id,
            self.settings.experiment,
            VARIANT,
            model.version,
            ",".join(map(str, rec.item_ids)),
        )
        if self.exposures.add(exposure):
            self.metrics.exposures_dropped.inc()
        return {
            "user_id": user_id,
            "recommendations": rec.item_ids,
            "items": [
                {"item_id": i, "score": s, "reason": r}
                for i, s, r in zip(rec.item_ids, rec.scores, rec.reasons, strict=True)
            ],
            "source": rec.source,
            "model_version": model.version,
            "variant": VARIANT,
            "request_id": request_id,
        }

    async def ingest(self, events: list[Event]) -> EventsAccepted:
        """Apply events to the online history and write them to the event store."""
        limit = self.settings.max_batch
        if len(events) > limit:
            raise HTTPException(
                413, f"batch of {len(events)} events is over the limit of {limit} (max_batch)"
            )
        if self.store is None:
            raise HTTPException(503, f"event store unavailable: {self.store_error}")
        now_ms = int(time.time() * 1000)
        stamps = [now_ms if e.timestamp is None else e.timestamp for e in events]
        self.history.add(
            (t, e.visitorid, e.itemid, e.event) for t, e in zip(stamps, events, strict=True)
        )
        self.metrics.history_visitors.set(len(self.history))
        frame = events_frame(events, stamps)
        try:
            stored = await run_in_threadpool(self.store.append_events, frame)
        except DataValidationError as exc:  # the schema should have caught it; still the client's
            raise HTTPException(422, f"event rejected by the store: {exc}") from exc
        except Exception as exc:
            self.metrics.event_store_errors.labels(table="events").inc()
            log.error("writing %d events failed: %s", len(events), exc)
            raise HTTPException(
                503,
                "event store unavailable; the events were applied to recommendations "
                "but not stored, retry later",
            ) from exc
        for event_type, count in Counter(e.event for e in events).items():
            self.metrics.events.labels(event=event_type).inc(count)
        return EventsAccepted(received=len(events), stored=int(stored))

    async def flush_exposures(self) -> None:
        """Write buffered exposures to the store in one batch (dropped if the store fails)."""
        rows = self.exposures.drain()
        if not rows:
            return
        if self.store is None:
            self.metrics.exposures_dropped.inc(len(rows))
            return
        try:
            await run_in_threadpool(self._write_exposures, rows)
        except Exception as exc:
            self.metrics.event_store_errors.labels(table="exposures").inc()
            self.metrics.exposures_dropped.inc(len(rows))
            log.error("writing %d exposures failed: %s", len(rows), exc)

    def _write_exposures(self, rows: list[tuple]) -> None:
        # in a worker thread; plain tuples straight to the driver's executemany (no pandas,
        # no SQLAlchemy per-row work): the thread holds the GIL only a few us per row
        self.store.log_exposures(rows)


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


def events_frame(events: list[Event], stamps: list[int]) -> Any:
    """Events as a DataFrame for :meth:`recsys.data.store.EventStore.append_events`."""
    import pandas as pd

    return pd.DataFrame(
        {
            C.TIMESTAMP: np.array(stamps, dtype=np.int64),
            C.VISITOR: np.array([e.visitorid for e in events], dtype=np.int64),
            C.EVENT: pd.Categorical([e.event for e in events], categories=list(C.EVENT_TYPES)),
            C.ITEM: np.array([e.itemid for e in events], dtype=np.int64),
            C.TRANSACTION: pd.array([e.transactionid for e in events], dtype="Int64"),
            C.REQUEST_ID: pd.array([e.request_id for e in events], dtype="string"),
        }
    )


def trained_at(metadata: dict[str, Any]) -> float | None:
    """Unix time the bundle was trained (ISO text or epoch seconds/ms), None when unknown."""
    value = metadata.get("trained_at")
    if isinstance(value, int | float) and math.isfinite(value):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None
