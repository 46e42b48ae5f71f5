"""Operator settings from the environment (SPEC §12). Read lazily: nothing happens at import time.

| variable | default | meaning |
|---|---|---|
| ``APPT_DATABASE_URL`` | unset → embedded PostgreSQL | SQLAlchemy URL of the app database |
| ``APPT_DAGSTER_PG_URL`` | derived from the app URL (database ``<app>_dagster``) | Dagster instance storage |
| ``APPT_HOME`` | ``./.appt`` | project data folder (embedded Postgres, Dagster home) |
| ``DAGSTER_HOME`` | ``$APPT_HOME/dagster_home`` | Dagster instance folder |
| ``APPT_SECRET_KEY`` | none | Fernet key encrypting stored secrets |
"""

import os
from pathlib import Path

DATABASE_URL_ENV = "APPT_DATABASE_URL"
DAGSTER_PG_URL_ENV = "APPT_DAGSTER_PG_URL"
HOME_ENV = "APPT_HOME"
SECRET_KEY_ENV = "APPT_SECRET_KEY"

#: Repository root (editable install): holds sql/, dagster.yaml, workspace.yaml.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def appt_home() -> Path:
    """The project data folder: ``$APPT_HOME`` or ``./.appt`` in the working directory."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".appt").resolve()


def sql_dir() -> Path:
    """The folder of numbered schema files (``sql/``)."""
    path = PROJECT_ROOT / "sql"
    if not path.is_dir():
        raise FileNotFoundError(f"schema folder not found at {path}; install the project with `pip install -e .`")
    return path
