"""Process environment for commands that touch the database or Dagster (SPEC §12).

:func:`app_environment` resolves the app and Dagster database URLs (starting the embedded
PostgreSQL when ``APPT_DATABASE_URL`` is unset), applies the schema, exports the URLs so that
Dagster's ``EnvVar`` resources and child processes see the same databases, and prepares
``DAGSTER_HOME`` with the project's ``dagster.yaml``.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from appt_pipeline.settings import DAGSTER_PG_URL_ENV, DATABASE_URL_ENV, PROJECT_ROOT, appt_home
from appt_pipeline.store.embedded import DatabaseUrls, resolve_database_urls
from appt_pipeline.store.engine import get_engine, redact_url
from appt_pipeline.store.schema import UpgradeResult, upgrade


@dataclass(frozen=True)
class Runtime:
    """What a command needs: database URLs, the app engine, the Dagster home and the schema state."""

    urls: DatabaseUrls
    engine: sa.Engine
    dagster_home: Path
    schema: UpgradeResult

    def describe(self) -> str:
        """One line for stderr, with any password masked (SPEC §11)."""
        where = "embedded PostgreSQL" if self.urls.embedded else redact_url(self.urls.app_url)
        return f"database: {where}; DAGSTER_HOME={self.dagster_home}"


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``$APPT_HOME/dagster_home``) holding the project's ``dagster.yaml``."""
    home = Path(os.environ.get("DAGSTER_HOME") or appt_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return home


@contextmanager
def dagster_environment(urls: DatabaseUrls, dagster_home: Path) -> Iterator[None]:
    """Set ``APPT_DATABASE_URL``, ``APPT_DAGSTER_PG_URL`` and ``DAGSTER_HOME`` for Dagster (module doc)
    inside the block; restore the previous values (or unset them) afterwards."""
    wanted = {DATABASE_URL_ENV: urls.app_url, DAGSTER_PG_URL_ENV: urls.dagster_url,
              "DAGSTER_HOME": str(dagster_home)}
    previous = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def app_environment() -> Iterator[Runtime]:
    """Databases resolved and upgraded, ``DAGSTER_HOME`` ready, the Dagster environment set within the
    block (:func:`dagster_environment`)."""
    urls = resolve_database_urls()
    schema = upgrade(urls.app_url)
    home = ensure_dagster_home()
    with dagster_environment(urls, home):
        yield Runtime(urls=urls, engine=get_engine(urls.app_url), dagster_home=home, schema=schema)
