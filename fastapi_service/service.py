"""Request handling: recommendations, event ingestion, the exposure log, A/B metrics.

:class:`Service` holds the request-side state (online histories, buffered exposures, the
event store) and reads the served model from the :class:`ModelManager`; it raises the
domain errors of :mod:`fastapi_service.errors` and knows nothing of HTTP.

With A/B experiments each request is routed (one sha256 of the visitor id) to its variant's
arm of the served model, and the response and exposure carry the experiment and variant; a
background task recomputes the per-variant business metrics from the event store.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import multiprocessing
import os
import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Literal

from starlette.concurrency import run_in_threadpool

from fastapi_service.errors import BatchTooLarge, EventRejected, StoreUnavailable
from fastapi_service.metrics import ServiceMetrics
from fastapi_service.model_manager import ModelManager
from fastapi_service.schemas import Event, EventsAccepted
from fastapi_service.settings import ServiceSettings
from fastapi_service.state import (
    ExposureBuffer,
    GroupCommit,
    History,
    LogCursor,
    OnlineHistory,
    RedisHistory,
)
from recsys import columns as C
from recsys.abtest import Experiment, Router
from recsys.data import schema
from recsys.exceptions import DataValidationError

if TYPE_CHECKING:
    from recsys.data.store import EventStore

log = logging.getLogger("fastapi_service")

#: the variant label of requests served outside any experiment
VARIANT = "control"
#: seconds between deletions of expired exposures (one indexed DELETE each)
RETENTION_CHECK_S = 600.0

#: niceness of the child process computing the A/B metrics (it reads every exposure of an
#: experiment: seconds of CPU a minute on a long one, which requests should not wait behind)
AB_METRICS_NICE = 10
#: the A/B metrics task waits at least this many times its last computation's duration
AB_METRICS_PAUSE_FACTOR = 10
#: seconds between the A/B metrics child's checks that the service is still its parent
AB_CHILD_WATCH_S = 1.0


def ab_child_start(nice: int, parent: int) -> None:
    """The A/B metrics child's start: a lower CPU priority, and an end with the service.

    A service stopped normally ends its child (:meth:`Service.stop`); one killed outright
    (``kill -9``, the OOM killer) cannot, and the child, which holds its own end of the task
    pipe, would wait forever. It checks its parent instead and exits once orphaned.
    """
    os.nice(nice)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(AB_CHILD_WATCH_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Service:
    """Answers requests with the manager's current model; owns histories, exposures, store.

    Parameters
    ----------
    settings
        Batch limit, history sizes, exposure buffer and flush interval, store URL.
    manager
        Owner of the served model (read once per request).
    metrics
        Where recommendations, events, exposures and store errors are counted.
    """

    def __init__(
        self, settings: ServiceSettings, manager: ModelManager, metrics: ServiceMetrics
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.metrics = metrics
        self.history: History
        if settings.online_state_url:
            self.history = RedisHistory(
                settings.online_state_url,
                settings.history_visitors,
                settings.history_items,
                settings.history_ttl_s,
                on_error=lambda op: metrics.online_state_errors.labels(operation=op).inc(),
                prefix=settings.online_state_prefix,
            )
        else:
            self.history = OnlineHistory(settings.history_visitors, settings.history_items)
        self.exposures = ExposureBuffer(settings.exposure_buffer)
        #: POST /events batches, written to the store in shared transactions (group commit)
        self.event_writer: GroupCommit[tuple[list[Event], list[int]], int] = GroupCommit(
            self._write_events, isolate=(DataValidationError,)
        )
        #: None only when the store URL is unusable (then POST /events is always 503)
        self.store: EventStore | None = None
        #: whether the last use of the store succeeded (readiness, a metric); None: not tried
        self.store_up: bool | None = None
        #: the in-process history's place in the store's event log (None: not rebuilt yet)
        self.history_log: LogCursor | None = None
        self._history_cutoff: int | None = None  # the served models' cutoff it was built for
        self._flush_task: asyncio.Task[None] | None = None
        self._history_task: asyncio.Task[None] | None = None
        self._ab_task: asyncio.Task[None] | None = None
        self._ab_pool: ProcessPoolExecutor | None = None  # see update_ab_metrics
        self.router = Router(manager.experiments)
        # request ids: a random per-process prefix and a counter, 32 hex digits like a uuid4
        # hex but without the os.urandom call per request; unique across restarts/processes
        self._request_prefix = secrets.token_hex(8)
        self._request_numbers = itertools.count()
        self._expired_at = -RETENTION_CHECK_S  # monotonic time of the last retention pass

    async def start(self) -> None:
        """Open the event store and start the exposure flush loop."""
        await run_in_threadpool(self._open_store)
        self._flush_task = asyncio.create_task(self._flush_forever(), name="exposure-flush")
        if isinstance(self.history, OnlineHistory):
            self._history_task = asyncio.create_task(self._sync_forever(), name="history-sync")
        if self.router and self.settings.ab_metrics_interval_s > 0:
            self._ab_task = asyncio.create_task(self._ab_metrics_forever(), name="ab-metrics")

    async def stop(self) -> None:
        """Stop the background loops and write the events and exposures still queued."""
        for task in (self._flush_task, self._history_task, self._ab_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.event_writer.close()
        await self.flush_exposures()
        if self._ab_pool is not None:
            # the child may be seconds into a computation: end it rather than leave it behind
            # (shutdown alone returns, and the process exits, before the child sees it)
            for child in list(self._ab_pool._processes.values()):
                child.terminate()
            self._ab_pool.shutdown(wait=True, cancel_futures=True)
            self._ab_pool = None

    def _open_store(self) -> None:
        from recsys.data.store import EventStore, safe_url

        try:
            self.store = EventStore(self.settings.db_url)
        except Exception as exc:  # an unusable URL: no retry can help
            log.error("event store %s unusable: %s", safe_url(self.settings.db_url), exc)
            self._store_state(False)
            return
        self._probe_store()

    def _probe_store(self) -> None:
        """Connect and create the schema if missing (a store down at start or re-created)."""
        if self.store is None:
            return
        try:
            self.store.create_schema()  # also creates the folder of a SQLite file
        except Exception as exc:
            self._store_state(False, exc)
        else:
            self._store_state(True)

    def _store_state(self, up: bool, error: Exception | None = None) -> None:
        """Record the store's state (readiness, the gauge); log its changes, not every failure."""
        if up != self.store_up:
            if up:
                log.info("event store available")
            else:
                log.error("event store unavailable: %s", error)
        self.store_up = up
        self.metrics.event_store_up.set(1 if up else 0)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.exposure_flush_s)
            if not self.store_up:  # the outage heals without waiting for a client's write
                await run_in_threadpool(self._probe_store)
            await self.flush_exposures()

    @property
    def history_status(self) -> Literal["ok", "rebuilding", "stale"]:
        """The online history for readiness: shared in Redis or synced with the store ("ok"),
        not rebuilt yet ("rebuilding"), or the store is down ("stale")."""
        if not isinstance(self.history, OnlineHistory) or (
            self.history_log is not None and self.store_up
        ):
            return "ok"
        return "stale" if self.store_up is False else "rebuilding"

    @property
    def history_ready(self) -> bool:
        """Whether readiness may say ready: the history is not waiting for its rebuild."""
        return self.history_status != "rebuilding"

    async def _sync_forever(self) -> None:
        while True:
            try:
                await run_in_threadpool(self.sync_history)
            except Exception as exc:  # the store is down: retried at the next poll
                self._store_state(False, exc)
            # until the first rebuild (readiness waits for it) look again soon
            rebuilt = self.history_log is not None
            await asyncio.sleep(self.settings.history_poll_s if rebuilt else 0.01)

    def sync_history(self) -> int:
        """Bring the in-process history up to date with the event store; the number of
        stored events read.

        The first time a model serves, rebuild it from the store (views and add-to-carts of
        the last ``history_ttl_s``, purchases since the served models' cutoff); after that
        apply the events written since the last read, by any process. A newer model drops
        the purchases it was trained on; an older one (a rollback) rebuilds.
        """
        model = self.manager.current
        if model is None or self.store is None or not isinstance(self.history, OnlineHistory):
            return 0
        bundles = [model.bundle, *(arm.recommender.bundle for arm in model.arms.values())]
        cutoff = min(int(b.metadata.get("cutoff_ms", 0)) for b in bundles)
        since = max(cutoff, int(time.time() * 1000 - self.settings.history_ttl_s * 1000))
        if self.history_log is None or cutoff < (self._history_cutoff or 0):
            last = self.store.last_event_id()  # read first: later events come from the log
            rows = (
                self.store.event_log(since_ms=since, purchases_since_ms=cutoff)
                if self.settings.rebuild_history
                else []
            )
            self.history_log = LogCursor(max([last] + [row[0] for row in rows]))
            if rows:
                log.info("online history rebuilt from %d stored events", len(rows))
        else:
            cursor = self.history_log
            rows = self.store.event_log(cursor.after, cursor.gaps, limit=50_000)
            cursor.advance((row[0] for row in rows), time.monotonic())
        if cutoff != self._history_cutoff:
            self.history.forget_bought_before(cutoff)
            self._history_cutoff = cutoff
        self.history.add(
            (t, v, i, e)
            for _, t, v, i, e in rows
            if t >= since or (e == C.PURCHASE and t >= cutoff)
        )
        self._store_state(True)
        self.metrics.history_visitors.set(len(self.history))
        return len(rows)

    async def _ab_metrics_forever(self) -> None:
        while True:
            started, spawns = time.monotonic(), self._ab_pool is None
            try:
                await self.update_ab_metrics()
            except Exception:  # the loop must outlive a store hiccup; the timestamp goes stale
                log.exception("computing the A/B metrics failed")
            # the computation grows with the exposures: pausing in proportion keeps its share
            # of a core bounded (at most 1 / AB_METRICS_PAUSE_FACTOR) on a long experiment
            # (not after a run that also started the child: that is start-up, not exposures)
            took = 0.0 if spawns else time.monotonic() - started
            await asyncio.sleep(
                max(self.settings.ab_metrics_interval_s, AB_METRICS_PAUSE_FACTOR * took)
            )

    async def update_ab_metrics(self) -> None:
        """Recompute the per-variant business metrics of every started experiment from the
        event store and set the ``recsys_ab_*`` gauges.

        The computation reads every exposure of the experiments (seconds of pandas work at a
        few hundred thousand): it runs in a child process, so it never holds this process's
        interpreter lock while requests are served.
        """
        if self.store is None:
            return
        now = time.time()
        started = [e for e in self.manager.experiments if e.start_s <= now]
        if self._ab_pool is None:
            # at a lower CPU priority: on a busy host the requests go first
            self._ab_pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=ab_child_start,
                initargs=(AB_METRICS_NICE, os.getpid()),
            )
        window = self.settings.attribution_window_s
        try:
            values = await asyncio.get_running_loop().run_in_executor(
                self._ab_pool, ab_values, self.settings.db_url, started, window
            )
        except BrokenProcessPool:
            self._ab_pool = None  # the child died (e.g. out of memory): a new one next time
            raise
        self.metrics.set_ab(values, now)
        exposures = sum(int(row["exposures"]) for row in values.values())
        log.info("A/B metrics of %d exposures in %.2f s", exposures, time.time() - now)

    def recommend(self, user_id: int, k: int) -> dict[str, Any]:
        """Top-``k`` items for a visitor, with the visitor's posted events taken into account.

        Returns the :class:`~fastapi_service.schemas.RecommendationResponse` fields as a plain
        dict (JSON-ready; a NaN score would be written as null): building pydantic objects per
        request would cost more than the ranking itself.

        Raises
        ------
        ModelNotReady
            While no model is loaded.
        """
        model = self.manager.served()
        now = time.time()
        assignment = self.router.route(user_id, now) if self.router else None
        arm = model.arms.get(assignment) if assignment is not None else None
        if arm is None or assignment is None:  # no experiment now (or it is paused)
            recommender, version = model.recommender, model.version
            experiment, variant = self.settings.experiment, VARIANT
        else:
            recommender, version = arm.recommender, arm.version
            experiment, variant = assignment
        # ranked as of the visitor's last event: the page their answer is shown on
        session = self.history.get(user_id)
        rec = recommender.recommend(
            user_id,
            k,
            session.items,
            session.bought,
            session_times=session.times,
            session_carts=session.carts,
        )
        self.metrics.observe_recommendation(rec.source, variant, rec.scores, rec.item_ids)
        request_id = f"{self._request_prefix}{next(self._request_numbers):016x}"
        exposure = (
            request_id,
            int(now * 1000),
            user_id,
            experiment,
            variant,
            version,
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
            "model_version": version,
            "experiment": experiment,
            "variant": variant,
            "request_id": request_id,
        }

    async def ingest(self, events: list[Event]) -> EventsAccepted:
        """Apply events to the online history and write them to the event store.

        Raises
        ------
        BatchTooLarge
            More than ``max_batch`` events.
        EventRejected
            An event is dated more than ``future_tolerance_s`` after the server clock.
        StoreUnavailable
            The store is down; the events were applied to recommendations but not stored.
        recsys.exceptions.DataValidationError
            The store rejected an event (the schema should have caught it first).
        """
        limit = self.settings.max_batch
        if len(events) > limit:
            raise BatchTooLarge(
                f"batch of {len(events)} events is over the limit of {limit} (max_batch)"
            )
        if self.store is None:
            raise StoreUnavailable("event store unavailable; retry later")
        now_ms = int(time.time() * 1000)
        stamps = [now_ms if e.timestamp is None else e.timestamp for e in events]
        tolerance_ms = int(self.settings.future_tolerance_s * 1000)
        limit = schema.future_limit_ms(tolerance_ms, now_ms)
        late = next((i for i, t in enumerate(stamps) if t > limit), None)
        if late is not None:
            where = "body" if len(events) == 1 else f"body[{late}]"
            reason = schema.FAR_FUTURE.format(tolerance_s=tolerance_ms / 1000)
            raise EventRejected(reason, f"{where}.{C.TIMESTAMP}")
        self.history.add(
            (t, e.visitorid, e.itemid, e.event) for t, e in zip(stamps, events, strict=True)
        )
        self.metrics.history_visitors.set(len(self.history))
        try:
            stored = await self.event_writer.submit((events, stamps))
        except DataValidationError:
            raise  # the client's data, not a store failure
        except Exception as exc:
            self.metrics.event_store_errors.labels(table="events").inc()
            self._store_state(False, exc)
            log.error("writing %d events failed: %s", len(events), exc)
            raise StoreUnavailable(
                "event store unavailable; the events were applied to recommendations "
                "but not stored, retry later"
            ) from exc
        self._store_state(True)
        for event_type, count in Counter(e.event for e in events).items():
            self.metrics.events.labels(event=event_type).inc(count)
        return EventsAccepted(received=len(events), stored=int(stored))

    def _write_events(self, batches: list[tuple[list[Event], list[int]]]) -> list[int]:
        """Write several requests' events in one transaction (see :attr:`event_writer`)."""
        assert self.store is not None  # ingest checked it
        rows = [
            (stamp, e.visitorid, e.event, e.itemid, e.transactionid, e.request_id)
            for events, stamps in batches
            for e, stamp in zip(events, stamps, strict=True)
        ]
        return self.store.append_event_batches(rows, [len(events) for events, _ in batches])

    async def flush_exposures(self) -> None:
        """Write buffered exposures to the store in one batch (dropped if the store fails)."""
        rows = self.exposures.drain()
        if not rows:
            return
        if self.store is None:
            self.metrics.exposures_dropped.inc(len(rows))
            return
        try:
            # plain tuples, written as one JSON parameter (no pandas, no per-row work)
            await run_in_threadpool(self.store.log_exposures, rows)
        except Exception as exc:
            self._store_state(False, exc)
            self.metrics.event_store_errors.labels(table="exposures").inc()
            self.metrics.exposures_dropped.inc(len(rows))
            log.error("writing %d exposures failed: %s", len(rows), exc)
        else:
            self._store_state(True)
            await self.expire_exposures()

    async def expire_exposures(self) -> None:
        """Delete exposures older than ``exposure_retention_days``, at most every
        :data:`RETENTION_CHECK_S` (errors are logged: the next pass tries again)."""
        days = self.settings.exposure_retention_days
        if self.store is None or days <= 0:
            return
        if time.monotonic() - self._expired_at < RETENTION_CHECK_S:
            return
        self._expired_at = time.monotonic()
        before = int((time.time() - days * 86_400) * 1000)
        try:
            deleted = await run_in_threadpool(self.store.delete_exposures, before)
        except Exception as exc:
            log.error("deleting expired exposures failed: %s", exc)
            return
        self.metrics.exposures_expired.inc(deleted)
        if deleted:
            log.info("deleted %d exposures older than %g days", deleted, days)


@functools.cache
def _ab_store(db_url: str) -> EventStore:
    """The A/B child process's event store (one engine per process, not per computation)."""
    from recsys.data.store import EventStore

    return EventStore(db_url)


def ab_values(
    db_url: str, experiments: list[Experiment], window_s: float
) -> dict[tuple[str, str], dict[str, float]]:
    """The business metrics of ``experiments`` per (experiment, variant), from the event
    store at ``db_url`` (run in the A/B child process: see :meth:`Service.update_ab_metrics`)."""
    from recsys.abtest.attribution import VARIANT_COLUMNS, experiment_counts

    store = _ab_store(db_url)
    values = {}
    for experiment in experiments:
        counts = experiment_counts(
            store, experiment.name, [v.name for v in experiment.variants], window_s
        )
        for variant, row in counts.iterrows():
            values[(experiment.name, str(variant))] = {
                name: float(row[name]) for name in VARIANT_COLUMNS
            }
    return values
