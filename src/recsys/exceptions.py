"""Exceptions with messages that name what is wrong and where."""

from __future__ import annotations

#: error messages quote at most this many characters of a bad value
QUOTE_LIMIT = 80


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of ``value`` for an error message: at most ``limit`` characters of it.

    A bad value may be megabytes long; the message shows its start and its length.

    >>> quoted("12a")
    "'12a'"
    >>> quoted("x" * 1000, limit=3)
    "'xxx'... (1,000 characters)"
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(value)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


class RecsysError(Exception):
    """Base class of every error this package raises on purpose."""


class DataValidationError(RecsysError):
    """A data file is missing, unreadable or breaks the RetailRocket contract.

    The message names the file and, where known, the 1-based line (counting the
    header as line 1) and the column.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file, self.line, self.column, self.reason = file, line, column, message
        where = ", ".join(
            part
            for part in (
                file,
                f"line {line}" if line is not None else None,
                f"column {quoted(column)}" if column is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class ConfigurationError(RecsysError, ValueError):
    """A setting or parameter has an invalid value (also a ``ValueError``)."""


class StoreError(RecsysError):
    """The event store cannot be reached or used (refused connection, locked file, a folder
    that cannot be created): the message names the store, password hidden, and the reason."""


class ModelNotFoundError(RecsysError):
    """No model could be resolved from the registry or a local path."""


class DataCheckError(RecsysError):
    """The event store cannot feed a training run: no, too few or stale events, or a broken
    schema. Retrying does not help; the message says what to fix."""
