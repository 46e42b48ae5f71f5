"""No silent database creation (docs/operations.md §1): only ``db upgrade`` — and ``demo`` / ``dev`` on the
embedded default — create databases or apply the schema. Every other command on a missing or un-upgraded
database exits 2 with one line naming the database and ``appt-pipeline db upgrade``, writes nothing, and
``serve`` does not start; a URL that is not PostgreSQL gets one line, never a traceback; concurrent first
``db upgrade`` runs all succeed. Real subprocesses of the console script against the real server.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from appt_pipeline.store.embedded import database_exists, ensure_database
from appt_pipeline.store.schema import known_versions
from appt_pipeline_tests.helpers import free_port
from appt_pipeline_tests.helpers.cli import CLI, CLI_TIMEOUT, cli_env, drop_database, run_cli

#: Commands that must refuse a database that is not ready (each with arguments that are valid otherwise).
COMMANDS = [
    ("migrate", "--workspace", "ws1"),
    ("workspace", "set", "ws1", "--name", "x"),
    ("rollups", "--workspace", "ws1", "--json"),
    ("webhooks", "requeue", "--workspace", "ws1"),
    ("run", "migration_job", "--workspace", "ws1"),
]


@pytest.fixture()
def fresh_name(server_url: str) -> Iterator[str]:
    """A database name nobody created; both it and its ``_dagster`` sibling are dropped afterwards."""
    name = f"appt_ready_{uuid.uuid4().hex[:8]}"
    yield name
    drop_database(server_url, name)
    drop_database(server_url, f"{name}_dagster")


def _url(server_url: str, name: str) -> str:
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _tables(url: str) -> list[str]:
    libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def _assert_refused(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_missing_database_is_refused_and_not_created(server_url: str, fresh_name: str, tmp_path: Path,
                                                     command: tuple[str, ...]) -> None:
    env = cli_env(tmp_path / "home", _url(server_url, fresh_name))
    proc = run_cli(env, *command)
    _assert_refused(proc, fresh_name, "does not exist", "appt-pipeline db upgrade")
    assert not database_exists(server_url, fresh_name)
    assert not database_exists(server_url, f"{fresh_name}_dagster")


def test_database_without_schema_is_refused_and_left_untouched(server_url: str, fresh_name: str,
                                                              tmp_path: Path) -> None:
    url = _url(server_url, fresh_name)
    ensure_database(url, fresh_name)
    ensure_database(url, f"{fresh_name}_dagster")
    env = cli_env(tmp_path / "home", url)
    for command in COMMANDS:
        _assert_refused(run_cli(env, *command), fresh_name, "has no schema", "appt-pipeline db upgrade")
    assert _tables(url) == []  # not even yoyo's bookkeeping tables


def test_database_missing_a_version_names_it(server_url: str, fresh_name: str, tmp_path: Path) -> None:
    url = _url(server_url, fresh_name)
    env = cli_env(tmp_path / "home", url)
    assert run_cli(env, "db", "upgrade").returncode == 0
    newest = known_versions()[-1]
    libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:  # as if the database predates the newest file
        conn.execute("DELETE FROM _yoyo_migration WHERE migration_id = %s", (newest,))
    _assert_refused(run_cli(env, "migrate", "--workspace", "ws1"), fresh_name, newest, "appt-pipeline db upgrade")


def test_serve_refuses_to_start_on_a_missing_database(server_url: str, fresh_name: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", _url(server_url, fresh_name), APPT_SECRET_KEY=Fernet.generate_key().decode())
    port = free_port()
    proc = subprocess.run([str(CLI), "serve", "--port", str(port)], env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)
    _assert_refused(proc, fresh_name, "appt-pipeline db upgrade")
    assert not database_exists(server_url, fresh_name)


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://root@127.0.0.1:3306/appt", "must be a PostgreSQL URL"),
    ("sqlite:///tmp/appt.db", "must be a PostgreSQL URL"),
    ("not a url", "is not a database URL"),
    ("postgresql://postgres@127.0.0.1:5432", "names no database"),
])
def test_url_that_is_not_postgresql_gets_one_line(tmp_path: Path, url: str, expected: str) -> None:
    env = cli_env(tmp_path / "home", url)
    for command in (("migrate", "--workspace", "ws1"), ("db", "upgrade")):
        _assert_refused(run_cli(env, *command), "APPT_DATABASE_URL", expected)


def test_db_upgrade_creates_then_commands_work(server_url: str, fresh_name: str, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", _url(server_url, fresh_name))
    assert run_cli(env, "db", "upgrade").returncode == 0
    assert database_exists(server_url, fresh_name) and database_exists(server_url, f"{fresh_name}_dagster")
    proc = run_cli(env, "workspace", "set", "ws1", "--name", "Acme")
    assert proc.returncode == 0, proc.stderr


def test_concurrent_first_upgrades_all_succeed(server_url: str, fresh_name: str, tmp_path: Path) -> None:
    """Four first starts at once: none fails on the creation race, every version is applied exactly once."""
    url = _url(server_url, fresh_name)
    procs = [subprocess.Popen([str(CLI), "db", "upgrade"], env=cli_env(tmp_path / f"home{i}", url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [(p.wait(timeout=CLI_TIMEOUT), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    applied = [line for _, err in results for line in err.splitlines() if line.startswith("applied:")]
    first_runs = [line for line in applied if not line.startswith("applied: nothing")]
    assert len(first_runs) == 1, applied  # one process applied the schema, the others found it up to date
    libpq = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        versions = [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY 1")]
    assert versions == known_versions()
