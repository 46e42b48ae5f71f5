"""Test fixtures: a real PostgreSQL (never mocked) and a fresh, upgraded database per session.

Server choice, in order: ``TEST_DATABASE_URL``; the server on 127.0.0.1:5432 (trust auth, as on
the project's machines and CI); else the project's own embedded PostgreSQL in a temp folder.

Every connection a test opens carries the test's name as its PostgreSQL ``application_name`` (``PGAPPNAME``
for new connections, including those of subprocesses; a ``SET`` on checkout for the shared pool), so a
session a test leaves open is named in ``pg_stat_activity``. The ``db`` fixture refuses to wait for such a
session: it fails naming it (see ``_leaked_sessions``) and its TRUNCATE runs under a short ``lock_timeout``.
"""

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from appt_pipeline.store.embedded import ensure_database, start_embedded
from appt_pipeline.store.engine import app_url
from appt_pipeline.store.schema import upgrade
from appt_pipeline_tests.helpers.browser import browser, page  # noqa: F401  (the browser fixtures of the page tests)

# the simulators listen on loopback ports chosen at start: every test session lets tokens go to any
# port of 127.0.0.1 (README "Provider hosts"); tests of the rule set their own, narrower list
os.environ["APPT_PROVIDER_HOST_ALLOWLIST"] = "127.0.0.1:*"

LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

APP_TABLES = (
    "appointment_status_changes, follow_up_tasks, webhook_events, calendar_availability, calendar_capacity, "
    "calendar_availability_status, calendar_capacity_days, "
    "migration_progress, api_tokens, booking_requests, appointments, workspace_secrets, leads, workspaces, "
    "provider_rate_permits, provider_rate_accounts"
)

#: How long the ``db`` fixture lets a session that holds a transaction finish before it calls it leaked, and
#: the ``lock_timeout`` of its TRUNCATE (seconds). Generous for a loaded machine, never minutes.
LEAK_GRACE_S = 3.0
TRUNCATE_LOCK_TIMEOUT = "10s"

#: application_name is at most 63 bytes (NAMEDATALEN - 1); the server cuts longer names.
_APP_NAME_MAX = 63


def _test_app_name(nodeid: str) -> str:
    """``test_file.py::test_name[param]`` of a pytest node id, cut to fit ``application_name`` (ASCII)."""
    name = nodeid.rsplit("/", 1)[-1].encode("ascii", "replace").decode()
    return name if len(name) <= _APP_NAME_MAX else name[: _APP_NAME_MAX - 1] + "~"


@pytest.fixture(autouse=True)
def _name_connections_after_the_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """New libpq connections (this process and the subprocesses a test starts) carry the test's name."""
    monkeypatch.setenv("PGAPPNAME", _test_app_name(request.node.nodeid))


def _name_pooled_connection(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    """Checkout hook of the shared engine: a pooled connection is renamed after the test now using it."""
    name = os.environ.get("PGAPPNAME", "")
    if record.info.get("application_name") == name:
        return
    with dbapi_conn.cursor() as cur:
        cur.execute("SELECT set_config('application_name', %s, false)", (name,))
    dbapi_conn.commit()
    record.info["application_name"] = name


_LEAK_QUERY = sa.text(
    "SELECT DISTINCT ON (a.pid) a.pid, a.application_name, a.state, a.xact_start AS backend_xact_start, "
    "left(a.query, 200) AS query "
    "FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted "
    "LEFT JOIN pg_class c ON c.oid = l.relation AND c.relname = ANY(:tables) "
    "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
    "AND (a.state LIKE 'idle in transaction%' OR c.oid IS NOT NULL) ORDER BY a.pid"
)


def _leaked_sessions(conn: sa.Connection) -> list[sa.Row[Any]]:
    """Sessions on the test database, other than ``conn``'s, that are idle in a transaction or hold a lock on
    an app table — after ``LEAK_GRACE_S`` seconds for a transaction that is merely finishing."""
    tables = [t.strip() for t in APP_TABLES.split(",")]
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        found = list(conn.execute(_LEAK_QUERY, {"tables": tables}))
        conn.rollback()  # pg_stat_activity is a snapshot per transaction: look again in a new one
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _describe(sessions: list[sa.Row[Any]]) -> str:
    return "\n".join(f"  pid={s.pid} application_name={s.application_name!r} state={s.state!r} "
                     f"backend_xact_start={s.backend_xact_start} query={s.query!r}" for s in sessions)


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
    ensure_database(url, f"{name}_dagster")  # as `db upgrade` does: commands never create databases
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
    sa.event.listen(eng, "checkout", _name_pooled_connection)
    yield eng
    eng.dispose()


@pytest.fixture()
def db(engine: sa.Engine) -> sa.Engine:
    """The session database, emptied of app rows before the test.

    Fails at once, naming them, when sessions of earlier tests are left in a transaction or hold app-table
    locks (they are terminated so the next tests start clean); the TRUNCATE never waits longer than
    ``TRUNCATE_LOCK_TIMEOUT``."""
    with engine.connect() as conn:
        leaked = _leaked_sessions(conn)
        if leaked:
            for s in leaked:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": s.pid})
            conn.commit()
            pytest.fail("sessions left open by an earlier test (now terminated); application_name names the "
                        f"test that opened or last used the connection:\n{_describe(leaked)}", pytrace=False)
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{TRUNCATE_LOCK_TIMEOUT}'")
        try:
            conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
        except sa.exc.OperationalError as exc:
            if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                raise
            conn.rollback()
            blockers = _leaked_sessions(conn)
            pytest.fail(f"TRUNCATE of the app tables waited {TRUNCATE_LOCK_TIMEOUT} for a lock; holders:\n"
                        f"{_describe(blockers) or '  (gone by now)'}", pytrace=False)
        conn.commit()
    return engine
