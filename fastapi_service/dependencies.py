"""What routes get through ``Depends``: the app's settings, service, model manager, metrics.

Each getter reads ``request.app.state`` (filled by :func:`fastapi_service.app.create_app`),
so a test swaps any of them with ``app.dependency_overrides[get_x] = ...``. They are
``async``: FastAPI would run plain functions in the thread pool, a hop per request.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fastapi_service.errors import AdminDisabled, InvalidToken, Unauthorized
from fastapi_service.metrics import ServiceMetrics
from fastapi_service.model_manager import ModelManager
from fastapi_service.service import Service
from fastapi_service.settings import ServiceSettings


async def get_settings(request: Request) -> ServiceSettings:
    """The settings the app was built with."""
    settings: ServiceSettings = request.app.state.settings
    return settings


async def get_service(request: Request) -> Service:
    """The request-handling service."""
    service: Service = request.app.state.service
    return service


async def get_manager(request: Request) -> ModelManager:
    """The owner of the served model."""
    manager: ModelManager = request.app.state.manager
    return manager


async def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus metrics."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
ServiceDep = Annotated[Service, Depends(get_service)]
ManagerDep = Annotated[ModelManager, Depends(get_manager)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]

#: auto_error off: a missing token is answered by require_admin, in the service's own words
_bearer = HTTPBearer(auto_error=False, description="RECSYS_ADMIN_TOKEN")


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with ``Authorization: Bearer <RECSYS_ADMIN_TOKEN>``.

    Raises
    ------
    AdminDisabled
        No admin token is configured.
    Unauthorized
        No bearer token was sent.
    InvalidToken
        The token is not the configured one (compared in constant time).
    """
    token = settings.admin_token
    if token is None:
        raise AdminDisabled("reload disabled: RECSYS_ADMIN_TOKEN is not set")
    if credentials is None:
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <RECSYS_ADMIN_TOKEN>'"
        )
    given = credentials.credentials.encode()
    if not secrets.compare_digest(given, token.get_secret_value().encode()):
        raise InvalidToken("invalid admin token")
