"""Follow-up tasks of a lead and their lifecycle (SPEC §4.4, §10 tasks).

``pending`` → ``completed`` | ``skipped`` by a person (the API); ``pending`` → ``cancelled`` by the write path
when the lead is booked again before the task was done. Each read or transition is one statement, written for
psycopg's ``%(name)s`` parameters so the service's async pool and a sync connection run the same text.
"""

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from appt_pipeline.domain.vocab import TaskStatus

#: Transitions a person may ask for, by API action.
ACTIONS: dict[str, TaskStatus] = {"complete": TaskStatus.COMPLETED, "skip": TaskStatus.SKIPPED}

_TASK_JSON = """json_build_object(
    'id', t.id, 'type', t.type, 'status', t.status, 'is_urgent', t.is_urgent,
    'due_date', to_char(t.due_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'suggested_message', t.suggested_message, 'appointment_id', t.appointment_id,
    'created_at', to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'updated_at', to_char(t.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'completed_at', to_char(t.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))"""

#: The lead's tasks, pending first, then newest first; no row when the lead is not in the workspace.
TASKS_SQL = f"""
SELECT coalesce((SELECT json_agg({_TASK_JSON} ORDER BY t.status <> 'pending', t.created_at DESC, t.id)
                 FROM follow_up_tasks t WHERE t.lead_id = l.id), '[]'::json)::text
FROM leads l
WHERE l.id = %(lead_id)s AND l.workspace_id = %(workspace_id)s
"""

#: One transition: the task (of that lead, in that workspace) moves from pending to ``%(to)s``; the same
#: transition asked again answers the task as it is (idempotent). Returns the lead's existence, the task's status
#: before, and the task after as JSON; the caller tells unknown lead / unknown task / not pending apart.
TRANSITION_SQL = f"""
WITH lead AS (
    SELECT l.id FROM leads l WHERE l.id = %(lead_id)s AND l.workspace_id = %(workspace_id)s
), target AS (
    SELECT t.id, t.status FROM follow_up_tasks t JOIN lead ON lead.id = t.lead_id
    WHERE t.id = %(task_id)s FOR UPDATE OF t
), changed AS (
    UPDATE follow_up_tasks t
    SET status = %(to)s, updated_at = now(),
        completed_at = CASE WHEN %(to)s = %(completed)s THEN now() END
    FROM target WHERE t.id = target.id AND target.status = %(pending)s
    RETURNING t.*
)
SELECT EXISTS (SELECT 1 FROM lead),
       (SELECT status FROM target),
       coalesce((SELECT {_TASK_JSON} FROM changed t),
                (SELECT {_TASK_JSON} FROM follow_up_tasks t JOIN target ON target.id = t.id))::text
"""


def tasks_params(workspace_id: str, lead_id: str) -> dict[str, Any]:
    """Parameters of :data:`TASKS_SQL`."""
    return {"workspace_id": workspace_id, "lead_id": lead_id}


def transition_params(workspace_id: str, lead_id: str, task_id: UUID, action: str) -> dict[str, Any]:
    """Parameters of :data:`TRANSITION_SQL` for ``action`` (a key of :data:`ACTIONS`; KeyError otherwise)."""
    return {"workspace_id": workspace_id, "lead_id": lead_id, "task_id": task_id, "to": ACTIONS[action].value,
            "completed": TaskStatus.COMPLETED.value, "pending": TaskStatus.PENDING.value}


@dataclass(frozen=True)
class Transition:
    """Outcome of :data:`TRANSITION_SQL`. ``error``: ``unknown_lead``, ``unknown_task`` or ``task_not_pending``
    (the task already ended another way), else None and ``task_json`` is the task after the transition."""

    error: str | None
    task_json: str | None


def transition_from_row(action: str, row: tuple[Any, ...] | None) -> Transition:
    """Interpret the row :data:`TRANSITION_SQL` returned for ``action``."""
    lead_found, before, task_json = row if row is not None else (False, None, None)
    if not lead_found:
        return Transition("unknown_lead", None)
    if before is None:
        return Transition("unknown_task", None)
    if before not in (TaskStatus.PENDING.value, ACTIONS[action].value):
        return Transition("task_not_pending", task_json)
    return Transition(None, task_json)
