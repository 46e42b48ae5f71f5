"""SQLAlchemy engines for the app database (psycopg 3 driver)."""

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def app_url(url: str) -> str:
    """``url`` with the psycopg 3 driver spelled out (``postgresql+psycopg://``).

    Raises ``ValueError`` for a non-PostgreSQL URL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"APPT_DATABASE_URL must be a PostgreSQL URL, got backend {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@functools.lru_cache(maxsize=16)
def get_engine(url: str) -> sa.Engine:
    """A pooled engine for ``url`` (cached per URL within the process)."""
    return sa.create_engine(app_url(url), pool_pre_ping=True, pool_size=5, max_overflow=10)


#: SQLSTATEs of failures a later attempt may not meet: deadlock, serialization failure, lock timeout
#: (``lock_timeout``), and the server ending the session (admin shutdown, crash, not accepting
#: connections yet); class ``08`` (connection exceptions) counts too.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03", "57P01", "57P02", "57P03"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is a database failure worth retrying later rather than a verdict on the data:
    a :data:`TRANSIENT_SQLSTATES` / class ``08`` error, or a lost connection (SQLAlchemy's
    ``connection_invalidated``)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08")


def redact_url(url: str) -> str:
    """``url`` with any password masked, for logs and messages (SPEC §11)."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def transaction(engine: sa.Engine, *, dry_run: bool = False) -> Iterator[sa.Connection]:
    """A connection in one new transaction: committed when the block ends, rolled back when it raises — or
    always with ``dry_run`` (the block's reads and flags say what would happen; nothing is written)."""
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            yield conn
        except BaseException:
            tx.rollback()
            raise
        if dry_run:
            tx.rollback()
        else:
            tx.commit()
