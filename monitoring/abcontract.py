"""A stand-in exporter of the A/B metric contract, until the service exports it itself.

The A/B issue makes the service export these gauges (computed from the event store on a
schedule); this exporter serves the same names and labels with plausible values, so the business
dashboard and the conversion alert can be checked and pictured against a real Prometheus now.
It is never part of the running stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, start_http_server

#: every gauge of the contract but the timestamp: labels ``experiment`` and ``variant``
CONTRACT = (
    "recsys_ab_exposures",
    "recsys_ab_exposed_visitors",
    "recsys_ab_addtocart_visitors",
    "recsys_ab_items_added",
    "recsys_ab_buyer_visitors",
    "recsys_ab_addtocart_conversion",
    "recsys_ab_items_added_per_user",
    "recsys_ab_cart_to_purchase_conversion",
    "recsys_ab_recommended_item_share",
)
UPDATED = "recsys_ab_metrics_updated_timestamp_seconds"
#: variant -> (add-to-cart conversion, items per adder, cart-to-purchase, recommended share)
VARIANTS = {
    "control": (0.027, 1.9, 0.31, 0.18),
    "lightfm": (0.031, 2.1, 0.33, 0.27),
}
EXPERIMENT = "homepage-recs"


def _values(variant: str, started: float) -> dict[str, float]:
    """The contract's values of ``variant``, growing with the time since ``started``."""
    conversion, per_user, purchase, share = VARIANTS[variant]
    exposed = 2_000 + 40 * (time.time() - started)
    adders = round(exposed * conversion)
    return {
        "recsys_ab_exposures": round(exposed * 1.6),
        "recsys_ab_exposed_visitors": round(exposed),
        "recsys_ab_addtocart_visitors": adders,
        "recsys_ab_items_added": round(adders * per_user),
        "recsys_ab_buyer_visitors": round(adders * purchase),
        "recsys_ab_addtocart_conversion": adders / round(exposed),
        "recsys_ab_items_added_per_user": per_user,
        "recsys_ab_cart_to_purchase_conversion": purchase,
        "recsys_ab_recommended_item_share": share,
    }


def _reader(variant: str, name: str, started: float) -> Callable[[], float]:
    return lambda: _values(variant, started)[name]


def serve(port: int = 0) -> WSGIServer:
    """Serve the contract's metrics on ``127.0.0.1:port`` (0: any free port, see
    ``server_port``); ``shutdown()`` and ``server_close()`` the result to stop."""
    registry = CollectorRegistry()
    started = time.time()
    for name in CONTRACT:
        gauge = Gauge(name, f"A/B contract: {name}", ["experiment", "variant"], registry=registry)
        for variant in VARIANTS:
            gauge.labels(experiment=EXPERIMENT, variant=variant).set_function(
                _reader(variant, name, started)
            )
    Gauge(UPDATED, "A/B contract: last computation", registry=registry).set_function(time.time)
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server
