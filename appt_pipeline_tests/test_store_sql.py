"""Every SQL statement the write path and the migration define parses and resolves against the real schema.

Each module-level statement is run through PostgreSQL ``PREPARE`` (parse analysis: syntax, tables, columns,
types, with ``:name`` parameters as ``$n``), so a broken statement fails here rather than in production.
"""

import re
from types import ModuleType

import pytest
import sqlalchemy as sa

from appt_pipeline.store import migration
from appt_pipeline.store.write_path import apply, ensure_stage, links, locks, side_effects, staging, upsert

_STATEMENT = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def _statements(module: ModuleType) -> list[tuple[str, str]]:
    found = []
    for name, value in vars(module).items():
        values = value if isinstance(value, tuple) else (value,)
        for i, v in enumerate(values):
            if isinstance(v, str) and _STATEMENT.match(v) and ";" not in v:
                found.append((f"{module.__name__}.{name}[{i}]", v))
    return found


STATEMENTS = [s for m in (apply, links, locks, side_effects, staging, upsert, migration) for s in _statements(m)]


def _positional(sql: str) -> str:
    names: dict[str, int] = {}
    return _PARAM.sub(lambda m: f"${names.setdefault(m.group(1), len(names) + 1)}", sql)


def test_statements_are_collected() -> None:
    assert len(STATEMENTS) > 30


@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_statement_prepares(db: sa.Engine, name: str, sql: str) -> None:
    with db.connect() as conn, conn.begin():
        ensure_stage(conn)
        conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS appt_dry_claims (provider meeting_booking_provider,"
                             " key text, lead_id text, PRIMARY KEY (provider, key))")
        raw = conn.connection.driver_connection
        raw.execute(f"PREPARE appt_check AS {_positional(sql)}")
        raw.execute("DEALLOCATE appt_check")
