"""Schema upgrades: the numbered files of ``sql/`` applied by yoyo-migrations (SPEC §1, §12 ``db upgrade``)."""

from dataclasses import dataclass

import psycopg
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


#: yoyo's table of applied versions (its default name).
_VERSIONS_TABLE = "_yoyo_migration"

#: Advisory lock key held around an upgrade: yoyo's own lock lives in a table that concurrent first
#: upgrades would race to create.
_UPGRADE_LOCK_KEY = 0x61707075


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def known_versions() -> list[str]:
    """Every version of ``sql/`` (file stems, rollback files excluded), in order."""
    return sorted(m.id for m in read_migrations(str(sql_dir())))


def schema_state(url: str) -> UpgradeResult:
    """The applied versions of the database at ``url`` and, as ``applied``, nothing (read only: unlike
    yoyo's own queries, this never creates yoyo's tables). Raises ``psycopg.Error`` when unreachable."""
    with psycopg.connect(_libpq(url), connect_timeout=10) as conn:
        if conn.execute("SELECT to_regclass(%s)", (_VERSIONS_TABLE,)).fetchone() == (None,):
            return UpgradeResult(applied=[], current=[])
        rows = conn.execute("SELECT migration_id FROM _yoyo_migration").fetchall()
    return UpgradeResult(applied=[], current=sorted(str(r[0]) for r in rows))


def pending_versions(url: str) -> list[str]:
    """Versions of ``sql/`` not applied to the database at ``url`` (read only; see :func:`schema_state`)."""
    applied = set(schema_state(url).current)
    return [v for v in known_versions() if v not in applied]


def upgrade(url: str) -> UpgradeResult:
    """Apply every pending ``sql/`` file in order, each in its own transaction; idempotent.

    yoyo records applied versions in ``_yoyo_migration``; a session advisory lock around it serialises
    concurrent upgrades, first ones included (SPEC §12 ``db upgrade``). A second call applies nothing.
    """
    with psycopg.connect(_libpq(url), autocommit=True, connect_timeout=10) as guard:
        guard.execute("SELECT pg_advisory_lock(%s)", (_UPGRADE_LOCK_KEY,))
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
