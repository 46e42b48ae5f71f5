"""Operator settings from the environment (SPEC §12). Read lazily: nothing happens at import time.

| variable | default | meaning |
|---|---|---|
| ``APPT_DATABASE_URL`` | unset → embedded PostgreSQL | SQLAlchemy URL of the app database |
| ``APPT_DAGSTER_PG_URL`` | derived from the app URL (database ``<app>_dagster``) | Dagster instance storage |
| ``APPT_HOME`` | ``./.appt`` | project data folder (embedded Postgres, Dagster home) |
| ``DAGSTER_HOME`` | ``$APPT_HOME/dagster_home`` | Dagster instance folder |
| ``APPT_SECRET_KEY`` | none | Fernet key encrypting stored secrets |
| ``APPT_PROVIDER_HOST_ALLOWLIST`` | empty | extra ``host:port`` a provider token may go to |
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from appt_pipeline.domain.provider_hosts import HostAllowlist

DATABASE_URL_ENV = "APPT_DATABASE_URL"
DAGSTER_PG_URL_ENV = "APPT_DAGSTER_PG_URL"
HOME_ENV = "APPT_HOME"
SECRET_KEY_ENV = "APPT_SECRET_KEY"
#: the Dagster instance config the CLI installs into ``DAGSTER_HOME`` (default: the repo's ``dagster.yaml``;
#: production sets ``deploy/dagster.yaml``, docs/operations.md §9)
DAGSTER_YAML_ENV = "APPT_DAGSTER_YAML"

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


PROVIDER_HOST_ALLOWLIST_ENV = "APPT_PROVIDER_HOST_ALLOWLIST"


def provider_host_allowlist() -> "HostAllowlist":
    """``APPT_PROVIDER_HOST_ALLOWLIST`` parsed (read on every call; README "Provider hosts").

    Raises:
        ProviderHostError: a malformed entry.
    """
    from appt_pipeline.domain.provider_hosts import parse_allowlist

    return parse_allowlist(os.environ.get(PROVIDER_HOST_ALLOWLIST_ENV))


@contextmanager
def provider_hosts_allowed(*base_urls: str) -> Iterator[None]:
    """Within the block, ``APPT_PROVIDER_HOST_ALLOWLIST`` also lists the ``host:port`` of ``base_urls``
    (for code that starts simulators: demo, ``dev``, tests, benchmarks); the previous value comes back after.
    Child processes started within the block inherit it."""
    previous = os.environ.get(PROVIDER_HOST_ALLOWLIST_ENV)
    added = []
    for url in base_urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        added.append(f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}")
    os.environ[PROVIDER_HOST_ALLOWLIST_ENV] = ",".join(p for p in [previous or "", *added] if p)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROVIDER_HOST_ALLOWLIST_ENV, None)
        else:
            os.environ[PROVIDER_HOST_ALLOWLIST_ENV] = previous
