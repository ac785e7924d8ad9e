"""Event store: the RetailRocket events and the served exposures in a SQL database.

It is the one source of training data: ``recsys data import`` puts the files in (events, the
category/availability rows of the item property log, the category tree), the service's
``POST /events`` appends live events, and training reads the window it needs from here.

One SQLAlchemy Core schema for SQLite (default, a local file) and PostgreSQL (psycopg 3).
Importing the same events twice stores them once: a unique index over
``(timestamp, visitorid, event, itemid, COALESCE(transactionid, -1))`` — the ``-1`` lives
only inside the index expression (ids are never negative), the column itself stays NULL —
and every insert skips conflicting rows (``ON CONFLICT DO NOTHING``). PostgreSQL bulk
loads go through ``COPY`` into a temporary table; SQLite uses chunked ``executemany`` in
one transaction.

Why one module of this size: every table, both dialects' bulk paths (COPY, chunked
``executemany``) and the checks of posted rows share private helpers (the stage table, the
schema lock, the row conversion); split, those would become an API with a single user.
"""

from __future__ import annotations

import functools
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    case,
    create_engine,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.schema import CreateTable

from recsys import columns as C
from recsys.config import Settings
from recsys.data import schema
from recsys.data.load import (
    Dataset,
    build_category_tree_frame,
    build_events_frame,
    build_properties_frame,
    load_category_tree,
    load_events,
    load_item_properties,
)
from recsys.exceptions import (
    ConfigurationError,
    DataValidationError,
    RecsysError,
    StoreError,
    quoted,
)

log = logging.getLogger(__name__)

_CHUNK = 100_000
#: PostgreSQL advisory lock key held while the schema is created
_SCHEMA_LOCK = 0x7265637379730F  # "recsys", issue 15
_SQLITE_REBUILD_ROWS = 200_000
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
_EVENT_LIST = ", ".join(f"'{e}'" for e in C.EVENT_TYPES)
_EVENT_INSERT_COLUMNS = (*C.EVENTS_COLUMNS, C.REQUEST_ID)
#: a posted event as the store takes it: _EVENT_INSERT_COLUMNS in order (None: missing)
EventRow = tuple[int, int, str, int, int | None, str | None]
_EVENT_CODES = {name: i for i, name in enumerate(C.EVENT_TYPES)}
_TEXT = String(schema.TEXT_LENGTH)

metadata = MetaData()

#: columns of :meth:`EventStore.read_outcomes` beside the events' own
LINKED_EXPERIMENT = "linked_experiment"
OUTCOME_COLUMNS = (
    C.TIMESTAMP,
    C.VISITOR,
    C.EVENT,
    C.ITEM,
    C.REQUEST_ID,
    LINKED_EXPERIMENT,
)
#: column of :meth:`EventStore.visitor_activity`
ACTIVITY = "events"

events_table = Table(
    "events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column(C.TIMESTAMP, BigInteger, nullable=False),
    Column(C.VISITOR, BigInteger, nullable=False),
    Column(C.EVENT, String(16), nullable=False),
    Column(C.ITEM, BigInteger, nullable=False),
    Column(C.TRANSACTION, BigInteger, nullable=True),
    Column(C.REQUEST_ID, _TEXT, nullable=True),
    CheckConstraint(f"{C.EVENT} IN ({_EVENT_LIST})", name="ck_events_event"),
    CheckConstraint(
        f"({C.EVENT} = '{C.PURCHASE}') = ({C.TRANSACTION} IS NOT NULL)",
        name="ck_events_transaction",
    ),
)
# Leads with timestamp, so it also serves time-window reads (no separate timestamp index).
Index(
    "uq_events_natural",
    events_table.c[C.TIMESTAMP],
    events_table.c[C.VISITOR],
    events_table.c[C.EVENT],
    events_table.c[C.ITEM],
    func.coalesce(events_table.c[C.TRANSACTION], -1),
    unique=True,
)
_VISITOR_INDEX = Index("ix_events_visitorid", events_table.c[C.VISITOR])

#: the item properties training reads (every other property of RetailRocket is hashed)
TRAINING_PROPERTIES = (C.CATEGORY, C.AVAILABLE)

item_properties_table = Table(
    "item_properties",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column(C.TIMESTAMP, BigInteger, nullable=False),
    Column(C.ITEM, BigInteger, nullable=False),
    Column(C.PROPERTY, _TEXT, nullable=False),
    Column(C.VALUE, Text, nullable=False),
)
# leads with the item: the log is read per item and property in time order
Index(
    "uq_item_properties_natural",
    item_properties_table.c[C.ITEM],
    item_properties_table.c[C.PROPERTY],
    item_properties_table.c[C.TIMESTAMP],
    item_properties_table.c[C.VALUE],
    unique=True,
)
_PROPERTY_COLUMNS = (C.TIMESTAMP, C.ITEM, C.PROPERTY, C.VALUE)

category_tree_table = Table(
    "category_tree",
    metadata,
    Column(C.CATEGORY, BigInteger, primary_key=True, autoincrement=False),
    Column(C.PARENT, BigInteger, nullable=True),
)
_TREE_COLUMNS = (C.CATEGORY, C.PARENT)
# the tree file is a snapshot: a category's parent is the one of the latest import
_TREE_UPSERT = (
    f"ON CONFLICT ({C.CATEGORY}) DO UPDATE SET {C.PARENT} = excluded.{C.PARENT} "
    f"WHERE category_tree.{C.PARENT} IS DISTINCT FROM excluded.{C.PARENT}"
)
_SKIP = "ON CONFLICT DO NOTHING"


def _stage_table(table: Table, columns: Sequence[str]) -> Table:
    """COPY target for PostgreSQL bulk loads: ``columns`` of ``table``, same types."""
    return Table(
        f"{table.name}_stage",
        MetaData(),
        *(Column(c.name, c.type) for c in table.c if c.name in columns),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


exposures_table = Table(
    "exposures",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column(C.REQUEST_ID, _TEXT, nullable=False, unique=True),
    Column(C.TIMESTAMP, BigInteger, nullable=False),
    Column(C.VISITOR, BigInteger, nullable=False),
    Column(C.EXPERIMENT, _TEXT, nullable=False),
    Column(C.VARIANT, _TEXT, nullable=False),
    Column(C.MODEL_VERSION, _TEXT, nullable=False),
    Column(C.ITEM_IDS, Text, nullable=False),
    Index("ix_exposures_timestamp", C.TIMESTAMP),
    Index("ix_exposures_visitorid", C.VISITOR),
)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _operation(
    method: Callable[Concatenate[EventStore, _P], _R],
) -> Callable[Concatenate[EventStore, _P], _R]:
    """A store operation: a database it cannot reach or use is a :class:`StoreError`, and
    after any database error the next operation checks the schema again (a database dropped
    and re-created gets its tables back)."""

    @functools.wraps(method)
    def operation(store: EventStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(store, *args, **kwargs)
        except RecsysError:
            raise
        except Exception as exc:
            store._schema_ready = False
            reason = store.unreachable(exc)
            if reason is None:
                raise
            raise StoreError(f"event store {safe_url(store.url)}: {reason}") from exc

    return operation


def safe_url(url: str | URL) -> str:
    """A database URL without its password, fit to print or log.

    ``"<unparsable url>"`` when ``url`` is not a database URL.
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # whatever the input, never fail (nor leak it) while reporting
        return "<unparsable url>"


def _bad(mask: np.ndarray | pd.Series, column: str, reason: str) -> None:
    mask = np.asarray(mask, bool)
    if mask.any():
        first = int(np.argmax(mask))
        raise DataValidationError(
            f"row {first}: {reason} ({int(mask.sum())} row(s) fail this check)", column=column
        )


def _int_column(df: pd.DataFrame, name: str, *, nullable: bool = False) -> np.ndarray:
    """int64 values of ``df[name]`` (``-1`` for missing where allowed); no lossy casts."""
    try:
        values = pd.array(df[name], dtype="Int64")
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"not integers: {exc}", column=name) from exc
    missing = np.asarray(values.isna(), bool)
    if not nullable:
        _bad(missing, name, "missing value")
    filled = np.asarray(values.fillna(-1), np.int64)
    _bad(~missing & (filled < 0), name, "negative id")
    return filled


def _check_length(values: pd.Series, column: str, limit: int = schema.TEXT_LENGTH) -> None:
    _bad(values.str.len().fillna(0).to_numpy() > limit, column, f"longer than {limit} characters")


def _validated_events(df: pd.DataFrame) -> list[EventRow]:
    """Check a frame of posted events against the events contract; its rows as tuples."""
    for name in C.EVENTS_COLUMNS:
        if name not in df.columns:
            raise DataValidationError("missing column", column=name)
    ts, visitors, items = (_int_column(df, c).tolist() for c in (C.TIMESTAMP, C.VISITOR, C.ITEM))
    tx = _int_column(df, C.TRANSACTION, nullable=True)
    request: list[str | None] = [None] * len(df)
    if C.REQUEST_ID in df.columns:
        request = [None if pd.isna(r) else str(r) for r in df[C.REQUEST_ID].astype(object)]
    rows = zip(
        ts,
        visitors,
        df[C.EVENT].astype(object).tolist(),
        items,
        [None if t < 0 else t for t in tx.tolist()],
        request,
        strict=True,
    )
    return _validated_event_rows(list(rows))


def _int_list(values: Sequence[Any], name: str, nullable: bool = False) -> np.ndarray:
    """int64 array of plain Python ints (``-1`` for None where allowed)."""
    missing = np.array([v is None for v in values], dtype=bool)
    if not nullable:
        _bad(missing, name, "missing value")
    _bad([v is not None and type(v) is not int for v in values], name, "not an integer")
    try:
        filled = np.array([-1 if v is None else v for v in values], dtype=np.int64)
    except OverflowError as exc:
        raise DataValidationError("integer out of the 64-bit range", column=name) from exc
    _bad(~missing & (filled < 0), name, "negative id")
    return filled


def _validated_event_rows(rows: Sequence[Sequence[Any]]) -> list[EventRow]:
    """Check plain event rows (:data:`EventRow`) against the events contract, without
    pandas (the service's small batches); an empty request id means none."""
    if not rows:
        return []
    if any(len(row) != len(_EVENT_INSERT_COLUMNS) for row in rows):
        raise DataValidationError(f"rows of {len(_EVENT_INSERT_COLUMNS)} fields expected")
    ts, visitors, events, items, tx, request = (list(c) for c in zip(*rows, strict=True))
    codes = np.array([_EVENT_CODES.get(e, -1) if isinstance(e, str) else -1 for e in events])
    has_tx = _int_list(tx, C.TRANSACTION, nullable=True)
    ids = {C.VISITOR: _int_list(visitors, C.VISITOR), C.ITEM: _int_list(items, C.ITEM)}
    ids[C.TRANSACTION] = has_tx
    violations = schema.event_violations(_int_list(ts, C.TIMESTAMP), codes, has_tx >= 0, ids)
    for bad, column, reason in violations:
        _bad(bad, column, reason)
    request = [r if r else None for r in request]
    limit = schema.TEXT_LENGTH
    _bad(
        [r is not None and (not isinstance(r, str) or len(r) > limit) for r in request],
        C.REQUEST_ID,
        f"not a text of at most {limit} characters",
    )
    return list(zip(ts, visitors, events, items, tx, request, strict=True))


def _nullable(values: pd.Series) -> list[Any]:
    """Python values with None for missing ones (what DBAPI drivers bind as NULL)."""
    return values.astype(object).where(values.notna(), None).tolist()


def _item_text(ids: Any) -> str:
    """One exposure's item ids (a sequence, or comma-separated text) as canonical text."""
    parts = ids.split(",") if isinstance(ids, str) else ids
    try:
        return ",".join(str(int(i)) for i in parts if not (isinstance(i, str) and i == ""))
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            f"not a list of item ids: {quoted(ids)}", column=C.ITEM_IDS
        ) from exc


def parse_item_ids(texts: Iterable[str]) -> pd.Series:
    """Stored item-id texts (``"3,1,2"``) as lists of ints, one per text.

    >>> parse_item_ids(["3,1,2", ""]).tolist()
    [[3, 1, 2], []]
    """
    return pd.Series(
        [[int(i) for i in text.split(",")] if text else [] for text in texts], dtype=object
    )


def _validated_exposures(df: pd.DataFrame) -> Sequence[Sequence[Any]]:
    """Check an exposures frame; its rows as tuples in EXPOSURES_COLUMNS order."""
    for name in C.EXPOSURES_COLUMNS:
        if name not in df.columns:
            raise DataValidationError("missing column", column=name)
    if df.empty:
        return []
    texts = {}
    for name in (C.REQUEST_ID, C.EXPERIMENT, C.VARIANT, C.MODEL_VERSION):
        _bad(df[name].isna(), name, "missing value")
        texts[name] = df[name].astype(str).tolist()
        _check_length(pd.Series(texts[name], dtype=object), name)
    return list(
        zip(
            texts[C.REQUEST_ID],
            _int_column(df, C.TIMESTAMP).tolist(),
            _int_column(df, C.VISITOR).tolist(),
            texts[C.EXPERIMENT],
            texts[C.VARIANT],
            texts[C.MODEL_VERSION],
            [_item_text(ids) for ids in df[C.ITEM_IDS]],
            strict=True,
        )
    )


def _json_scalar(value: Any) -> Any:
    """numpy scalars as Python numbers for :func:`_json`."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _json(rows: Any) -> str:
    """Rows as one JSON text parameter (orjson, faster than ``json.dumps``; text, since
    SQLite reads a bytes parameter as JSONB)."""
    return orjson.dumps(rows, default=_json_scalar).decode()


def _check_exposure_labels(rows: Sequence[Sequence[Any]]) -> None:
    """Length check of the per-batch repeated texts (experiment, variant, model version)."""
    positions = (
        C.EXPOSURES_COLUMNS.index(C.EXPERIMENT),
        C.EXPOSURES_COLUMNS.index(C.MODEL_VERSION),
    )
    labels = {tuple(row[positions[0] : positions[1] + 1]) for row in rows}
    for label in labels:
        for name, value in zip((C.EXPERIMENT, C.VARIANT, C.MODEL_VERSION), label, strict=True):
            if not isinstance(value, str) or len(value) > schema.TEXT_LENGTH:
                raise DataValidationError(
                    f"not a text of at most {schema.TEXT_LENGTH} characters: {quoted(value)}",
                    column=name,
                )


@dataclass(frozen=True)
class Imported:
    """New rows per table of one :meth:`EventStore.import_folder`."""

    events: int
    item_properties: int
    category_tree: int
    #: events of the file dated after the clock + the contract's tolerance (stored, flagged)
    future_events: int = 0


def _window(query: Select[Any], t: Any, start_ms: int | None, end_ms: int | None) -> Select[Any]:
    """``query`` restricted to ``start_ms <= timestamp < end_ms`` (None: unbounded)."""
    if start_ms is not None:
        query = query.where(t[C.TIMESTAMP] >= int(start_ms))
    if end_ms is not None:
        query = query.where(t[C.TIMESTAMP] < int(end_ms))
    return query


def _executemany_rows(
    raw: Any,
    table: Table,
    columns: Sequence[str],
    rows: pd.DataFrame,
    conflict: str,
) -> int:
    """SQLite: chunked ``executemany`` inside the caller's transaction; the rows written."""
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))}) {conflict}"
    # Python values; None where a nullable column is missing (what the driver binds as NULL)
    values = [_nullable(rows[c]) if rows[c].hasnans else rows[c].tolist() for c in columns]
    cursor = raw.cursor()
    added = 0
    try:
        for start in range(0, len(rows), _CHUNK):
            end = start + _CHUNK
            cursor.executemany(sql, zip(*(c[start:end] for c in values), strict=True))
            added += max(cursor.rowcount, 0)
    finally:
        cursor.close()
    return added


def _copy_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: pd.DataFrame,
    conflict: str,
) -> int:
    """PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT ... SELECT``; the rows
    written."""
    names = ", ".join(f'"{c}"' for c in columns)
    stage = _stage_table(table, columns)
    # CSV COPY reads an unquoted empty field as NULL: not for required text (an empty value)
    texts = [c for c in columns if not table.c[c].nullable and isinstance(table.c[c].type, String)]
    force = f", FORCE_NOT_NULL ({', '.join(texts)})" if texts else ""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(str(CreateTable(stage).compile(dialect=conn.dialect)))
        with cur.copy(f"COPY {stage.name} ({names}) FROM STDIN (FORMAT csv{force})") as copy:
            for start in range(0, len(rows), _CHUNK):
                buffer = io.StringIO()
                # NA is written unquoted-empty, which CSV COPY reads as NULL
                rows.iloc[start : start + _CHUNK].to_csv(buffer, header=False, index=False)
                copy.write(buffer.getvalue())
        cur.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage.name} {conflict}"
        )
        return max(cur.rowcount, 0)


def _counts_by_slice(keys: Sequence[Sequence[Any]], bounds: Any, written: list[Any]) -> list[int]:
    """How many of the keys (:data:`~recsys.columns.EVENTS_COLUMNS` values, the store's
    unique key) of each slice ``bounds[i]:bounds[i + 1]`` are among ``written``; a key
    written once and given twice counts for its first slice."""
    fresh = Counter(map(tuple, written))
    counts = []
    for first, stop in pairwise(bounds):
        count = 0
        for key in map(tuple, keys[first:stop]):
            if fresh[key] > 0:
                fresh[key] -= 1
                count += 1
        counts.append(count)
    return counts


class EventStore:
    """Events and exposures in a SQL database (SQLite or PostgreSQL).

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///var/events.db`` or
        ``postgresql+psycopg://user@host:5432/db`` (plain ``postgresql://`` is taken
        to mean psycopg 3). Constructing the store neither connects nor creates files;
        the first operation creates the schema when it is missing.
    timeout_s : float, optional
        How long to wait for a locked SQLite file or a database connection (default:
        ``RECSYS_DB_TIMEOUT_S``, 30 s).

    Raises
    ------
    StoreError
        From any operation, when the database cannot be reached or used (a refused
        connection, a locked file, a folder that cannot be created): one line naming the
        store and the driver's reason.
    """

    def __init__(self, url: str, timeout_s: float | None = None) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"not a database URL: {url!r}") from exc
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL"
            )
        timeout = Settings().db_timeout_s if timeout_s is None else timeout_s
        connect_args: dict[str, Any] = (
            {"timeout": timeout}
            if self.dialect == "sqlite"
            else {"connect_timeout": max(1, round(timeout))}
        )
        # pre-ping: a connection the server dropped (restart, failover, killed) is replaced
        # before use instead of failing the next request
        self.engine: Engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
        self._schema_ready = False

    def unreachable(self, exc: BaseException) -> str | None:
        """Why ``exc`` says the database cannot be reached or used (one line), else None.

        PEP 249's OperationalError and InterfaceError of the driver (refused or lost
        connection, missing database, locked file), raw or wrapped by SQLAlchemy.
        """
        driver = exc.orig if isinstance(exc, DBAPIError) else exc
        dbapi = self.engine.dialect.loaded_dbapi
        if not isinstance(driver, dbapi.OperationalError | dbapi.InterfaceError):
            return None
        lines = str(driver).strip().splitlines()
        return lines[0] if lines else type(driver).__name__

    def __repr__(self) -> str:
        return f"EventStore({safe_url(self.url)!r})"

    # ------------------------------------------------------------------ schema

    @_operation
    def create_schema(self) -> None:
        """Create the tables and indexes if missing (and the SQLite file's folder)."""
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            folder = Path(self.url.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"event store {safe_url(self.url)}: cannot create the folder {folder}: "
                    f"{exc.strerror or exc}"
                ) from exc
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # concurrent first imports would race on CREATE TABLE (pg_type's unique index):
                # one at a time, the others then find the tables there
                conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            metadata.create_all(conn)
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            # readers (the service) keep working while an import writes
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        self._schema_ready = True

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            self.create_schema()

    def _fetch(self, query: Select[Any]) -> list[tuple[Any, ...]]:
        """All rows of ``query`` as plain tuples.

        Straight from the DBAPI cursor: SQLAlchemy ``Row`` objects cost microseconds each
        in numpy/pandas constructors, seconds over millions of events. The queries only
        bind integers, rendered as literals.
        """
        sql = str(
            query.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True})
        )
        with self.engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql)
                return list(cursor.fetchall())
            finally:
                cursor.close()

    # ------------------------------------------------------------------ events

    @_operation
    def import_folder(self, folder: str | Path) -> Imported:
        """Validate the RetailRocket files of ``folder`` and store what training reads.

        ``events.csv`` is required (see :func:`~recsys.data.load.load_events`); the item
        property parts (only their :data:`TRAINING_PROPERTIES` rows are stored) and
        ``category_tree.csv`` are imported when present, so a folder of new events alone
        imports too. Importing the same files twice adds nothing.

        Events dated after this machine's clock + the contract's tolerance are stored (the
        file is valid whatever the clock of the importing machine) but counted and logged as
        a warning; training's interval end ignores them.

        Returns
        -------
        Imported
            New rows per table.
        """
        folder = Path(folder)
        path = folder / C.EVENTS_FILE
        events = load_events(path)
        # already validated by the loader: no second pass over millions of rows
        added = self._insert_events(events[list(C.EVENTS_COLUMNS)].assign(**{C.REQUEST_ID: None}))
        log.info("%s: %d events read, %d new in the store", path, len(events), added)
        future = int((events[C.TIMESTAMP].to_numpy() > schema.future_limit_ms()).sum())
        if future:
            log.warning(
                "%s: %d event(s) dated more than %d s after this machine's clock (newest %d): "
                "stored, but training ignores them",
                path,
                future,
                schema.FUTURE_TOLERANCE_MS // 1000,
                int(events[C.TIMESTAMP].max()),
            )
        properties = tree = 0
        parts = [folder / name for name in C.PROPERTIES_FILES]
        if any(part.is_file() for part in parts):
            properties = self.append_item_properties(load_item_properties(parts))
        if (folder / C.CATEGORY_TREE_FILE).is_file():
            tree = self.replace_category_tree(load_category_tree(folder / C.CATEGORY_TREE_FILE))
        return Imported(added, properties, tree, future)

    @_operation
    def append_item_properties(self, props: pd.DataFrame) -> int:
        """Store the :data:`TRAINING_PROPERTIES` rows of a validated property log.

        Parameters
        ----------
        props : pd.DataFrame
            As :func:`~recsys.data.load.load_item_properties` returns it.

        Returns
        -------
        int
            Number of rows that were not stored yet.
        """
        keep = props[C.PROPERTY].isin(TRAINING_PROPERTIES).to_numpy(dtype=bool)
        rows = props.loc[keep, list(_PROPERTY_COLUMNS)].astype({C.PROPERTY: str})
        added = self._insert(item_properties_table, _PROPERTY_COLUMNS, rows, _SKIP)
        log.info("item properties: %d training rows, %d new in the store", len(rows), added)
        return added

    @_operation
    def replace_category_tree(self, tree: pd.DataFrame) -> int:
        """Store a validated category tree; a category's stored parent becomes the given one.

        Returns
        -------
        int
            Number of categories added or given a new parent.
        """
        rows = tree[list(_TREE_COLUMNS)]
        added = self._insert(category_tree_table, _TREE_COLUMNS, rows, _TREE_UPSERT)
        log.info("category tree: %d categories, %d new or changed", len(rows), added)
        return added

    @_operation
    def append_events(self, df: pd.DataFrame) -> int:
        """Store events posted by the service.

        Parameters
        ----------
        df : pd.DataFrame
            The :func:`~recsys.data.load.load_events` columns (``datetime`` optional,
            ignored) and optionally ``request_id``; ``transactionid`` exactly on
            transaction rows.

        Returns
        -------
        int
            Number of new events (exact repeats of stored events are skipped).

        Raises
        ------
        DataValidationError
            A column is missing or a row breaks the events contract (nothing is written).
        """
        [added] = self._insert_event_rows(_validated_events(df), [len(df)])
        return added

    @_operation
    def append_event_batches(
        self, rows: Sequence[Sequence[Any]], sizes: Sequence[int]
    ) -> list[int]:
        """:meth:`append_events` for several clients' batches at once (the service's group
        commit), as plain :data:`EventRow` tuples: ``rows`` is their concatenation, ``sizes``
        their lengths; one transaction, one count of new events per batch."""
        return self._insert_event_rows(_validated_event_rows(rows), sizes)

    def _insert_event_rows(self, rows: Sequence[EventRow], sizes: Sequence[int]) -> list[int]:
        """Insert validated rows with one statement, the batch as one JSON parameter (the
        database unpacks it in C, with the GIL released once; no pandas, no per-row driver
        call); the new rows of each of the consecutive slices of ``sizes``."""
        self._ensure_schema()
        bounds = np.cumsum([0, *sizes])
        if bounds[-1] != len(rows):
            raise ValueError(f"sizes add up to {bounds[-1]}, not the {len(rows)} rows")
        if not rows:
            return [0] * len(sizes)
        names = ", ".join(f'"{c}"' for c in _EVENT_INSERT_COLUMNS)
        texts = {C.EVENT, C.REQUEST_ID}
        if self.dialect == "postgresql":
            fields = ", ".join(
                f"e->>{i}" if c in texts else f"(e->>{i})::bigint"
                for i, c in enumerate(_EVENT_INSERT_COLUMNS)
            )
            source = "jsonb_array_elements(%s::jsonb) AS e"
        else:
            fields = ", ".join(
                f"json_extract(value, '$[{i}]')" for i in range(len(_EVENT_INSERT_COLUMNS))
            )
            source = "json_each(?) WHERE true"  # WHERE: SQLite's upsert-after-SELECT rule
        keys = ", ".join(f'"{c}"' for c in C.EVENTS_COLUMNS)
        sql = f"INSERT INTO events ({names}) SELECT {fields} FROM {source} {_SKIP} RETURNING {keys}"
        with self.engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, (_json(rows),))
                written = cursor.fetchall()
            finally:
                cursor.close()
        return _counts_by_slice([row[:5] for row in rows], bounds, written)

    def _insert_events(self, rows: pd.DataFrame) -> int:
        """Insert a big validated frame of events (an import) in one transaction; the rows
        written."""
        self._ensure_schema()
        if rows.empty:
            return 0
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                return _copy_rows(conn, events_table, _EVENT_INSERT_COLUMNS, rows, _SKIP)
            return self._executemany_events(conn, rows)

    def _insert(
        self, table: Table, columns: Sequence[str], rows: pd.DataFrame, conflict: str
    ) -> int:
        """Insert ``rows`` (frame columns = ``columns``) with ``conflict`` as the ON CONFLICT
        clause, in one transaction; returns the rows written."""
        self._ensure_schema()
        if rows.empty:
            return 0
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                return _copy_rows(conn, table, columns, rows, conflict)
            return _executemany_rows(
                conn.connection.driver_connection, table, columns, rows, conflict
            )

    @staticmethod
    def _executemany_events(conn: Connection, rows: pd.DataFrame) -> int:
        raw = conn.connection.driver_connection
        if not raw.in_transaction:  # type: ignore[union-attr]
            # pysqlite opens transactions lazily, only before DML: without this the index
            # drop below would commit on its own
            raw.execute("BEGIN")  # type: ignore[union-attr]
        # Random-order inserts into the visitorid index dominate big imports; dropping it
        # and rebuilding it in the same transaction (readers see neither state, WAL) is
        # several times faster from about this size on.
        rebuild = len(rows) >= _SQLITE_REBUILD_ROWS
        if rebuild:
            _VISITOR_INDEX.drop(conn)
        added = _executemany_rows(raw, events_table, _EVENT_INSERT_COLUMNS, rows, _SKIP)
        if rebuild:
            _VISITOR_INDEX.create(conn)
        return added

    @_operation
    def read_events(self, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
        """Events with ``start_ms <= timestamp < end_ms`` (None: unbounded).

        Returns
        -------
        pd.DataFrame
            Exactly the columns, dtypes and row order of
            :func:`~recsys.data.load.load_events` (``request_id`` is not returned).
        """
        self._ensure_schema()
        t = events_table.c
        code = case(*((t[C.EVENT] == name, i) for i, name in enumerate(C.EVENT_TYPES)), else_=-1)
        query = select(
            t[C.TIMESTAMP], t[C.VISITOR], code, t[C.ITEM], func.coalesce(t[C.TRANSACTION], -1)
        )
        data = np.array(self._fetch(_window(query, t, start_ms, end_ms)), dtype=np.int64)
        return build_events_frame(*data.reshape(-1, 5).T)[0]

    @_operation
    def read_item_properties(self, end_ms: int | None = None) -> pd.DataFrame:
        """The stored property rows with ``timestamp < end_ms`` (None: all).

        Returns
        -------
        pd.DataFrame
            The columns, dtypes and row order of :func:`~recsys.data.load.load_item_properties`.
        """
        self._ensure_schema()
        t = item_properties_table.c
        query = select(*(t[name] for name in _PROPERTY_COLUMNS))
        rows = self._fetch(_window(query, t, None, end_ms))
        frame = pd.DataFrame(rows, columns=list(_PROPERTY_COLUMNS))
        return build_properties_frame(
            frame[C.TIMESTAMP].to_numpy(np.int64),
            frame[C.ITEM].to_numpy(np.int64),
            frame[C.PROPERTY].to_numpy(str),
            frame[C.VALUE].to_numpy(str),
        )

    @_operation
    def read_category_tree(self) -> pd.DataFrame:
        """The stored category tree, as :func:`~recsys.data.load.load_category_tree` returns it."""
        self._ensure_schema()
        t = category_tree_table.c
        rows = self._fetch(select(t[C.CATEGORY], func.coalesce(t[C.PARENT], -1)))
        data = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return build_category_tree_frame(data[:, 0], data[:, 1])

    def read_dataset(self, start_ms: int | None = None, end_ms: int | None = None) -> Dataset:
        """What training reads: events in ``[start_ms, end_ms)``, the property rows before
        ``end_ms`` (a change log: values set before the window still hold in it) and the tree."""
        return Dataset(
            events=self.read_events(start_ms, end_ms),
            item_properties=self.read_item_properties(end_ms),
            category_tree=self.read_category_tree(),
        )

    @_operation
    def event_counts(
        self, start_ms: int | None = None, end_ms: int | None = None
    ) -> dict[str, int]:
        """Number of events per type in ``[start_ms, end_ms)`` (every type, 0 when absent)."""
        self._ensure_schema()
        t = events_table.c
        query = select(t[C.EVENT], func.count()).group_by(t[C.EVENT])
        counts = dict.fromkeys(C.EVENT_TYPES, 0)
        counts.update({str(e): int(n) for e, n in self._fetch(_window(query, t, start_ms, end_ms))})
        return counts

    @_operation
    def event_log(
        self,
        after_id: int | None = None,
        also_ids: Sequence[int] = (),
        since_ms: int | None = None,
        purchases_since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, int, int, int, str]]:
        """Events in insertion (id) order, for the online history: ``(id, timestamp,
        visitorid, itemid, event)``.

        Parameters
        ----------
        after_id, also_ids
            Only ids above ``after_id`` or in ``also_ids`` (ids an earlier read skipped,
            whose transactions may not have committed yet); None: every id.
        since_ms, purchases_since_ms
            Only events dated at or after ``since_ms``, purchases at or after
            ``purchases_since_ms`` (both given, or neither: no time window). The window is
            read through the timestamp index.
        limit
            Most rows returned (None: all).
        """
        self._ensure_schema()
        t = events_table.c
        query = select(t.id, t[C.TIMESTAMP], t[C.VISITOR], t[C.ITEM], t[C.EVENT])
        if after_id is not None:
            newer = t.id > int(after_id)
            query = query.where(newer | t.id.in_([int(i) for i in also_ids]) if also_ids else newer)
        if since_ms is not None and purchases_since_ms is not None:
            query = query.where(
                (t[C.TIMESTAMP] >= int(min(since_ms, purchases_since_ms)))
                & (
                    (t[C.TIMESTAMP] >= int(since_ms))
                    | ((t[C.EVENT] == C.PURCHASE) & (t[C.TIMESTAMP] >= int(purchases_since_ms)))
                )
            )
        query = query.order_by(t.id)
        rows = self._fetch(query if limit is None else query.limit(int(limit)))
        return [(int(i), int(ts), int(v), int(item), str(e)) for i, ts, v, item, e in rows]

    @_operation
    def last_event_id(self) -> int:
        """The largest event id (0: no events): where a reader of :meth:`event_log` starts."""
        self._ensure_schema()
        (newest,) = self._fetch(select(func.max(events_table.c.id)))[0]
        return 0 if newest is None else int(newest)

    @_operation
    def newest_event_ms(self, before_ms: int | None = None) -> int | None:
        """Timestamp of the newest event before ``before_ms`` (None: the store holds none)."""
        self._ensure_schema()
        t = events_table.c
        (newest,) = self._fetch(_window(select(func.max(t[C.TIMESTAMP])), t, None, before_ms))[0]
        return None if newest is None else int(newest)

    @_operation
    def schema_problems(self) -> list[str]:
        """What the database lacks of this store's tables and columns (empty: all there).

        Creates nothing: a check of what an existing database holds. A database holding
        none of the tables is new, not broken (no problems: the first use creates them).
        """
        found = inspect(self.engine)
        if not set(found.get_table_names()) & set(metadata.tables):
            return []
        problems = []
        for table in metadata.sorted_tables:
            if not found.has_table(table.name):
                problems.append(f"table {table.name!r} is missing")
                continue
            have = {c["name"] for c in found.get_columns(table.name)}
            missing = [c.name for c in table.c if c.name not in have]
            if missing:
                problems.append(f"table {table.name!r} lacks column(s) {missing}")
        return problems

    # ------------------------------------------------------------------ exposures

    @_operation
    def log_exposures(self, rows: pd.DataFrame | Iterable[Sequence[Any]]) -> int:
        """Store served recommendation lists (one row per request).

        Parameters
        ----------
        rows : pd.DataFrame or iterable of tuples
            A DataFrame with columns request_id, timestamp, visitorid, experiment,
            variant, model_version (strings / ints, none missing) and item_ids (a sequence
            of item ids per row, or the comma-separated text); it is validated. Or plain
            row tuples in :data:`recsys.columns.EXPOSURES_COLUMNS` order as the service
            builds them (item_ids already the comma-separated text): the cheap path, written
            as they are after a length check of the text columns that repeat per batch.

        Returns
        -------
        int
            Number of new exposures; a request_id already stored is skipped.
        """
        self._ensure_schema()
        records: Sequence[Sequence[Any]]
        if isinstance(rows, pd.DataFrame):
            records = _validated_exposures(rows)
        else:
            records = rows if isinstance(rows, list) else list(rows)
            _check_exposure_labels(records)
        if not records:
            return 0
        # one statement with the batch as one JSON parameter: the database unpacks the rows in
        # C with the GIL released once per batch, where executemany hands the GIL back and
        # forth once per row (it stalled the serving thread measurably under load)
        names = ", ".join(f'"{c}"' for c in C.EXPOSURES_COLUMNS)
        integers = {C.TIMESTAMP, C.VISITOR}
        if self.dialect == "postgresql":
            fields = ", ".join(
                f"(e->>{i})::bigint" if c in integers else f"e->>{i}"
                for i, c in enumerate(C.EXPOSURES_COLUMNS)
            )
            source = "jsonb_array_elements(%s::jsonb) AS e"
        else:
            fields = ", ".join(
                f"json_extract(value, '$[{i}]')" for i in range(len(C.EXPOSURES_COLUMNS))
            )
            source = "json_each(?) WHERE true"  # WHERE: SQLite's upsert-after-SELECT rule
        sql = (
            f"INSERT INTO exposures ({names}) SELECT {fields} FROM {source} ON CONFLICT DO NOTHING"
        )
        payload = _json(records)
        with self.engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, (payload,))
                return max(cursor.rowcount, 0)
            finally:
                cursor.close()

    @_operation
    def delete_exposures(self, before_ms: int) -> int:
        """Delete the exposures logged before ``before_ms`` (retention); returns how many."""
        self._ensure_schema()
        t = exposures_table
        with self.engine.begin() as conn:
            result = conn.execute(t.delete().where(t.c[C.TIMESTAMP] < int(before_ms)))
            return max(result.rowcount, 0)

    @_operation
    def read_exposures(
        self,
        start_ms: int | None = None,
        end_ms: int | None = None,
        experiment: str | None = None,
        parse_items: bool = True,
    ) -> pd.DataFrame:
        """Exposures with ``start_ms <= timestamp < end_ms`` (of one ``experiment`` if given),
        in logging order.

        Parameters
        ----------
        parse_items
            Return item_ids as lists of ints (default), or as the stored comma-separated text
            (what a reader that needs few of them parses itself, at a fraction of the cost).

        Returns
        -------
        pd.DataFrame
            Columns request_id, timestamp (int64), visitorid (int64), experiment,
            variant, model_version (str) and item_ids (list of int per row, or text).
        """
        self._ensure_schema()
        t = exposures_table.c
        query = select(*(t[name] for name in C.EXPOSURES_COLUMNS)).order_by(t.id)
        if start_ms is not None:
            query = query.where(t[C.TIMESTAMP] >= int(start_ms))
        if end_ms is not None:
            query = query.where(t[C.TIMESTAMP] < int(end_ms))
        if experiment is not None:
            query = query.where(t[C.EXPERIMENT] == experiment)
        with self.engine.connect() as conn:
            # plain tuples from the DBAPI cursor: SQLAlchemy Row objects cost a second per
            # few hundred thousand rows here
            rows = conn.execute(query).cursor.fetchall()
        frame = pd.DataFrame(rows, columns=list(C.EXPOSURES_COLUMNS))
        for name in (C.REQUEST_ID, C.EXPERIMENT, C.VARIANT, C.MODEL_VERSION):
            frame[name] = frame[name].astype(str)
        for name in (C.TIMESTAMP, C.VISITOR):
            frame[name] = frame[name].astype(np.int64)
        if parse_items:
            frame[C.ITEM_IDS] = parse_item_ids(frame[C.ITEM_IDS])
        return frame

    @_operation
    def read_outcomes(
        self, experiment: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pd.DataFrame:
        """Add-to-cart and purchase events that may belong to ``experiment``: those linked by
        ``request_id`` to one of its exposures, and those of visitors it exposed.

        Returns
        -------
        pd.DataFrame
            Columns timestamp, visitorid, event (str), itemid (int64), request_id (str or
            None) and ``linked_experiment``: the experiment of the exposure the request id
            names (None when it names none).
        """
        self._ensure_schema()
        ev, x = events_table.c, exposures_table.alias("linked")
        exposed = select(exposures_table.c[C.VISITOR]).where(
            exposures_table.c[C.EXPERIMENT] == experiment
        )
        query = (
            select(
                ev[C.TIMESTAMP],
                ev[C.VISITOR],
                ev[C.EVENT],
                ev[C.ITEM],
                ev[C.REQUEST_ID],
                x.c[C.EXPERIMENT],
            )
            .select_from(events_table.outerjoin(x, x.c[C.REQUEST_ID] == ev[C.REQUEST_ID]))
            .where(
                ev[C.EVENT].in_([C.ADDTOCART, C.PURCHASE]),
                or_(x.c[C.EXPERIMENT] == experiment, ev[C.VISITOR].in_(exposed)),
            )
            .order_by(ev[C.TIMESTAMP], ev.id)
        )
        if start_ms is not None:
            query = query.where(ev[C.TIMESTAMP] >= int(start_ms))
        if end_ms is not None:
            query = query.where(ev[C.TIMESTAMP] < int(end_ms))
        with self.engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(query)]
        frame = pd.DataFrame(
            rows,
            columns=[*OUTCOME_COLUMNS],
        )
        for name in (C.TIMESTAMP, C.VISITOR, C.ITEM):
            frame[name] = frame[name].astype(np.int64)
        return frame

    @_operation
    def visitor_activity(self, experiment: str, days: float | None = None) -> pd.DataFrame:
        """Events of each visitor exposed in ``experiment`` before their first exposure in it
        (the last ``days`` days before it; None = all): a covariate the experiment cannot
        have changed.

        Returns
        -------
        pd.DataFrame
            Columns visitorid and ``events`` (int64), visitors without such events left out.
        """
        self._ensure_schema()
        ev, x = events_table.c, exposures_table.c
        first = (
            select(x[C.VISITOR].label("visitor"), func.min(x[C.TIMESTAMP]).label("first_ms"))
            .where(x[C.EXPERIMENT] == experiment)
            .group_by(x[C.VISITOR])
            .subquery()
        )
        condition = (ev[C.VISITOR] == first.c.visitor) & (ev[C.TIMESTAMP] < first.c.first_ms)
        if days is not None:
            condition &= ev[C.TIMESTAMP] >= first.c.first_ms - int(days * C.DAY_MS)
        query = (
            select(ev[C.VISITOR], func.count())
            .select_from(events_table.join(first, condition))
            .group_by(ev[C.VISITOR])
        )
        with self.engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(query)]
        return pd.DataFrame(rows, columns=[C.VISITOR, ACTIVITY], dtype=np.int64)
