"""A bounded traffic generator for the service: what the dashboards and their checks look at.

Known and unknown visitors ask for recommendations (both URL forms), visitors post views,
add-to-carts and purchases (so unknown visitors are then folded in), and a few requests are
invalid (422) or hit no route (404). The run stops after ``duration_s`` seconds or
``max_requests`` requests, whichever comes first, and sends to the one base URL it is given
(the tests and ``make monitor`` give a loopback address).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence

import httpx

#: first visitor id of the generated unknown visitors (far above the synthetic ids)
COLD_VISITORS = 900_000_000


def run(
    base_url: str,
    warm_users: Sequence[int],
    items: Sequence[int],
    duration_s: float = 10.0,
    rate: float = 50.0,
    max_requests: int = 5_000,
    seed: int = 0,
) -> Counter[int]:
    """Send a mix of requests at about ``rate`` per second; return the count per status code.

    Parameters
    ----------
    base_url
        The service, e.g. ``http://127.0.0.1:8000``.
    warm_users
        Visitor ids the served model knows.
    items
        Item ids to post events about.
    duration_s, max_requests
        Bounds of the run: the first reached ends it.
    rate
        Requests per second aimed at (the run spreads them evenly over time).
    seed
        Random seed of the mix.
    """
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + duration_s
    next_at = time.monotonic()
    transaction = 0
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        for _ in range(max_requests):
            now = time.monotonic()
            if now > deadline:
                break
            if next_at > now:
                time.sleep(next_at - now)
            next_at += 1.0 / rate
            warm = rng.choice(warm_users)
            cold = COLD_VISITORS + rng.randrange(2_000)
            draw = rng.random()
            if draw < 0.50:
                reply = client.get("/recommendations", params={"user_id": warm, "k": 5})
            elif draw < 0.70:
                reply = client.get("/recommendations", params={"user_id": cold, "k": 5})
            elif draw < 0.78:
                reply = client.get(f"/recommendations/{rng.choice((warm, cold))}")
            elif draw < 0.95:
                event = rng.choices(("view", "addtocart", "transaction"), (80, 15, 5))[0]
                body: dict[str, int | str] = {
                    "visitorid": rng.choice((warm, cold)),
                    "event": event,
                    "itemid": rng.choice(items),
                }
                if event == "transaction":
                    transaction += 1
                    body["transactionid"] = transaction
                reply = client.post("/events", json=body)
            elif draw < 0.98:
                reply = client.get("/recommendations", params={"user_id": warm, "k": 0})
            else:
                reply = client.get("/no/such/route")
            statuses[reply.status_code] += 1
    return statuses
