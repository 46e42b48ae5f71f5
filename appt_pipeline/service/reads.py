"""The service's reads on its async pool (SPEC §9, §10): token checks, a lead's history, booking status, tasks and
a workspace's capacity
(and the one task transition, complete / skip, which is as safe to repeat as a read).

Each is ONE statement of the store (:mod:`appt_pipeline.store.tokens`, :mod:`appt_pipeline.store.history`) on a
pooled autocommit connection (:meth:`appt_pipeline.service.db.Database.run`, which raises
``DatabaseUnavailable`` when the database cannot answer in time; every statement here is safe to repeat).
"""

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from appt_pipeline.domain.history import HistoryFilters
from appt_pipeline.service.db import Database
from appt_pipeline.store.capacity import CAPACITY_SQL, UnknownWorkspaceError, capacity_params, report_from_rows
from appt_pipeline.store.history import (
    BOOKING_STATUS_SQL,
    HISTORY_SQL,
    LeadHistory,
    booking_status_from_row,
    booking_status_params,
    history_from_row,
    history_params,
)
from appt_pipeline.store.tasks import (
    TASKS_SQL,
    TRANSITION_SQL,
    Transition,
    tasks_params,
    transition_from_row,
    transition_params,
)
from appt_pipeline.store.tokens import VERIFY_SQL, TokenCheck, check_from_row, verify_params, well_formed


async def _one(db: Database, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    async def run(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()

    return await db.run(run)


async def check_token(db: Database, token: str) -> TokenCheck:
    """Verify ``token`` (a malformed one without a query); see :class:`~appt_pipeline.store.tokens.TokenCheck`."""
    if not well_formed(token):
        return TokenCheck(None, "invalid_token")
    return check_from_row(token, await _one(db, VERIFY_SQL, verify_params(token)))


def _no_nul(*values: str) -> bool:
    return all("\x00" not in v for v in values)


async def fetch_history(db: Database, workspace_id: str, lead_id: str, filters: HistoryFilters,
                        now: datetime) -> LeadHistory | None:
    """The lead's history (``None``: no such lead in the workspace); ``now`` is UTC."""
    if not _no_nul(workspace_id, lead_id):  # PostgreSQL text cannot hold NUL: no such lead
        return None
    row = await _one(db, HISTORY_SQL, history_params(workspace_id, lead_id, filters, now))
    return history_from_row(workspace_id, lead_id, filters, now, row)


async def fetch_booking_status(db: Database, workspace_id: str, lead_id: str, now: datetime) -> dict[str, Any] | None:
    """The lead's booking status (``None``: no such lead in the workspace); ``now`` is UTC."""
    if not _no_nul(workspace_id, lead_id):
        return None
    row = await _one(db, BOOKING_STATUS_SQL, booking_status_params(workspace_id, lead_id, now))
    return booking_status_from_row(workspace_id, lead_id, row)


async def fetch_tasks(db: Database, workspace_id: str, lead_id: str) -> str | None:
    """The lead's follow-up tasks as a JSON array text (``None``: no such lead in the workspace)."""
    if not _no_nul(workspace_id, lead_id):
        return None
    row = await _one(db, TASKS_SQL, tasks_params(workspace_id, lead_id))
    return str(row[0]) if row is not None else None


async def transition_task(db: Database, workspace_id: str, lead_id: str, task_id: UUID, action: str) -> Transition:
    """Complete or skip a pending task (``action`` = ``complete`` | ``skip``); repeating it is harmless."""
    if not _no_nul(workspace_id, lead_id):
        return Transition("unknown_lead", None)
    return transition_from_row(action, await _one(db, TRANSITION_SQL,
                                                  transition_params(workspace_id, lead_id, task_id, action)))


async def fetch_capacity(db: Database, workspace_id: str, days: int, now: datetime) -> dict[str, Any] | None:
    """The workspace's capacity for [now, now + days) as the ``capacity --json`` object (one workspace), computed
    by :data:`~appt_pipeline.store.capacity.CAPACITY_SQL` (one statement, JIT off, read only); ``None`` when the
    workspace does not exist."""
    if not _no_nul(workspace_id):
        return None
    params = capacity_params([workspace_id], days=days, now=now)

    async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
        async with conn.transaction():
            await conn.execute("SET LOCAL jit = off")
            cur = await conn.execute(CAPACITY_SQL, params)
            return await cur.fetchall()

    try:
        return report_from_rows(params, await db.run(run)).as_dict()
    except UnknownWorkspaceError:
        return None
