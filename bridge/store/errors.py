"""Errors raised by the store.

Every failure of a store call is one of these; no SQLAlchemy, asyncpg or sqlite3 exception
leaves the store::

    StoreError                  root; each says what the caller or the operator should do
    ├── StoreUnavailable        the driver or the connection failed, or the database
    │   │                       cannot be reached: transient, try again later
    │   └── StoreClosed         the store was closed (the service is shutting down)
    ├── LeaseLost               another process holds the conversation now: drop the
    │                           work, commit nothing
    ├── DataRefused             a value the database will not take (a NUL character in a
    │                           text on PostgreSQL, a string too long for its column, a
    │                           broken constraint): permanent, storing it again fails again
    ├── SchemaRefused           the schema does not fit this code
    │   ├── SchemaTooNew        migrated by a newer version: run that one, or restore
    │   └── SchemaOutdated      older than this code: run `parloa-bridge migrate`
    └── BadDatabaseUrl          database.url cannot be used: fix the configuration

Driver exceptions are translated in one place, :func:`store_error`, through the context
manager :class:`translated` around the units of work (bridge/store/transactions.py), the
native asyncpg runner (bridge/store/native.py) and the migrations (database.py). Inside
those, the drivers' own exceptions still tell a dead pooled connection from a refused
statement.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

# Longest driver message an error carries (the first line of it).
MESSAGE_CHARS = 300

# SQLSTATE classes of a value refused for good: 22 data exception (a NUL character, a value
# too long, out of range, untranslatable), 23 integrity constraint violation.
REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23"})

# asyncpg's exceptions that are not the server's answer: the connection or the protocol.
_ASYNCPG_CLIENT_ERRORS = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
_ASYNCPG_ERRORS = (asyncpg.PostgresError, *_ASYNCPG_CLIENT_ERRORS)
_SERVER_ERRORS = (sqlite3.Error, asyncpg.PostgresError)  # a database's answer, or SQLite's


class StoreError(Exception):
    """Root of the store's errors."""


class StoreUnavailable(StoreError):
    """The database could not be reached or failed, or the store is closed: try again later."""


class StoreClosed(StoreUnavailable):
    """The store was closed (the service is shutting down)."""


class LeaseLost(StoreError):
    """This process no longer holds the conversation's lease; its work must not be committed."""


class DataRefused(StoreError):
    """The database refuses a value for good: storing it again cannot succeed."""


class SchemaRefused(StoreError):
    """The database's schema does not fit this code."""


class SchemaTooNew(SchemaRefused):
    """The schema was migrated by a newer version of the bridge."""


class SchemaOutdated(SchemaRefused):
    """The schema is older than this code."""


class BadDatabaseUrl(StoreError):
    """database.url names no database this bridge can use."""


def store_error(exc: BaseException) -> StoreError | None:
    """The store's error for a driver's exception (SQLAlchemy's, asyncpg's, sqlite3's, a
    connection's OSError), caused by it; None for anything else, which the caller raises
    as it is (the store's own errors, bugs in a unit, cancellation)."""
    if isinstance(exc, StoreError) or not isinstance(exc, Exception):
        return None
    driver = _driver_exception(exc)
    if isinstance(exc, DBAPIError) or isinstance(driver, _SERVER_ERRORS):
        if _refused(exc, driver):
            return DataRefused(f"the database refused a value: {_describe(driver)}")
        return StoreUnavailable(f"the database failed: {_describe(driver)}")
    if isinstance(exc, StatementError):
        # A value SQLAlchemy could not turn into a parameter (not JSON, say): the same
        # value fails the same way every time.
        return DataRefused(f"a value cannot be stored: {_describe(driver)}")
    if isinstance(exc, UnicodeEncodeError):
        # sqlite3 binds text as UTF-8 itself: a lone surrogate fails there, every time.
        return DataRefused(f"a value cannot be stored: {_describe(exc)}")
    if isinstance(exc, (SQLAlchemyError, OSError, *_ASYNCPG_CLIENT_ERRORS)):
        # The pool's timeout, a connection that could not be opened or was lost.
        return StoreUnavailable(f"the database is unavailable: {_describe(driver)}")
    return None


class translated:  # named as the statement reads: `with translated():`
    """Raises the store's error (:func:`store_error`) in place of a driver's exception
    raised inside the block, with that exception as its cause; lets anything else through."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        error = None if exc is None else store_error(exc)
        if error is not None:
            raise error from exc


def _driver_exception(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapping, and under its asyncpg
    adapter's (which raises its own with asyncpg's as the cause)."""
    driver: BaseException = exc
    if isinstance(exc, StatementError) and exc.orig is not None:
        driver = exc.orig
    if isinstance(driver.__cause__, _ASYNCPG_ERRORS):
        driver = driver.__cause__
    return driver


def _refused(exc: BaseException, driver: BaseException) -> bool:
    """Whether the database refused a value, rather than failed or was not reached."""
    if isinstance(driver, sqlite3.IntegrityError | sqlite3.DataError):
        return True
    sqlstate = getattr(driver, "sqlstate", None)
    if isinstance(sqlstate, str):  # PostgreSQL's answer: its class says which
        return sqlstate[:2] in REFUSED_SQLSTATE_CLASSES
    return isinstance(exc, IntegrityError | DataError)


def _describe(driver: BaseException) -> str:
    """The driver's exception in a line: its class and the first line of its message
    (SQLAlchemy's own text would add the statement and its parameters: user data)."""
    lines = str(driver).strip().splitlines()
    message = lines[0][:MESSAGE_CHARS] if lines else ""
    name = type(driver).__name__
    return f"{name}: {message}" if message else name
