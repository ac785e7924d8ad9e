"""``recsys simulate``: visitors of the holdout drive a running service, closing the A/B loop.

The service is trained on data up to a cutoff; the days after it (the holdout) hold what its
visitors really did next, which the service never saw. Each simulated visitor is one of them:

The holdout is the ``holdout_days`` days after the served model's training cutoff
(``cutoff_ms`` in its metadata, read from ``GET /model``), so the ground truth is always what the
model could not have seen.

1. **Browse.** Their holdout views before their first add-to-cart (all of their views when
   they never carted), the last ``session_events`` of them, are posted to ``POST /events`` in
   one batch, as the shop would post them: the service folds them into its ranking.
2. **Ask.** ``GET /recommendations?user_id=...&k=...``: the list the variant of this visitor
   serves, and its ``request_id``.
3. **Add to cart** (the behaviour model). The item at position ``p`` (0-based) is added with
   probability ``hit · decay^p`` when it is among the items this visitor really added to cart
   in the holdout (the ground truth), else ``miss · decay^p``: a shown item the visitor wants is
   taken often, one they do not want rarely, and lower positions are looked at less (a
   position-bias model). Each truly carted item that was *not* recommended is still added
   with probability ``organic``: visitors find some of what they want on their own.
4. **Buy.** Each added item is bought with probability ``purchase``, by default the data's
   own cart-to-purchase rate (the share of carted (visitor, item) pairs that were bought).
5. Add-to-carts and purchases of recommended items are posted with the ``request_id``
   (attributed to that exposure); organic ones without (attributed by the window).

Defaults (:class:`Behaviour`): hit 0.5, miss 0.002, decay 0.8, organic 0.15. With them a
visitor without true carts adds a recommended item with probability about 0.7%, and one whose
wanted item is shown first takes it half of the time: a ranking that puts the items visitors
want on the list converts more, one that does not converts at the organic rate.

Visitors are the holdout's (``population="all"``) or only those who added to cart in it
(``"shoppers"``: the rest carry no signal, only ``miss`` noise); they are sampled with the seed,
and every decision of a visitor uses a generator seeded by ``(seed, visitor id)``, so a run is
deterministic for a seed up to the service's answers, however requests interleave. A run is
bounded: at most ``visitors`` visitors, three requests each, stopped after ``duration_s``; it
talks to loopback addresses only.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import httpx
import numpy as np
import pandas as pd

from recsys import columns as C
from recsys.evaluation import RELEVANT, holdout_targets
from recsys.exceptions import ConfigurationError
from recsys.split import make_split, window

Population = Literal["all", "shoppers"]
#: transaction ids of simulated purchases start here (far above the dataset's)
TRANSACTION_BASE = 10**15


@dataclass(frozen=True)
class Behaviour:
    """Parameters of the simulated visitors (see the module docstring)."""

    hit: float = 0.5
    miss: float = 0.002
    decay: float = 0.8
    organic: float = 0.15
    #: P(buy | added); None = the data's cart-to-purchase rate
    purchase: float | None = None
    #: most holdout views posted before asking
    session_events: int = 10
    k: int = 5

    def __post_init__(self) -> None:
        for name in ("hit", "miss", "decay", "organic"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigurationError(f"{name} must be a probability in [0, 1], got {value}")
        if self.purchase is not None and not 0 <= self.purchase <= 1:
            raise ConfigurationError(f"purchase must be in [0, 1], got {self.purchase}")


@dataclass(frozen=True)
class SimVisitor:
    """A holdout visitor: the views they post, and what they really added to cart later."""

    visitor: int
    views: tuple[int, ...]
    truth: frozenset[int]


@dataclass(frozen=True)
class Decision:
    """What one visitor does with a list: items added (recommended or not) and bought."""

    recommended: tuple[int, ...]
    organic: tuple[int, ...]
    bought: frozenset[int]


@dataclass
class SimulationResult:
    """Counts of a run."""

    visitors: int = 0
    requests: int = 0
    failures: int = 0
    recommended_carts: int = 0
    organic_carts: int = 0
    purchases: int = 0
    elapsed_s: float = 0.0
    purchase_rate: float = 0.0
    holdout: tuple[int, int] = (0, 0)
    #: visitors per (experiment, variant) as the service answered
    variants: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash, if its host is a loopback address.

    Raises
    ------
    ConfigurationError
        For another host (the simulator loads only this machine's services).

    Examples
    --------
    >>> check_loopback("http://127.0.0.1:8000/")
    'http://127.0.0.1:8000'
    >>> check_loopback("http://example.com")
    Traceback (most recent call last):
    ...
    recsys.exceptions.ConfigurationError: http://example.com: the simulator only drives services on loopback addresses (127.0.0.0/8, ::1)
    """
    parsed = urlparse(url)
    host = parsed.hostname
    if parsed.scheme not in ("http", "https") or not host:
        raise ConfigurationError(f"{url}: not an http(s) URL")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name: only localhost, and only if it resolves to loopback
        address = ipaddress.ip_address(socket.gethostbyname(host)) if host == "localhost" else None
    if address is None or not address.is_loopback:
        raise ConfigurationError(
            f"{url}: the simulator only drives services on loopback addresses (127.0.0.0/8, ::1)"
        )
    return url.rstrip("/")


def cart_to_purchase_rate(events: pd.DataFrame) -> float:
    """Share of carted (visitor, item) pairs that the visitor also bought.

    >>> events = pd.DataFrame({"visitorid": [1, 1, 1, 2], "itemid": [5, 5, 6, 5],
    ...     "event": ["addtocart", "transaction", "addtocart", "addtocart"]})
    >>> round(cart_to_purchase_rate(events), 4)
    0.3333
    """
    kinds = events[C.EVENT].astype(str).to_numpy()
    pairs = events[[C.VISITOR, C.ITEM]]
    carts = pairs.loc[kinds == C.ADDTOCART].drop_duplicates()
    bought = pairs.loc[kinds == C.PURCHASE].drop_duplicates().assign(bought=True)
    if carts.empty:
        return 0.0
    merged = carts.merge(bought, on=[C.VISITOR, C.ITEM], how="left")
    return float(merged["bought"].notna().mean())


def holdout_visitors(
    window_events: pd.DataFrame, population: Population = "all", session_events: int = 10
) -> list[SimVisitor]:
    """The visitors of a holdout window, with their pre-cart views and their true carts.

    Examples
    --------
    >>> events = pd.DataFrame({"timestamp": [1, 2, 3, 4, 5], "visitorid": [1, 1, 1, 1, 2],
    ...     "event": ["view", "view", "addtocart", "view", "view"], "itemid": [7, 8, 8, 9, 7]})
    >>> holdout_visitors(events)
    [SimVisitor(visitor=1, views=(7, 8), truth=frozenset({8})), SimVisitor(visitor=2, views=(7,), truth=frozenset())]
    >>> [v.visitor for v in holdout_visitors(events, "shoppers")]
    [1]
    """
    ev = window_events.sort_values([C.VISITOR, C.TIMESTAMP], kind="stable")
    targets = holdout_targets(np.zeros(0, dtype=np.int64), ev, C.ADDTOCART)
    truth = {
        int(v): frozenset(int(i) for i in items)
        for v, items in zip(targets[C.VISITOR], targets[RELEVANT], strict=True)
    }
    kinds = ev[C.EVENT].astype(str).to_numpy()
    visitors = ev[C.VISITOR].to_numpy(dtype=np.int64)
    stamps = ev[C.TIMESTAMP].to_numpy(dtype=np.int64)
    items = ev[C.ITEM].to_numpy(dtype=np.int64)
    first_cart = (
        pd.Series(stamps[kinds == C.ADDTOCART])
        .groupby(visitors[kinds == C.ADDTOCART])
        .min()
        .to_dict()
    )
    limit = np.array([first_cart.get(int(v), np.iinfo(np.int64).max) for v in visitors])
    browse = (kinds == C.VIEW) & (stamps < limit)
    ids, starts = np.unique(visitors, return_index=True)
    ends = np.append(starts[1:], len(visitors))
    out = []
    for visitor, start, end in zip(ids.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if population == "shoppers" and visitor not in truth:
            continue
        viewed = items[start:end][browse[start:end]]
        views = tuple(viewed[-session_events:].tolist()) if session_events > 0 else ()
        out.append(SimVisitor(visitor, views, truth.get(visitor, frozenset())))
    return out


def decide(
    visitor: SimVisitor,
    recommended: Sequence[int],
    behaviour: Behaviour,
    purchase: float,
    rng: np.random.Generator,
) -> Decision:
    """What a visitor does with the list they were shown (the behaviour model).

    Examples
    --------
    A visitor who wants item 5 and certainly takes what they want (hit 1, decay 1, no
    misses, no organic finds, no purchases):

    >>> always = Behaviour(hit=1.0, miss=0.0, decay=1.0, organic=0.0)
    >>> v = SimVisitor(1, (), frozenset({5, 6}))
    >>> decide(v, [9, 5, 8], always, 0.0, np.random.default_rng(0))
    Decision(recommended=(5,), organic=(), bought=frozenset())
    """
    shown = list(dict.fromkeys(int(i) for i in recommended))
    wanted = np.array([item in visitor.truth for item in shown], dtype=bool)
    base = np.where(wanted, behaviour.hit, behaviour.miss)
    chance = base * behaviour.decay ** np.arange(len(shown))
    taken = rng.random(len(shown)) < chance
    carts = tuple(item for item, t in zip(shown, taken.tolist(), strict=True) if t)
    missing = sorted(visitor.truth - set(shown))
    found = rng.random(len(missing)) < behaviour.organic
    organic = tuple(item for item, f in zip(missing, found.tolist(), strict=True) if f)
    added = (*carts, *organic)
    bought = frozenset(
        item
        for item, b in zip(added, (rng.random(len(added)) < purchase).tolist(), strict=True)
        if b
    )
    return Decision(carts, organic, bought)


def _events(
    visitor: SimVisitor, decision: Decision, request_id: str, seed: int
) -> list[dict[str, Any]]:
    """The add-to-cart and purchase events of a decision (recommended ones with the request id)."""
    events: list[dict[str, Any]] = []
    for number, item in enumerate((*decision.recommended, *decision.organic)):
        link = {"request_id": request_id} if item in decision.recommended else {}
        base = {"visitorid": visitor.visitor, "itemid": item, **link}
        events.append({**base, "event": C.ADDTOCART})
        if item in decision.bought:
            transaction = TRANSACTION_BASE + (seed % 1000) * 10**11 + visitor.visitor * 100 + number
            events.append({**base, "event": C.PURCHASE, "transactionid": transaction})
    return events


def load_holdout(
    events: pd.DataFrame, cutoff_ms: int | None, holdout_days: int = 7
) -> tuple[pd.DataFrame, int, int]:
    """The holdout window: ``holdout_days`` days from the served model's training cutoff
    (without a known cutoff: the pipeline's split, the last ``holdout_days`` days), never past
    the data. Bounded by days, so events a previous simulation posted to the store (stamped
    when they were posted) are never read as ground truth.

    Raises
    ------
    ConfigurationError
        When no event is left after the cutoff (the model saw everything).
    """
    end = int(events[C.TIMESTAMP].max()) + 1
    start = make_split(events, holdout_days, 0).holdout_start_ms if cutoff_ms is None else cutoff_ms
    stop = min(end, start + holdout_days * C.DAY_MS)
    part = window(events, start, stop)
    if part.empty:
        raise ConfigurationError(
            f"no events after the served model's cutoff {start}: its training saw all the data, "
            "so there is no ground truth left to simulate from"
        )
    return part, start, stop


def simulate(
    url: str,
    events: pd.DataFrame,
    visitors: int,
    duration_s: float,
    seed: int = 0,
    behaviour: Behaviour | None = None,
    population: Population = "all",
    concurrency: int = 4,
    holdout_days: int = 7,
    progress: Callable[[int], Any] | None = None,
) -> SimulationResult:
    """Drive the service at ``url`` with holdout visitors (see the module docstring).

    Parameters
    ----------
    url
        The service, on a loopback address.
    events
        The dataset's events (the pipeline's loaders' frame).
    visitors
        Most visitors simulated (fewer when the holdout has fewer).
    duration_s
        No visitor starts after this many seconds.
    seed
        Sampling and behaviour seed.
    behaviour
        The behaviour model's parameters (default :class:`Behaviour`).
    population
        ``all`` holdout visitors, or ``shoppers`` (those who added to cart).
    concurrency
        Visitors simulated at once (threads sharing one HTTP connection pool).
    holdout_days
        Days of the holdout after the served model's cutoff.
    progress
        Called with 1 after each visitor (e.g. a tqdm bar's ``update``).

    Returns
    -------
    SimulationResult
    """
    base_url = check_loopback(url)
    behaviour = behaviour or Behaviour()
    result = SimulationResult()
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        model = client.get("/model")
        model.raise_for_status()
        cutoff = model.json().get("metadata", {}).get("cutoff_ms")
        holdout, start, stop = load_holdout(
            events, None if cutoff is None else int(cutoff), holdout_days
        )
        result.holdout = (start, stop)
        purchase = (
            cart_to_purchase_rate(events[events[C.TIMESTAMP] < stop])
            if behaviour.purchase is None
            else behaviour.purchase
        )
        result.purchase_rate = purchase
        pool = holdout_visitors(holdout, population, behaviour.session_events)
        rng = np.random.default_rng(seed)
        chosen = [pool[i] for i in rng.permutation(len(pool))[: max(0, visitors)]]
        lock = threading.Lock()
        deadline = started + duration_s

        def visit(visitor: SimVisitor) -> None:
            if time.monotonic() > deadline:
                return
            requests, outcome = _visit(client, visitor, behaviour, purchase, seed)
            with lock:
                result.requests += requests
                if isinstance(outcome, str):
                    result.failures += 1
                    if len(result.errors) < 10:
                        result.errors.append(outcome)
                else:
                    assignment, decision = outcome
                    result.visitors += 1
                    result.variants[assignment] += 1
                    result.recommended_carts += len(decision.recommended)
                    result.organic_carts += len(decision.organic)
                    result.purchases += len(decision.bought)
            if progress is not None:
                progress(1)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as executor:
            for future in as_completed([executor.submit(visit, v) for v in chosen]):
                future.result()
    result.elapsed_s = time.monotonic() - started
    return result


def _visit(
    client: httpx.Client,
    visitor: SimVisitor,
    behaviour: Behaviour,
    purchase: float,
    seed: int,
) -> tuple[int, tuple[tuple[str, str], Decision] | str]:
    """One visitor's requests: (requests made, (assignment, decision) or an error text)."""
    rng = np.random.default_rng([seed, visitor.visitor])
    requests = 0
    try:
        if visitor.views:
            requests += 1
            views = [
                {"visitorid": visitor.visitor, "event": C.VIEW, "itemid": item}
                for item in visitor.views
            ]
            client.post("/events", json=views).raise_for_status()
        requests += 1
        reply = client.get(
            "/recommendations", params={"user_id": visitor.visitor, "k": behaviour.k}
        )
        reply.raise_for_status()
        body = reply.json()
        decision = decide(visitor, body["recommendations"], behaviour, purchase, rng)
        events = _events(visitor, decision, body["request_id"], seed)
        if events:
            requests += 1
            client.post("/events", json=events).raise_for_status()
    except httpx.HTTPError as exc:
        return requests, f"visitor {visitor.visitor}: {type(exc).__name__}: {exc}"
    return requests, ((str(body.get("experiment")), str(body.get("variant"))), decision)
