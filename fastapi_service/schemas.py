"""Request and response models of the service API (they define its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from recsys.data.schema import (
    MAX_ID,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    REQUEST_ID_PATTERN,
    transaction_rule,
)
from recsys.names import FALLBACK_SOURCES, Policy, Source

MAX_K = 100
DEFAULT_K = 5
#: the values of recsys.columns.EVENT_TYPES (a test keeps them equal)
EventType = Literal["view", "addtocart", "transaction"]
RequestId = Annotated[
    str,
    Field(
        pattern=REQUEST_ID_PATTERN,
        description="Id of the recommendation response that led to this event.",
    ),
]
#: visitor, item and transaction ids of a posted event: the events contract's range, one rule
#: everywhere; strict: ``true`` or ``"123"`` is not an id (the query's UserId is text by nature)
Id = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]
UserId = Annotated[int, Field(ge=0, le=MAX_ID, description="Visitor id (non-negative integer).")]
TopK = Annotated[int, Field(ge=1, le=MAX_K, description=f"Number of items (1..{MAX_K}).")]


class RecommendationQuery(BaseModel):
    """Parameters of ``GET /recommendations``, declared once.

    The documented route takes them as a query model and its path form as ``UserId`` and
    ``TopK``; the fast path validates the raw strings with this same model, so the OpenAPI
    schema, the rules and the 422 messages are pydantic's, for every form.
    """

    user_id: UserId
    k: TopK = DEFAULT_K


class ScoredItem(BaseModel):
    item_id: int
    score: float | None = Field(description="Ranking score (comparable within one response).")
    reason: str = Field(description="Why the item is shown, e.g. 'you viewed it'.")


class RecommendationResponse(BaseModel):
    user_id: int
    recommendations: list[int] = Field(description="Recommended item ids, best first.")
    items: list[ScoredItem]
    source: Source = Field(
        description="The serving policy for a visitor the model knows; "
        f"{' or '.join(sorted(FALLBACK_SOURCES))} for one it does not."
    )
    model_version: str
    experiment: str = Field(
        description="A/B experiment of the request ('default' outside any experiment)."
    )
    variant: str = Field(description="A/B variant that served the request.")
    request_id: str = Field(description="Pass it back with POST /events to link the events.")


class Event(BaseModel):
    """One event in the RetailRocket shape."""

    model_config = ConfigDict(extra="forbid")

    timestamp: (
        Annotated[int, Field(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS, strict=True)] | None
    ) = Field(
        None,
        description="Epoch milliseconds (years 2000-2099); default: the time it is received.",
    )
    visitorid: Id
    event: EventType
    itemid: Id
    transactionid: Id | None = Field(
        None, description="Required on transaction events, not allowed on the others."
    )
    request_id: RequestId | None = None

    @model_validator(mode="after")
    def _transaction_id_only_on_transactions(self) -> Event:
        problem = transaction_rule(self.event, self.transactionid is not None)
        if problem is not None:
            raise ValueError(problem)
        return self


def _batch_or_single(value: Any) -> str:
    return "batch" if isinstance(value, list) else "event"


#: POST /events body: one event object or a non-empty JSON array of them
EventsBody = Annotated[
    Annotated[Event, Tag("event")] | Annotated[list[Event], Field(min_length=1), Tag("batch")],
    Discriminator(_batch_or_single),
]


class EventsAccepted(BaseModel):
    received: int = Field(description="Events in the request.")
    stored: int = Field(description="Events written to the event store.")


class FieldError(BaseModel):
    field: str = Field(description="Where the problem is, e.g. 'query.k' or 'body[3].event'.")
    message: str


class ErrorResponse(BaseModel):
    code: str = Field(
        description="Stable error code to act on, e.g. 'store_unavailable', 'invalid_request'."
    )
    detail: str = Field(description="What is wrong, in one sentence.")
    errors: list[FieldError] = Field(default_factory=list)


class Live(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    model_version: str | None
    model_source: str | None = Field(description="registry, cache or local.")
    model_uri: str = Field(description="The registry URI served, or 'local bundle'.")
    registry_reachable: bool | None = Field(
        description="Whether the last registry lookup succeeded (null for a local bundle)."
    )
    code: str | None = Field(
        None,
        description="Stable code of the model's last problem (null: none), e.g. "
        "'registry_unreachable', 'model_load_failed', 'serving_cache'.",
    )
    detail: str | None = Field(None, description="That problem in one sentence (details: logs).")
    event_store: Literal["ok", "unavailable"] = Field(
        "ok",
        description="Whether the last use of the event store succeeded; POST /events answers "
        "503 while it is unavailable (recommendations go on).",
    )
    online_history: Literal["ok", "rebuilding", "stale"] = Field(
        "ok",
        description="The visitors' online history: 'rebuilding' from the event store after a "
        "start (not ready: bought items could come back), 'stale' while the store is "
        "unavailable (ready; rebuilt when it returns).",
    )


class ArmInfo(BaseModel):
    experiment: str
    variant: str
    model_version: str
    policy: Policy


class ModelInfo(BaseModel):
    version: str
    uri: str = Field(description="The registry URI served, or 'local bundle'.")
    model_source: str
    policy: Policy
    loaded_at: float = Field(description="Unix time the model was loaded.")
    n_items: int
    n_users: int
    metadata: dict[str, Any]
    arms: list[ArmInfo] = Field(
        default_factory=list,
        description="What each A/B variant serves (empty without experiments).",
    )


class ReloadResponse(BaseModel):
    status: Literal["reloaded", "unchanged"]
    model_version: str
    previous_version: str | None
