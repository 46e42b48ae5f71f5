"""The intake service's PostgreSQL access: one ``psycopg_pool.AsyncConnectionPool`` (SPEC §7).

:meth:`Database.run` lends a pooled connection to a coroutine and turns every way the database can
be unavailable (no connection within ``pool_timeout_s``, refused or dropped connections, a server
shutting down) into :class:`DatabaseUnavailable`, which the HTTP layer answers with 503 (Calendly)
or 429 (GHL). A dropped connection is retried on a fresh one (after a server restart the idle pool
connections are all dead), within the same deadline. Row-level errors (``DataError``,
``IntegrityError``) are re-raised for the caller to isolate.

Logs carry error classes and SQLSTATEs, never statement parameters (SPEC §11); an outage is logged
once when it starts and once when it ends.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that belong to the rows sent, not to the server's availability.
ROW_ERRORS: tuple[type[psycopg.Error], ...] = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


class DatabaseUnavailable(Exception):
    """The database could not be used in time. ``reason`` (``pool_timeout``, ``connection_error``,
    ``database_error``, ``closed``, ``timeout``) is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_error(exc: BaseException) -> str:
    """A log-safe description of a database error: class, SQLSTATE and, for connection errors only, the
    first line of libpq's message (host/port, never a password); other messages may quote data."""
    name = type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.QueryCanceled):
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"{name}({state}): {first}" if state else f"{name}: {first}"
    return f"{name}({state})" if state else name


class Database:
    """A lazily opened async pool for ``conninfo`` (libpq form) of **autocommit** connections: each
    statement is its own transaction, committed before the server reports the statement complete — and
    psycopg's ``execute`` returns only after that report (ReadyForQuery), so a returned ``execute`` of
    an INSERT means the rows are durable. One round trip per group instead of BEGIN/INSERT/COMMIT.

    Args:
        conninfo: libpq URL/conninfo (no SQLAlchemy driver suffix).
        min_size / max_size: pool bounds.
        timeout_s: default wait for a connection (seconds) before :class:`DatabaseUnavailable`.
        connect_timeout_s: libpq ``connect_timeout`` (seconds).
        on_unavailable: called with the reason (``timeout``, ``pool_timeout``, ``closed``, ``connection_error``,
            ``database_error``) each time :class:`DatabaseUnavailable` is raised (the service's metrics).
    """

    def __init__(self, conninfo: str, *, min_size: int, max_size: int, timeout_s: float,
                 connect_timeout_s: int, on_unavailable: Callable[[str], None] | None = None) -> None:
        self.timeout_s = timeout_s
        self._on_unavailable = on_unavailable
        self.pool = AsyncConnectionPool(
            conninfo, min_size=min_size, max_size=max_size, open=False, timeout=timeout_s,
            kwargs={"connect_timeout": max(1, int(connect_timeout_s)), "autocommit": True}, name="appt-webhooks",
        )
        self._healthy = True

    async def open(self) -> None:
        """Open the pool without waiting for connections (an unreachable database does not block startup)."""
        await self.pool.open(wait=False)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the pool and its connections (idempotent)."""
        await self.pool.close(timeout=timeout_s)

    def _unavailable(self, reason: str) -> DatabaseUnavailable:
        if self._on_unavailable is not None:
            self._on_unavailable(reason)
        return DatabaseUnavailable(reason)

    def _unhealthy(self, reason: str, exc: BaseException) -> DatabaseUnavailable:
        if self._on_unavailable is not None:
            self._on_unavailable(reason)
        if self._healthy:
            self._healthy = False
            log.warning("database unavailable (%s): %s", reason, describe_error(exc))
        return DatabaseUnavailable(reason)

    def _ok(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.warning("database available again")

    async def run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *,
                  timeout_s: float | None = None, attempts: int = 3) -> T:
        """``await fn(conn)`` on a pooled (autocommit) connection.

        A connection-level failure is retried on another connection, at most ``attempts`` times in all
        and within ``timeout_s`` (default: the pool timeout). ``fn`` must therefore be safe to repeat
        (idempotent), as every use in this package is.

        Raises:
            DatabaseUnavailable: no connection in time, connections failing, or any server-side error
                other than a row error.
            psycopg.errors.DataError, psycopg.errors.IntegrityError: the statement's rows were refused.
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable("timeout")
            try:
                async with self.pool.connection(timeout=remaining) as conn:
                    result = await fn(conn)
            except PoolTimeout as exc:
                raise self._unhealthy("pool_timeout", exc) from None
            except PoolClosed as exc:
                raise self._unavailable("closed") from exc
            except ROW_ERRORS:
                self._ok()
                raise
            except psycopg.OperationalError as exc:
                if attempt < attempts and time.monotonic() < deadline:
                    log.debug("database connection failed (%s); retrying on another", describe_error(exc))
                    continue
                raise self._unhealthy("connection_error", exc) from None
            except psycopg.Error as exc:
                raise self._unhealthy("database_error", exc) from None
            self._ok()
            return result

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """True when ``SELECT 1`` succeeds within ``timeout_s`` seconds."""

        async def select_one(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT 1")

        try:
            await self.run(select_one, timeout_s=timeout_s, attempts=2)
        except DatabaseUnavailable:
            return False
        return True
