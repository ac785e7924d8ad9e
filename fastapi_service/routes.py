"""HTTP routes: thin wrappers around :class:`fastapi_service.service.Service`."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import Route

from fastapi_service.schemas import (
    MAX_ID,
    MAX_K,
    ErrorResponse,
    EventsAccepted,
    EventsBody,
    Live,
    ModelInfo,
    Ready,
    RecommendationResponse,
    ReloadResponse,
)
from fastapi_service.service import ReloadError, Service

#: an integer as query/path text: ASCII digits with an optional sign, nothing else
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
_USER_ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_K_PARAMETER = {
    "name": "k",
    "in": "query",
    "required": False,
    "description": f"Number of items (1..{MAX_K}).",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5},
}


def _user_id_parameter(where: str) -> dict[str, Any]:
    return {
        "name": "user_id",
        "in": where,
        "required": True,
        "description": "Visitor id (non-negative integer).",
        "schema": _USER_ID_SCHEMA,
    }


def _integer(
    raw: str | None, where: str, name: str, low: int, high: int, errors: list[dict[str, Any]]
) -> int:
    """Parse one integer parameter, appending a pydantic-style error when it is invalid."""
    loc = (where, name)
    if raw is None:
        errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
    elif not _INTEGER.fullmatch(raw):
        message = "Input should be a valid integer, unable to parse string as an integer"
        errors.append({"type": "int_parsing", "loc": loc, "msg": message, "input": raw})
    elif int(raw) < low:
        message = f"Input should be greater than or equal to {low}"
        errors.append({"type": "greater_than_equal", "loc": loc, "msg": message, "input": raw})
    elif int(raw) > high:
        message = f"Input should be less than or equal to {high}"
        errors.append({"type": "less_than_equal", "loc": loc, "msg": message, "input": raw})
    else:
        return int(raw)
    return -1


def _recommend(service: Service, user_id: str | None, where: str, k: str | None) -> Response:
    """Validate the two integers by hand and answer with JSON serialised here.

    FastAPI's per-parameter validation and response re-validation cost more than the
    ranking of a cold visitor; the hot path does both directly (same rules, same 422
    format, the OpenAPI schema declares the parameters through ``openapi_extra``).
    """
    errors: list[dict[str, Any]] = []
    uid = _integer(user_id, where, "user_id", 0, MAX_ID, errors)
    top = 5 if k is None else _integer(k, "query", "k", 1, MAX_K, errors)
    if errors:
        raise RequestValidationError(errors)
    # orjson: ~10x faster than json.dumps here, and writes a non-finite score as null
    return Response(orjson.dumps(service.recommend(uid, top)), media_type="application/json")


class _GetRoute(Route):
    """A plain Starlette GET route: no FastAPI dependency solving per request.

    GET only (Starlette would add HEAD), so it answers exactly like the FastAPI route of
    the same path that it shadows (405 with ``Allow: GET`` for other methods).
    """

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        super().__init__(path, endpoint, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}


def _recommendation_endpoints(
    service: Service,
) -> tuple[Callable[[Request], Awaitable[Response]], Callable[[Request], Awaitable[Response]]]:
    """The two recommendation endpoints (query and path form), bound to ``service``."""

    async def by_query(request: Request) -> Response:
        # async and short (numpy on a bounded candidate set): no threadpool hop per request
        query = request.query_params
        return _recommend(service, query.get("user_id"), "query", query.get("k"))

    async def by_path(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        return _recommend(service, user_id, "path", request.query_params.get("k"))

    return by_query, by_path


def recommendation_routes(service: Service) -> list[Route]:
    """Plain Starlette routes serving ``GET /recommendations`` and its path form.

    Put them ahead of the FastAPI routes (which stay, for the OpenAPI schema and docs):
    the router takes the first full match, so requests never reach FastAPI's per-request
    dependency solving and parameter handling. Validation, 422 body, response body and
    the metrics route label (the path template) are the same.
    """
    by_query, by_path = _recommendation_endpoints(service)
    return [
        _GetRoute("/recommendations", by_query),
        _GetRoute("/recommendations/{user_id}", by_path),
    ]


_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorResponse,
        "description": "Invalid parameter or body; the message names it.",
    },
}
_NO_MODEL: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No model loaded yet."}
}
_bearer = HTTPBearer(auto_error=False, description="RECSYS_ADMIN_TOKEN")


def build_router(service: Service) -> APIRouter:
    """All routes of the service, bound to ``service``."""
    router = APIRouter()
    by_query, by_path = _recommendation_endpoints(service)
    # declared for the OpenAPI schema and docs; the plain routes of the same paths
    # (recommendation_routes, put first) serve the requests
    for path, where, endpoint, name, summary in (
        ("/recommendations", "query", by_query, "recommendations", "Top-k items for a visitor"),
        (
            "/recommendations/{user_id}",
            "path",
            by_path,
            "recommendations_path",
            "Top-k items for a visitor (path form, for older clients)",
        ),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            name=name,
            tags=["recommendations"],
            response_model=RecommendationResponse,
            responses=_ERRORS | _NO_MODEL,
            summary=summary,
            openapi_extra={"parameters": [_user_id_parameter(where), _K_PARAMETER]},
        )

    @router.post(
        "/events",
        status_code=202,
        tags=["events"],
        responses=_ERRORS
        | {
            413: {"model": ErrorResponse, "description": "Batch or body too large."},
            503: {"model": ErrorResponse, "description": "Event store unavailable."},
        },
        summary="Store one event or a batch and update the visitor's online history",
    )
    async def post_events(body: Annotated[EventsBody, Body()]) -> EventsAccepted:
        return await service.ingest(body if isinstance(body, list) else [body])

    @router.get("/health/live", tags=["health"], summary="The process answers")
    async def live() -> Live:
        return Live()

    @router.get(
        "/health/ready",
        tags=["health"],
        responses={503: {"model": Ready, "description": "No model loaded."}},
        summary="A model is loaded and served",
    )
    async def ready() -> Any:
        model = service.state.current
        body = Ready(
            ready=model is not None,
            model_version=model.version if model else None,
            model_source=model.source if model else None,
            model_uri=service.settings.model_uri,
            registry_reachable=service.state.registry_reachable,
            detail=service.state.last_error,
        )
        return body if model is not None else JSONResponse(body.model_dump(), status_code=503)

    @router.get("/model", tags=["model"], responses=_NO_MODEL, summary="The served model")
    async def model_info() -> ModelInfo:
        model = service.state.current
        if model is None:
            raise HTTPException(503, "no model is loaded yet; see /health/ready")
        return ModelInfo(
            version=model.version,
            uri=model.uri,
            model_source=model.source,
            path=str(model.path),
            policy=model.policy,
            loaded_at=model.loaded_at,
            n_items=model.bundle.n_items,
            n_users=model.bundle.n_users,
            metadata=_json_safe(model.bundle.metadata),
        )

    @router.post(
        "/admin/reload",
        tags=["admin"],
        responses={
            401: {"model": ErrorResponse, "description": "No bearer token."},
            403: {"model": ErrorResponse, "description": "Wrong token or reload disabled."},
            422: _ERRORS[422],
            502: {"model": ErrorResponse, "description": "New model broken; old one serves."},
        },
        summary="Load the model the URI points at now (atomic swap)",
    )
    async def admin_reload(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        force: Annotated[
            bool, Query(description="Reload even if the version did not change.")
        ] = False,
    ) -> Any:
        _check_token(service, credentials)
        previous = service.state.current
        try:
            status, model = await service.reload("admin", force=force)
        except ReloadError as exc:
            serving = previous.version if previous else "nothing"
            error = ErrorResponse(detail=f"{exc}; still serving {serving}")
            return JSONResponse(error.model_dump(), status_code=502)
        return ReloadResponse(
            status=status,
            model_version=model.version,
            previous_version=previous.version if previous else None,
        )

    @router.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def _check_token(service: Service, credentials: HTTPAuthorizationCredentials | None) -> None:
    token = service.settings.admin_token
    if token is None:
        raise HTTPException(403, "reload disabled: RECSYS_ADMIN_TOKEN is not set")
    if credentials is None:
        raise HTTPException(
            401,
            "missing bearer token: send 'Authorization: Bearer <RECSYS_ADMIN_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = credentials.credentials.encode()
    if not secrets.compare_digest(given, token.get_secret_value().encode()):
        raise HTTPException(403, "invalid admin token")


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
