"""Schema upgrades: the numbered files of ``sql/`` applied by yoyo-migrations (SPEC §1, §12 ``db upgrade``)."""

from dataclasses import dataclass

from sqlalchemy.engine import make_url
from yoyo import get_backend, read_migrations

from appt_pipeline.settings import sql_dir


@dataclass(frozen=True)
class UpgradeResult:
    """Versions applied by this call and all versions applied so far (file stems, e.g. ``0001_schema``)."""

    applied: list[str]
    current: list[str]


def _yoyo_url(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def upgrade(url: str) -> UpgradeResult:
    """Apply every pending ``sql/`` file in order, each in its own transaction; idempotent.

    yoyo records applied versions in ``_yoyo_migration`` and takes a lock, so concurrent upgrades
    are safe. A second call applies nothing.
    """
    backend = get_backend(_yoyo_url(url))
    migrations = read_migrations(str(sql_dir()))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
            applied_ids = [m.id for m in pending]
            current = sorted(m.id for m in migrations if backend.is_applied(m))
    finally:
        backend.connection.close()
    return UpgradeResult(applied=applied_ids, current=current)
