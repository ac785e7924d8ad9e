"""Prometheus metrics of the service (``recsys_*``, base units, no user or item ids).

Each app owns its :class:`~prometheus_client.CollectorRegistry`, so creating several
apps in one process (tests, tools) never registers a metric twice. Request metrics are
recorded by :class:`MetricsMiddleware`, a plain ASGI middleware labelled by route
template, which keeps per-request overhead to a few microseconds.

Fallback share, in PromQL::

    sum(rate(recsys_fallback_total[5m])) / sum(rate(recsys_recommendations_total[5m]))

The A/B business metrics (``recsys_ab_*``, labels ``experiment`` and ``variant``) are gauges
set from the event store by one background task (:meth:`ServiceMetrics.set_ab`): unique
visitors cannot be summed from per-replica counters, and every replica reading the shared
store exports the same numbers (aggregate them with ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.columns import EVENT_TYPES
from recsys.names import FALLBACK_SOURCES

#: the per-variant business metrics: gauge name suffix -> help text (names are a contract of
#: the Grafana business dashboard and its alerts)
AB_GAUGES: dict[str, str] = {
    "exposures": "Exposures (recommendation lists served) of the variant.",
    "exposed_visitors": "Unique visitors exposed to the variant.",
    "addtocart_visitors": "Unique exposed visitors with at least one attributed add-to-cart.",
    "items_added": "Attributed add-to-cart events (items added) of the variant's visitors.",
    "buyer_visitors": "Unique exposed visitors with at least one attributed purchase.",
    "addtocart_conversion": "Add-to-cart conversion: adding visitors / exposed visitors (0..1).",
    "items_added_per_user": "Items added per adding visitor: items added / adding visitors.",
    "cart_to_purchase_conversion": "Cart-to-purchase conversion: buying / adding visitors (0..1).",
    "recommended_item_share": "Share of added items that had been recommended to the visitor (0..1).",
}

#: request latency buckets in seconds, dense in the 1-25 ms range where p95/p99 live
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
#: recommendation score buckets (LightFM dot products and normalised popularity)
SCORE_BUCKETS = (-10.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
#: route label of requests that matched no route (keeps label cardinality bounded)
UNMATCHED = "unmatched"

#: methods used as labels as they are; anything else is labelled "other"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

#: label values of the counters created at 0 when the app starts: ``increase()`` and
#: ``rate()`` see a series' first step only if the series existed before it, and an alert on
#: "no events ingested" needs the series to exist while nothing arrives
RELOAD_TRIGGERS = ("startup", "poll", "admin")
RELOAD_OUTCOMES = ("success", "failure", "unchanged")
STORE_TABLES = ("events", "exposures")


class ServiceMetrics:
    """All metrics of one app, registered on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
        self.request_duration = Histogram(
            "recsys_http_request_duration_seconds",
            "HTTP request duration by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.online_state_errors = Counter(
            "recsys_online_state_errors",
            "Failed reads and writes of the shared online state (Redis); requests were "
            "answered without it.",
            ["operation"],
            registry=reg,
        )
        self.recommendations = Counter(
            "recsys_recommendations",
            "Recommendation responses by source and A/B variant.",
            ["source", "variant"],
            registry=reg,
        )
        self.fallback = Counter(
            "recsys_fallback",
            "Recommendation responses served by a fallback "
            f"({' or '.join(sorted(FALLBACK_SOURCES))}).",
            ["variant"],
            registry=reg,
        )
        self.scores = Histogram(
            "recsys_recommendation_score",
            "Scores of recommended items by source.",
            ["source"],
            buckets=SCORE_BUCKETS,
            registry=reg,
        )
        self.model_info = Gauge(
            "recsys_model_info",
            "The served model (value 1) with its version and where it was loaded from.",
            ["version", "model_source"],
            registry=reg,
        )
        self.model_age = Gauge(
            "recsys_model_age_seconds",
            "Seconds since the served model was trained (NaN when unknown or none loaded).",
            registry=reg,
        )
        self.model_loaded = Gauge(
            "recsys_model_loaded_timestamp_seconds",
            "Unix time the served model was loaded (0 when none is loaded).",
            registry=reg,
        )
        self.ready = Gauge(
            "recsys_model_ready", "1 when a model is loaded and served.", registry=reg
        )
        self.registry_reachable = Gauge(
            "recsys_registry_reachable",
            "0 when the last registry lookup failed, else 1 (also when no registry is used).",
            registry=reg,
        )
        self.reloads = Counter(
            "recsys_model_reloads",
            "Model (re)load attempts by trigger (startup, poll, admin) and outcome.",
            ["trigger", "outcome"],
            registry=reg,
        )
        self.polls = Counter(
            "recsys_model_polls",
            "Polls of the model alias (each may or may not reload).",
            registry=reg,
        )
        self.events = Counter(
            "recsys_events_ingested",
            "Events stored by POST /events, by event type.",
            ["event"],
            registry=reg,
        )
        self.event_store_errors = Counter(
            "recsys_event_store_errors",
            "Failed writes to the event store by table.",
            ["table"],
            registry=reg,
        )
        self.event_store_up = Gauge(
            "recsys_event_store_up",
            "1 when the last use of the event store succeeded, else 0 (POST /events answers 503).",
            registry=reg,
        )
        self.exposures_dropped = Counter(
            "recsys_exposures_dropped",
            "Exposures dropped because the buffer was full or the store failed.",
            registry=reg,
        )
        self.exposures_expired = Counter(
            "recsys_exposures_expired",
            "Exposures deleted from the store because they are older than the retention.",
            registry=reg,
        )
        self.history_visitors = Gauge(
            "recsys_online_history_visitors",
            "Visitors with an online history kept in memory.",
            registry=reg,
        )
        self.in_flight = Gauge(
            "recsys_http_requests_in_flight",
            "HTTP requests being answered now.",
            registry=reg,
        )
        self.served_items = Gauge(
            "recsys_served_items",
            "Distinct items recommended since the served model was loaded.",
            registry=reg,
        )
        self.catalogue_items = Gauge(
            "recsys_model_catalogue_items",
            "Items the served model can recommend (available items of its catalogue).",
            registry=reg,
        )
        self.ab = {
            name: Gauge(
                f"recsys_ab_{name}",
                text + " From the event store, the same on every replica.",
                ["experiment", "variant"],
                registry=reg,
            )
            for name, text in AB_GAUGES.items()
        }
        self.ab_updated = Gauge(
            "recsys_ab_metrics_updated_timestamp_seconds",
            "Unix time the A/B business metrics were last computed (0: never).",
            registry=reg,
        )
        self._trained_at: float | None = None
        self._served: set[int] = set()
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self.model_age.set_function(self._age)
        self.served_items.set_function(lambda: len(self._served))
        self.registry_reachable.set(1)
        for trigger in RELOAD_TRIGGERS:
            for outcome in RELOAD_OUTCOMES:
                self.reloads.labels(trigger=trigger, outcome=outcome)
        for event in EVENT_TYPES:
            self.events.labels(event=event)
        for table in STORE_TABLES:
            self.event_store_errors.labels(table=table)
        for operation in ("read", "write", "count"):
            self.online_state_errors.labels(operation=operation)

    def _age(self) -> float:
        return float("nan") if self._trained_at is None else time.time() - self._trained_at

    def set_model(
        self,
        version: str,
        source: str,
        loaded_at: float,
        trained_at: float | None,
        catalogue_items: int = 0,
    ) -> None:
        """Point the model gauges at a newly served model (times in Unix seconds).

        ``catalogue_items`` is how many items the model can recommend; the count of distinct
        items served starts again from zero, so coverage is always of the served model.
        """
        self.model_info.clear()
        self.model_info.labels(version=version, model_source=source).set(1)
        self._trained_at = trained_at
        self.model_loaded.set(loaded_at)
        self.catalogue_items.set(catalogue_items)
        self._served = set()
        self.ready.set(1)

    def observe_recommendation(
        self, source: str, variant: str, scores: Iterable[float], items: Iterable[int] = ()
    ) -> None:
        """Count one recommendation response, its scores and the items it served."""
        children = self._children.get((source, variant))
        if children is None:
            # label lookups cost more than the updates: resolve each label set once
            fallback_child = self.fallback.labels(variant=variant)  # a 0 series keeps the ratio
            children = self._children[(source, variant)] = (
                self.recommendations.labels(source=source, variant=variant),
                fallback_child if source in FALLBACK_SOURCES else None,
                self.scores.labels(source=source),
            )
        count, fallback, histogram = children
        count.inc()
        if fallback is not None:
            fallback.inc()
        for score in scores:
            if math.isfinite(score):
                histogram.observe(score)
        # a set update of k ints (~0.2 us): the distinct count is read only when scraped
        self._served.update(items)

    def set_ab(self, values: Mapping[tuple[str, str], Mapping[str, float]], at: float) -> None:
        """Set the business gauges: ``values[(experiment, variant)][name]`` for every name of
        :data:`AB_GAUGES`, computed at Unix time ``at``."""
        for (experiment, variant), row in values.items():
            for name, gauge in self.ab.items():
                gauge.labels(experiment=experiment, variant=variant).set(row[name])
        self.ab_updated.set(at)

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)


#: the status recorded for a request whose client closed the connection before the answer
#: (nginx's convention)
CLIENT_CLOSED = 499


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # label lookups cost more than the observation; cache the children per label set
        self._durations: dict[tuple[str, str], Any] = {}
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._in_flight = metrics.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        self._in_flight.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if status == CLIENT_CLOSED:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
            try:
                await send(message)
            except RuntimeError as exc:
                if "handler is closed" not in str(exc):
                    raise
                # uvloop refuses to write to a connection the client reset in this very loop
                # turn, before uvicorn hears of it: the client left, not a server error. Yield
                # a turn so that uvicorn usually knows by the time the app returns (otherwise
                # it logs one line: "ASGI callable returned without completing response")
                status = CLIENT_CLOSED
                await asyncio.sleep(0)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            self._record(template, method, str(status), time.perf_counter() - start)

    def _record(self, route: str, method: str, status: str, seconds: float) -> None:
        key = (route, method)
        duration = self._durations.get(key)
        if duration is None:
            duration = self._durations[key] = self.metrics.request_duration.labels(*key)
        duration.observe(seconds)
        count_key = (route, method, status)
        count = self._counts.get(count_key)
        if count is None:
            count = self._counts[count_key] = self.metrics.requests.labels(*count_key)
        count.inc()
