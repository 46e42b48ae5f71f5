"""Process environment for commands that touch the database or Dagster (SPEC §12).

:func:`app_environment` resolves the app and Dagster database URLs (starting the embedded
PostgreSQL when ``APPT_DATABASE_URL`` is unset), checks that both databases exist and the schema is
up to date — or, for ``db upgrade`` and ``demo`` / ``dev`` on the embedded default, creates and
upgrades them — exports the URLs so that Dagster's ``EnvVar`` resources and child processes see the
same databases, and prepares ``DAGSTER_HOME`` with the project's ``dagster.yaml``.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlalchemy as sa

from appt_pipeline.settings import (
    DAGSTER_PG_URL_ENV,
    DAGSTER_YAML_ENV,
    DATABASE_URL_ENV,
    PROJECT_ROOT,
    appt_home,
)
from appt_pipeline.store.embedded import DatabaseNotReady, DatabaseUrls, resolve_database_urls
from appt_pipeline.store.engine import get_engine, redact_url
from appt_pipeline.store.schema import UpgradeResult, pending_versions, schema_state, upgrade


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
    """``$DAGSTER_HOME`` (default ``$APPT_HOME/dagster_home``) holding the project's ``dagster.yaml`` — or the
    file ``APPT_DAGSTER_YAML`` names (production: ``deploy/dagster.yaml``, docs/operations.md §9).

    Raises FileNotFoundError when ``APPT_DAGSTER_YAML`` names no file."""
    home = Path(os.environ.get("DAGSTER_HOME") or appt_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    source = Path(os.environ.get(DAGSTER_YAML_ENV) or PROJECT_ROOT / "dagster.yaml")
    if not source.is_file():
        raise FileNotFoundError(f"{DAGSTER_YAML_ENV}={source} is not a file")
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


def _checked_schema(urls: DatabaseUrls) -> UpgradeResult:
    """The app database's schema state; :class:`DatabaseNotReady` when versions are pending."""
    try:
        pending = pending_versions(urls.app_url)
        state = schema_state(urls.app_url)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"cannot read the schema version of {redact_url(urls.app_url)}: {reason}") from None
    if pending:
        where = "the embedded PostgreSQL" if urls.embedded else redact_url(urls.app_url)
        state_text = "has no schema" if not state.current else f"lacks schema version(s) {', '.join(pending)}"
        raise DatabaseNotReady(f"database {where} {state_text}; apply it with: appt-pipeline db upgrade")
    return state


@contextmanager
def app_environment(*, create: bool = False) -> Iterator[Runtime]:
    """Databases resolved and checked, ``DAGSTER_HOME`` ready, the Dagster environment set within the
    block (:func:`dagster_environment`).

    With ``create`` missing databases are created and the schema upgraded; without, a missing database
    or pending schema versions raise :class:`~appt_pipeline.store.embedded.DatabaseNotReady` (never a
    silent creation: a mistyped URL must not become an empty database). Raises
    :class:`~appt_pipeline.store.embedded.DatabaseUrlError` for a URL that is not PostgreSQL and
    ``RuntimeError`` for an unreachable server.
    """
    urls = resolve_database_urls(create=create)
    schema = upgrade(urls.app_url) if create else _checked_schema(urls)
    home = ensure_dagster_home()
    with dagster_environment(urls, home):
        yield Runtime(urls=urls, engine=get_engine(urls.app_url), dagster_home=home, schema=schema)
