"""The FastAPI application: ``create_app()`` and the module-level ``app`` uvicorn serves.

Building the app reads settings only; the event store, the model and the background
loops start in the lifespan, so importing this module touches nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import recsys
from fastapi_service.metrics import MetricsMiddleware
from fastapi_service.routes import build_router, recommendation_routes
from fastapi_service.schemas import ErrorResponse, FieldError
from fastapi_service.service import Service
from fastapi_service.settings import ServiceSettings

log = logging.getLogger("fastapi_service")

DESCRIPTION = """Top-k product recommendations for the recsys add-to-cart recommender.

Serves the registry's champion model, takes clickstream events back (RetailRocket shape),
falls back to a session fold-in or to popularity for unknown visitors, reloads the model
without downtime and exposes Prometheus metrics at `/metrics`.
"""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service app from ``settings`` (default: the ``RECSYS_*`` environment)."""
    service = Service(settings or ServiceSettings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="recsys recommendation service",
        version=recsys.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.include_router(build_router(service))
    # the hot path first: the router takes the first full match, the FastAPI-declared
    # routes of the same paths only document it in the OpenAPI schema
    app.router.routes[0:0] = recommendation_routes(service)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    # the last middleware added is the outermost: metrics also see 413s from the body limit
    app.add_middleware(BodyLimitMiddleware, max_bytes=service.settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


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
    body = ErrorResponse(detail=detail, errors=errors)
    return JSONResponse(body.model_dump(), status_code=422)


#: FastAPI's 400 for a body it cannot decode (e.g. not UTF-8): answered like other bad bodies
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        error = FieldError(field="body", message="not valid JSON text (UTF-8 expected)")
        body = ErrorResponse(detail=f"body: {error.message}", errors=[error])
        return JSONResponse(body.model_dump(), status_code=422)
    return JSONResponse(
        {"detail": str(exc.detail), "errors": []},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error", "errors": []}, status_code=500)


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413 before they are parsed."""

    def __init__(self, app: Callable[..., Any], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        message = f"request body over {self.max_bytes} bytes (max_batch events)"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = JSONResponse({"detail": message, "errors": []}, status_code=413)
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_bytes:  # bodies without Content-Length
                raise HTTPException(413, message)
            return event

        await self.app(scope, limited_receive, send)


app = create_app()
