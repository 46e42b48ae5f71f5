"""Running the ``appt-pipeline`` console script as a real subprocess against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

CLI = Path(sys.executable).with_name("appt-pipeline")
CLI_TIMEOUT = 60


def cli_env(home: Path, database_url: str, **extra: str) -> dict[str, str]:
    """Child environment: the test database, a private APPT_HOME, derived Dagster settings, no secret key."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTER_HOME", "APPT_DAGSTER_PG_URL", "APPT_SECRET_KEY")}
    env.update(APPT_DATABASE_URL=database_url, APPT_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], env=env, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)


def drop_database(server_url: str, name: str) -> None:
    admin = sa.make_url(server_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def one_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The single JSON object that makes up stdout (fails when stdout holds anything else)."""
    out = proc.stdout.strip()
    assert out.count("\n") == 0, f"stdout must be one JSON object, got:\n{proc.stdout}"
    value = json.loads(out)
    assert isinstance(value, dict)
    return value
