"""Settings of the webhook intake service (SPEC §7, §12): where the database is, the secret key, limits.

Nothing is read at import time; :class:`ServiceSettings` reads ``APPT_DATABASE_URL`` and
``APPT_SECRET_KEY`` when it is constructed without explicit values.
"""

import os
from dataclasses import dataclass, field

from appt_pipeline.settings import DATABASE_URL_ENV, SECRET_KEY_ENV
from appt_pipeline.store.embedded import libpq_conninfo
from appt_pipeline.store.engine import app_url, redact_url
from appt_pipeline.store.workspaces import fernet

#: SPEC §7: bodies over 256 KiB are refused with 413.
MAX_BODY_BYTES = 256 * 1024


class ServiceConfigError(ValueError):
    """The service cannot start: no database URL, a URL that is not PostgreSQL, a missing or invalid
    ``APPT_SECRET_KEY``, or a limit out of range. The message names the problem, never a secret."""


@dataclass(frozen=True)
class ServiceSettings:
    """Configuration of :func:`appt_pipeline.service.app.create_app`.

    Attributes:
        database_url: SQLAlchemy or libpq URL of the app database (default: env ``APPT_DATABASE_URL``);
            ``postgresql+psycopg://…`` is converted to a libpq conninfo for psycopg.
        secret_key: Fernet key decrypting ``workspace_secrets`` (default: env ``APPT_SECRET_KEY``).
        max_body_bytes: largest accepted body in bytes (default 262,144 = 256 KiB; SPEC §7 → 413 above).
        cache_ttl_s: seconds a found workspace's keys stay cached (default 30).
        negative_cache_ttl_s: seconds an unknown workspace — or one with no key yet, or an unusable key —
            stays cached (default 5).
        cache_max_entries: workspaces held in the key cache (LRU beyond; default 10,000); also the most
            verified API tokens kept.
        token_cache_ttl_s: seconds a verified API token's grant is reused without a query (default 5; 0
            checks every request). A revoked token is therefore refused at the latest this long after
            ``tokens revoke``.
        pool_min_size / pool_max_size: psycopg connections kept / allowed (defaults 2 / 8).
        pool_timeout_s: longest wait for a pool connection before the database counts as unavailable
            (seconds; default 2.0). Bounds how long a request waits during an outage.
        connect_timeout_s: libpq ``connect_timeout`` of new connections (whole seconds; default 3).
        write_timeout_s: longest one group commit may take (seconds; default 10.0); its requests then get
            503/429 (a queued request waits at most about ``flushes_in_flight + 1`` such periods).
        flush_max_rows: rows per group-commit INSERT (default 500).
        flushes_in_flight: concurrent group-commit transactions (default 2).
        retry_after_s: ``Retry-After`` value of 503/429 answers (seconds; default 5).
        provider_timeout_s: per-request timeout (seconds) of the provider calls a booking makes (default 15.0):
            a POST unanswered this long is recorded ``unknown`` (SPEC §8).
        gc_freeze: at startup (lifespan events, i.e. under uvicorn / ``appt-pipeline serve``), move every
            object alive to the garbage collector's permanent generation (``gc.freeze()``), so full
            collections scan only request garbage (default on; tail latency).
    """

    database_url: str | None = field(default_factory=lambda: os.environ.get(DATABASE_URL_ENV), repr=False)
    secret_key: str | None = field(default_factory=lambda: os.environ.get(SECRET_KEY_ENV), repr=False)
    max_body_bytes: int = MAX_BODY_BYTES
    cache_ttl_s: float = 30.0
    negative_cache_ttl_s: float = 5.0
    cache_max_entries: int = 10_000
    token_cache_ttl_s: float = 5.0
    pool_min_size: int = 2
    pool_max_size: int = 8
    pool_timeout_s: float = 2.0
    connect_timeout_s: int = 3
    write_timeout_s: float = 10.0
    flush_max_rows: int = 500
    flushes_in_flight: int = 2
    retry_after_s: int = 5
    provider_timeout_s: float = 15.0
    gc_freeze: bool = True

    def validate(self) -> None:
        """Check everything the service needs before it binds a port.

        Raises:
            ServiceConfigError: see the class; the message is safe to print (passwords masked).
        """
        if not self.database_url:
            raise ServiceConfigError(
                f"{DATABASE_URL_ENV} is not set: the webhook service needs the app database "
                "(e.g. postgresql+psycopg://user@127.0.0.1:5432/appt); `appt-pipeline serve` starts the "
                "embedded PostgreSQL when it is unset"
            )
        try:
            app_url(self.database_url)
        except ValueError as exc:  # another backend (the message names it, not the URL)
            raise ServiceConfigError(str(exc)) from None
        except Exception:  # sqlalchemy ArgumentError quotes the URL, password included: not repeated
            raise ServiceConfigError(f"{DATABASE_URL_ENV} is not a PostgreSQL URL (cannot be parsed)") from None
        try:
            fernet(self.secret_key)
        except ValueError as exc:  # SecretKeyError: missing or not a Fernet key (message holds no key)
            raise ServiceConfigError(str(exc)) from None
        if self.max_body_bytes < 1:
            raise ServiceConfigError("max_body_bytes must be positive")
        if self.pool_min_size < 1 or self.pool_max_size < max(self.pool_min_size, self.flushes_in_flight + 1):
            raise ServiceConfigError("pool sizes: need 1 <= pool_min_size <= pool_max_size and "
                                     "pool_max_size > flushes_in_flight (one connection for key lookups)")
        if self.provider_timeout_s <= 0:
            raise ServiceConfigError("provider_timeout_s must be positive")
        if self.flush_max_rows < 1 or self.flushes_in_flight < 1:
            raise ServiceConfigError("flush_max_rows and flushes_in_flight must be positive")

    def conninfo(self) -> str:
        """The libpq conninfo (``postgresql://…``) of :attr:`database_url` for psycopg.

        Raises:
            ServiceConfigError: no database URL.
        """
        if not self.database_url:
            raise ServiceConfigError(f"{DATABASE_URL_ENV} is not set")
        return libpq_conninfo(app_url(self.database_url))

    def describe(self) -> str:
        """Where the service writes, password masked (SPEC §11), for startup messages."""
        return redact_url(self.database_url) if self.database_url else "(no database URL)"
