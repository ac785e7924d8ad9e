"""Domain errors of the service: what went wrong, in the service's own terms.

The service, the model manager and the route dependencies raise these; none of them knows
HTTP. :func:`fastapi_service.app.create_app` registers the one table that maps each of them
(and the library's :class:`~recsys.exceptions.DataValidationError` and
:class:`~recsys.exceptions.ConfigurationError`) to a status code and the ``ErrorResponse`` body.

Each error has a stable ``code`` clients can act on; its message is written for clients too
(no paths, no driver errors: those go to the log).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class of the errors the service raises on purpose; the message is the answer."""

    code = "service_error"


class ModelNotReady(ServiceError):
    """No model is loaded yet (or none could be): nothing to recommend with."""

    code = "model_not_ready"


class EventRejected(ServiceError):
    """A posted event breaks a rule the request schema cannot check (e.g. the clock's)."""

    code = "invalid_event"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class StoreUnavailable(ServiceError):
    """The event store could not be opened or did not take a write."""

    code = "store_unavailable"


class BatchTooLarge(ServiceError):
    """A POST body or event batch over the configured limit."""

    code = "too_large"


class ReloadFailed(ServiceError):
    """A reload did not produce a servable model; the previous model keeps serving."""

    code = "reload_failed"


class Unauthorized(ServiceError):
    """No bearer token was sent to an admin endpoint."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The admin endpoint refuses the request (see the subclasses)."""

    code = "forbidden"


class AdminDisabled(Forbidden):
    """Admin endpoints are off: no admin token is configured."""


class InvalidToken(Forbidden):
    """The bearer token is not the configured admin token."""
