"""Dagster resources: the app database (SQLAlchemy engine from ``APPT_DATABASE_URL``)."""

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.store.engine import get_engine


class AppDatabase(dg.ConfigurableResource):
    """The application PostgreSQL (SPEC §1 tables). ``url`` is a SQLAlchemy URL, normally ``EnvVar``."""

    url: str

    def engine(self) -> sa.Engine:
        """A pooled engine (psycopg 3), shared per process."""
        return get_engine(self.url)
