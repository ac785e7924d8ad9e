"""Request and response models of the service API (they define its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from recsys import columns as C
from recsys.data.schema import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

#: ids are stored as int64; larger numbers would overflow numpy and the database
MAX_ID = 2**63 - 1
MAX_K = 100
#: the values of recsys.columns.EVENT_TYPES (a test keeps them equal)
EventType = Literal["view", "addtocart", "transaction"]
RequestId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Id of the recommendation response that led to this event.",
    ),
]
Id = Annotated[int, Field(ge=0, le=MAX_ID)]


class ScoredItem(BaseModel):
    item_id: int
    score: float | None = Field(description="Ranking score (comparable within one response).")
    reason: str = Field(description="Why the item is shown, e.g. 'you viewed it'.")


class RecommendationResponse(BaseModel):
    user_id: int
    recommendations: list[int] = Field(description="Recommended item ids, best first.")
    items: list[ScoredItem]
    source: str = Field(description="model, recent, blend, fold_in or popular.")
    model_version: str
    variant: str = Field(description="A/B variant that served the request.")
    request_id: str = Field(description="Pass it back with POST /events to link the events.")


class Event(BaseModel):
    """One event in the RetailRocket shape."""

    model_config = ConfigDict(extra="forbid")

    timestamp: Annotated[int, Field(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS)] | None = Field(
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
        if self.transactionid is not None and self.event != C.PURCHASE:
            raise ValueError(
                f"transactionid is only allowed on '{C.PURCHASE}' events, not on '{self.event}'"
            )
        if self.transactionid is None and self.event == C.PURCHASE:
            raise ValueError(f"transactionid is required on '{C.PURCHASE}' events")
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
    detail: str = Field(description="What is wrong, in one sentence.")
    errors: list[FieldError] = Field(default_factory=list)


class Live(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    model_version: str | None
    model_source: str | None = Field(description="registry, cache or local.")
    model_uri: str
    registry_reachable: bool | None = Field(
        description="Whether the last registry lookup succeeded (null for a local bundle)."
    )
    detail: str | None = None


class ModelInfo(BaseModel):
    version: str
    uri: str
    model_source: str
    path: str
    policy: str
    loaded_at: float = Field(description="Unix time the model was loaded.")
    n_items: int
    n_users: int
    metadata: dict[str, Any]


class ReloadResponse(BaseModel):
    status: Literal["reloaded", "unchanged"]
    model_version: str
    previous_version: str | None
