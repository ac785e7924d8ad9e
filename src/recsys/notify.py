"""Telling other systems what a retraining run did: the service (reload) and a webhook (alerts).

Neither call ever fails a run: the service also polls the registry alias, and an alert that
cannot be delivered is logged. Both use plain HTTP (httpx) with short timeouts.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger(__name__)

#: seconds for one notification request (a reload downloads and swaps a model first)
RELOAD_TIMEOUT_S = 120.0
ALERT_TIMEOUT_S = 10.0


def request_reload(
    service_url: str, token: str | None, timeout_s: float = RELOAD_TIMEOUT_S
) -> dict[str, Any] | None:
    """Ask the recommendation service to load the alias's version now (``POST /admin/reload``).

    Parameters
    ----------
    service_url : str
        Base URL of the service, e.g. ``http://127.0.0.1:8000``.
    token : str or None
        The service's ``RECSYS_ADMIN_TOKEN``; None skips the request (logged).
    timeout_s : float
        Seconds to wait for the answer.

    Returns
    -------
    dict or None
        The service's answer (``status``, ``model_version``, ``previous_version``), or None
        when it was not asked or did not reload; a warning says why. A service that is down
        or refuses is not an error: it picks the new version up by polling the alias.
    """
    if not token:
        log.warning("no admin token (RECSYS_ADMIN_TOKEN): %s not asked to reload", service_url)
        return None
    url = f"{service_url.rstrip('/')}/admin/reload"
    try:
        reply = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        log.warning(
            "service not reached at %s (%s); it will pick the model up by polling", url, exc
        )
        return None
    if reply.status_code != 200:
        log.warning("service at %s answered %d: %s", url, reply.status_code, reply.text[:500])
        return None
    answer: dict[str, Any] = reply.json()
    log.info("service reload: %s", answer)
    return answer


def post_alert(webhook_url: str | None, payload: dict[str, Any]) -> bool:
    """POST ``payload`` as JSON to ``webhook_url`` (None: only logged).

    Returns
    -------
    bool
        Whether the webhook accepted it (a 2xx answer).
    """
    log.error("alert: %s", payload)
    if not webhook_url:
        return False
    try:
        reply = httpx.post(webhook_url, json=payload, timeout=ALERT_TIMEOUT_S)
    except httpx.HTTPError as exc:
        log.warning("alert webhook unreachable: %s", exc)
        return False
    if not reply.is_success:
        log.warning("alert webhook answered %d: %s", reply.status_code, reply.text[:500])
    return reply.is_success
