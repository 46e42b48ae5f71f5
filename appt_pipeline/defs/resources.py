"""Dagster resources: the app database (SQLAlchemy engine from ``APPT_DATABASE_URL``)."""

import os

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.settings import SECRET_KEY_ENV
from appt_pipeline.store.engine import get_engine


class AppDatabase(dg.ConfigurableResource):
    """The application PostgreSQL (SPEC §1 tables). ``url`` is a SQLAlchemy URL, normally ``EnvVar``."""

    url: str

    def engine(self) -> sa.Engine:
        """A pooled engine (psycopg 3), shared per process."""
        return get_engine(self.url)


class ProviderSettings(dg.ConfigurableResource):
    """How runs talk to the providers: rate limits per account, timeout, and the key of stored secrets.

    Limits default to the providers' documented ones (GHL 100 requests / 10 s per location, Calendly
    500 / 60 s per user; docs/providers.md §1.4, §2.5). ``secret_key`` decrypts workspace tokens
    is read from the environment variable named ``secret_key_env`` when needed, so it never enters run
    config, logs or metadata, and runs that need no secret (migration) work without it.
    """

    secret_key_env: str = SECRET_KEY_ENV
    ghl_requests: int = 100
    ghl_period_s: float = 10.0
    calendly_requests: int = 500
    calendly_period_s: float = 60.0
    timeout_s: float = 15.0

    def secret_key(self) -> str | None:
        """The Fernet key of stored secrets, or None when the variable is unset."""
        return os.environ.get(self.secret_key_env) or None
