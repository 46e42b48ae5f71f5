"""Test fixtures: a real PostgreSQL (never mocked) and a fresh, upgraded database per session.

Server choice, in order: ``TEST_DATABASE_URL``; the server on 127.0.0.1:5432 (trust auth, as on
the project's machines and CI); else the project's own embedded PostgreSQL in a temp folder.
"""

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from appt_pipeline.store.embedded import ensure_database, start_embedded
from appt_pipeline.store.engine import app_url
from appt_pipeline.store.schema import upgrade

# the simulators listen on loopback ports chosen at start: every test session lets tokens go to any
# port of 127.0.0.1 (README "Provider hosts"); tests of the rule set their own, narrower list
os.environ["APPT_PROVIDER_HOST_ALLOWLIST"] = "127.0.0.1:*"

LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

APP_TABLES = (
    "appointment_status_changes, follow_up_tasks, webhook_events, calendar_availability, calendar_capacity, "
    "migration_progress, appointments, workspace_secrets, leads, workspaces"
)


def _local_server_up() -> bool:
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a PostgreSQL server to create test databases on."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield app_url(os.environ["TEST_DATABASE_URL"])
    elif _local_server_up():
        yield LOCAL_SERVER
    else:
        home = Path(tempfile.mkdtemp(prefix="appt-test-"))
        yield start_embedded(home)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database with the schema applied, dropped at the end of the session."""
    name = f"appt_test_{uuid.uuid4().hex[:10]}"
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    ensure_database(url, name)
    upgrade(url)
    os.environ["APPT_DATABASE_URL"] = url
    yield url
    sa.create_engine(url).dispose()
    admin = sa.make_url(server_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}_dagster" WITH (FORCE)')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(database_url, pool_size=10, max_overflow=10)
    yield eng
    eng.dispose()


@pytest.fixture()
def db(engine: sa.Engine) -> sa.Engine:
    """The session database, emptied of app rows before the test."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
    return engine
