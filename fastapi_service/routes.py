"""HTTP routes: thin wrappers around the service and the model manager.

``router`` holds the documented FastAPI routes. The two hot paths are also served without
FastAPI's per-request dependency solving, body handling and response validation (they cost
more than ranking a cold visitor): ``GET /recommendations`` (both forms) by the
:class:`FastRecommendations` middleware, ``POST /events`` by the :class:`FastEvents` route put
ahead of the router (it takes the first full match). Both validate with the same schema types
(:class:`~fastapi_service.schemas.RecommendationQuery`,
:data:`~fastapi_service.schemas.EventsBody`), call the same service methods, and hand what
they cannot answer (invalid input, errors) to the documented route, so the two cannot drift
apart.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import QueryParams
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_service.dependencies import (
    ManagerDep,
    MetricsDep,
    ServiceDep,
    SettingsDep,
    require_admin,
)
from fastapi_service.model_manager import PROBLEMS, public_uri
from fastapi_service.schemas import (
    DEFAULT_K,
    ArmInfo,
    ErrorResponse,
    Event,
    EventsAccepted,
    EventsBody,
    Live,
    ModelInfo,
    Ready,
    RecommendationQuery,
    RecommendationResponse,
    ReloadResponse,
    TopK,
    UserId,
)
from fastapi_service.service import Service

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid parameter or body; the message names it."}
}
_NO_MODEL: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "No model loaded yet."}
}

#: FastAPI keeps the rules of an ``Annotated`` field type under ``Path()``/``Query()`` but not
#: its description: the path form reads those from the one declaration too
_PARAMETERS = RecommendationQuery.model_fields

router = APIRouter()


def _body(service: Service, query: RecommendationQuery) -> bytes:
    """The recommendation as JSON (every route form, documented and fast)."""
    # orjson: ~10x faster than json.dumps here, and writes a non-finite score as null
    return orjson.dumps(service.recommend(query.user_id, query.k))


def _answer(service: Service, query: RecommendationQuery) -> Response:
    return Response(_body(service, query), media_type="application/json")


@router.get(
    "/recommendations",
    name="recommendations",
    tags=["recommendations"],
    response_model=RecommendationResponse,
    responses=_INVALID | _NO_MODEL,
    summary="Top-k items for a visitor",
)
async def recommendations(
    query: Annotated[RecommendationQuery, Query()], service: ServiceDep
) -> Response:
    """Top-k items for a visitor, best first, with scores, reasons and where they came from.

    (Served by the fast path of the same path; this route declares it.)
    """
    return _answer(service, query)


@router.get(
    "/recommendations/{user_id}",
    name="recommendations_path",
    tags=["recommendations"],
    response_model=RecommendationResponse,
    responses=_INVALID | _NO_MODEL,
    summary="Top-k items for a visitor (path form, for older clients)",
)
async def recommendations_path(
    user_id: Annotated[UserId, Path(description=_PARAMETERS["user_id"].description)],
    service: ServiceDep,
    k: Annotated[TopK, Query(description=_PARAMETERS["k"].description)] = DEFAULT_K,
) -> Response:
    """The same answer as ``GET /recommendations?user_id=...``."""
    # already validated by FastAPI with the same field types: no second validation
    return _answer(service, RecommendationQuery.model_construct(user_id=user_id, k=k))


class FastRecommendations:
    """ASGI middleware answering ``GET /recommendations`` (both forms) ahead of the app's
    middleware, router and FastAPI's per-request dependency solving and response validation
    (together more than the ranking of a warm visitor).

    The raw parameter strings are validated with the one
    :class:`~fastapi_service.schemas.RecommendationQuery` and answered by the same
    ``service.recommend``; a request it cannot answer (invalid parameters, no model yet, any
    error) goes on to the documented route, which answers or names the error exactly as
    without this shortcut (nothing happened before the error: ranking has no side effect
    until it succeeds). ``scope["route"]`` is set to the documented route, so the request
    metrics keep its template. ``app.state.fast_path = False`` turns it off (tests compare).
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state
        self._routes = {
            form: next(r for r in router.routes if getattr(r, "name", None) == name)
            for form, name in ((False, "recommendations"), (True, "recommendations_path"))
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self.state.fast_path:
            match = _RECOMMENDATIONS.fullmatch(scope["path"])
            body = None if match is None else self._answer(scope, match.group(1))
            if body is not None:
                scope["route"] = self._routes[match.group(1) is not None]  # type: ignore[union-attr]
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope, user_id: str | None) -> bytes | None:
        raw = dict(QueryParams(scope["query_string"].decode("latin-1")))
        if user_id is not None:
            raw["user_id"] = user_id
        try:
            query = RecommendationQuery.model_validate(raw)
            return _body(self.state.service, query)
        except Exception:  # the documented route answers it, or names the error
            return None


_RECOMMENDATIONS = re.compile(r"/recommendations(?:/([^/]+))?")


_EVENTS_BODY: TypeAdapter[Event | list[Event]] = TypeAdapter(EventsBody)


class FastEvents(Route):
    """``POST /events`` with a valid JSON body, validated by pydantic straight from the bytes
    with the one :data:`~fastapi_service.schemas.EventsBody` type: the posting visitor's
    common case, without FastAPI's body handling (measured at full scale, with the orjson
    rows: 0.36 -> 0.21-0.29 ms of server CPU per single-event request).

    Any other request (another content type, a body that does not validate) is handed, with
    the bytes already read, to the documented route it shadows: every error is answered
    there, exactly as without this route.
    """

    def __init__(self, documented: APIRoute) -> None:
        super().__init__(documented.path, self._never, methods=["POST"], include_in_schema=False)
        self.methods = {"POST"}  # not HEAD: 405 for other methods, as the documented route
        self.documented = documented

    @staticmethod
    async def _never(_: Request) -> Response:  # pragma: no cover - handle() answers
        raise AssertionError("FastEvents answers in handle()")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        media_type = request.headers.get("content-type", "").partition(";")[0].strip()
        events = None
        if media_type.lower() == "application/json":
            with contextlib.suppress(ValidationError):  # answered by the documented route
                events = _EVENTS_BODY.validate_json(body)
        if events is None:
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if sent:
                    return await receive()  # the disconnect, whenever it comes
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.documented.handle(scope, replay, send)
            return
        service: Service = request.app.state.service
        accepted = await service.ingest(events if isinstance(events, list) else [events])
        await Response(orjson.dumps(accepted.model_dump()), 202, media_type="application/json")(
            scope, receive, send
        )


@router.post(
    "/events",
    status_code=202,
    tags=["events"],
    responses=_INVALID
    | {
        413: {"model": ErrorResponse, "description": "Batch or body too large."},
        503: {"model": ErrorResponse, "description": "Event store unavailable."},
    },
    summary="Store one event or a batch and update the visitor's online history",
)
async def post_events(body: Annotated[EventsBody, Body()], service: ServiceDep) -> EventsAccepted:
    """Store the events and fold them into the visitors' online histories at once."""
    return await service.ingest(body if isinstance(body, list) else [body])


#: served ahead of ``router`` (see the module docstring); same path, same answers
fast_routes: list[Route] = [
    FastEvents(
        next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is post_events)
    ),
]


@router.get("/health/live", tags=["health"], summary="The process answers")
async def live() -> Live:
    """Always ``ok`` while the process serves HTTP."""
    return Live()


@router.get(
    "/health/ready",
    tags=["health"],
    response_model=Ready,
    responses={503: {"model": Ready, "description": "No model loaded."}},
    summary="A model is loaded and served",
)
async def ready(manager: ManagerDep, settings: SettingsDep, service: ServiceDep) -> Response:
    """200 once a model is loaded and the online history rebuilt, else 503 (the reason in
    ``detail``)."""
    model = manager.current
    ready = model is not None and service.history_ready
    body = Ready(
        ready=ready,
        model_version=model.version if model else None,
        model_source=model.source if model else None,
        model_uri=public_uri(settings.model_uri),
        registry_reachable=manager.registry_reachable,
        code=manager.problem,
        detail=PROBLEMS.get(manager.problem or ""),
        event_store="ok" if service.store_up else "unavailable",
        online_history=service.history_status,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/model", tags=["model"], responses=_NO_MODEL, summary="The served model")
async def model_info(manager: ManagerDep) -> ModelInfo:
    """Version, origin, policy, size and metadata of the served model."""
    model = manager.served()
    return ModelInfo(
        version=model.version,
        uri=public_uri(model.uri),
        model_source=model.source,
        policy=model.policy,
        loaded_at=model.loaded_at,
        n_items=model.bundle.n_items,
        n_users=model.bundle.n_users,
        metadata=_json_safe(model.bundle.metadata),
        arms=[
            ArmInfo(experiment=e, variant=v, model_version=arm.version, policy=arm.policy)
            for (e, v), arm in model.arms.items()
        ],
    )


@router.post(
    "/admin/reload",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=_INVALID
    | {
        401: {"model": ErrorResponse, "description": "No bearer token."},
        403: {"model": ErrorResponse, "description": "Wrong token or reload disabled."},
        502: {"model": ErrorResponse, "description": "New model broken; old one serves."},
    },
    summary="Load the model the URI points at now (atomic swap)",
)
async def admin_reload(
    manager: ManagerDep,
    force: Annotated[bool, Query(description="Reload even if the version did not change.")] = False,
) -> ReloadResponse:
    """Resolve the model URI now and swap the new model in; a broken one leaves the old serving."""
    result = await manager.reload("admin", force=force)
    return ReloadResponse(
        status=result.status,
        model_version=result.model.version,
        previous_version=result.previous.version if result.previous else None,
    )


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."}},
    summary="Prometheus metrics",
)
async def metrics(service_metrics: MetricsDep) -> Response:
    """The Prometheus exposition text (``recsys_*`` plus process metrics)."""
    return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
