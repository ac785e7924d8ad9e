"""The FastAPI application: ``create_app(settings)`` and the module-level ``app`` uvicorn serves.

Building the app reads settings only; the event store, the model and the background loops
start in the lifespan, so importing this module touches nothing. This is also the one place
where errors become HTTP answers: :data:`ERROR_STATUS` maps the domain errors to status codes,
and every error body is an :class:`~fastapi_service.schemas.ErrorResponse`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import recsys
from fastapi_service.errors import (
    BatchTooLarge,
    EventRejected,
    Forbidden,
    ModelNotReady,
    ReloadFailed,
    ServiceError,
    StoreUnavailable,
    Unauthorized,
)
from fastapi_service.metrics import MetricsMiddleware, ServiceMetrics
from fastapi_service.model_manager import ModelManager
from fastapi_service.routes import FastRecommendations, fast_routes, router
from fastapi_service.schemas import ErrorResponse, FieldError
from fastapi_service.service import Service
from fastapi_service.settings import ServiceSettings
from recsys.abtest import load_experiments
from recsys.exceptions import ConfigurationError, DataValidationError

log = logging.getLogger("fastapi_service")

DESCRIPTION = """Top-k product recommendations for the recsys add-to-cart recommender.

Serves the registry's champion model, takes clickstream events back (RetailRocket shape),
falls back to a session fold-in or to popularity for unknown visitors, reloads the model
without downtime, runs A/B experiments (variants by visitor hash, exposures logged) and exposes
Prometheus metrics at `/metrics`.
"""

#: domain error -> (status code, extra headers); the error's message is the ``detail``, its
#: class's ``code`` the ``code``
ERROR_STATUS: dict[type[Exception], tuple[int, dict[str, str] | None]] = {
    ModelNotReady: (503, None),
    StoreUnavailable: (503, None),
    BatchTooLarge: (413, None),
    Unauthorized: (401, {"WWW-Authenticate": "Bearer"}),
    Forbidden: (403, None),
    ReloadFailed: (502, None),
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store and start loading the model; on shutdown stop both, flush exposures."""
    service: Service = app.state.service
    manager: ModelManager = app.state.manager
    await service.start()
    await manager.start()
    try:
        yield
    finally:
        await manager.stop()
        await service.stop()


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service app from ``settings`` (default: the ``RECSYS_*`` environment).

    ``app.state`` holds ``settings``, ``metrics``, ``manager`` and ``service``: what the
    dependencies of :mod:`fastapi_service.dependencies` hand to the routes.
    """
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    experiments = load_experiments(settings.experiments_file) if settings.experiments_file else ()
    manager = ModelManager(settings, metrics, experiments)
    app = FastAPI(
        title="recsys recommendation service",
        version=recsys.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.manager = manager
    app.state.service = Service(settings, manager, metrics)
    app.include_router(router)
    # the fast path first: the router takes the first full match (see fastapi_service.routes)
    app.router.routes[0:0] = fast_routes
    for error, (status, headers) in ERROR_STATUS.items():
        app.add_exception_handler(error, _domain_error(status, headers))
    app.add_exception_handler(EventRejected, _rejected_event)  # type: ignore[arg-type]
    app.add_exception_handler(DataValidationError, _data_error)  # type: ignore[arg-type]
    app.add_exception_handler(ConfigurationError, _configuration_error)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    # the last middleware added is the outermost: metrics also see 413s from the body limit
    # and time the recommendations answered ahead of the rest (fastapi_service.routes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.state.fast_path = True
    app.add_middleware(FastRecommendations, state=app.state)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def error_response(
    status: int,
    code: str,
    detail: str,
    errors: Iterable[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An :class:`ErrorResponse` body with ``status`` and the stable error ``code``."""
    body = ErrorResponse(code=code, detail=detail, errors=list(errors))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _domain_error(
    status: int, headers: dict[str, str] | None
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        code = exc.code if isinstance(exc, ServiceError) else "service_error"
        return error_response(status, code, str(exc), headers=headers)

    return handler


async def _rejected_event(_: Request, exc: EventRejected) -> JSONResponse:
    error = FieldError(field=exc.field, message=str(exc))
    return error_response(422, exc.code, f"{exc.field}: {exc}", [error])


async def _data_error(_: Request, exc: DataValidationError) -> JSONResponse:
    # only a posted event reaches the store: the data is the client's
    error = FieldError(field=f"body.{exc.column}" if exc.column else "body", message=exc.reason)
    return error_response(422, EventRejected.code, f"event rejected by the store: {exc}", [error])


async def _configuration_error(request: Request, exc: Exception) -> JSONResponse:
    # the message may name a database URL: logged, not answered
    log.error("misconfigured, on %s %s: %s", request.method, request.url.path, exc)
    return error_response(500, "misconfigured", "service misconfigured; see the service log")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """Location as the client wrote it: ``("body", "batch", 3, "event")`` -> ``body[3].event``."""
    parts = list(loc)
    # drop the tag of the one-event-or-batch union: it is not a field the client wrote
    if len(parts) > 1 and parts[0] == "body" and parts[1] in ("event", "batch"):
        del parts[1]
    if not parts:
        return "request"
    text = str(parts[0])
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


#: the code of a request that does not match the API (parameters, JSON, schema)
INVALID_REQUEST = "invalid_request"


def _status_code(status: int) -> str:
    """The error code of an HTTP status without a domain error, e.g. 404 -> ``not_found``.

    >>> _status_code(405)
    'method_not_allowed'
    """
    if status == 413:
        return BatchTooLarge.code
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            position = error["loc"][-1]
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            errors.append(
                FieldError(field="body", message=f"invalid JSON at position {position}: {reason}")
            )
        else:
            errors.append(FieldError(field=_field(error["loc"]), message=str(error["msg"])))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid request"
    return error_response(422, INVALID_REQUEST, detail, errors)


#: FastAPI's 400 for a body it cannot decode (e.g. not UTF-8): answered like other bad bodies
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        error = FieldError(field="body", message="not valid JSON text (UTF-8 expected)")
        return error_response(422, INVALID_REQUEST, f"body: {error.message}", [error])
    code = _status_code(exc.status_code)
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413 before they are parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        message = f"request body over {self.max_bytes} bytes (max_batch events)"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(413, BatchTooLarge.code, message)(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_bytes:  # bodies without Content-Length
                # an HTTPException: FastAPI turns any other error while reading the body into
                # a 400, but passes this one through to the handlers
                raise HTTPException(413, message)
            return event

        await self.app(scope, limited_receive, send)


app = create_app()
