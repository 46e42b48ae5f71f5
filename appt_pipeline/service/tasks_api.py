"""The follow-up tasks API (SPEC §10 tasks, §4.4): list a lead's tasks, complete or skip one.

::

    GET  /api/v1/workspaces/{workspace_id}/leads/{lead_id}/tasks                      (read scope)
    POST /api/v1/workspaces/{workspace_id}/leads/{lead_id}/tasks/{task_id}/complete   (book scope)
    POST /api/v1/workspaces/{workspace_id}/leads/{lead_id}/tasks/{task_id}/skip       (book scope)

Lifecycle: ``pending`` → ``completed`` | ``skipped`` here; ``pending`` → ``cancelled`` by the write path when the
lead books again before the task was done. Completing (skipping) a task that is already completed (skipped)
answers it unchanged (safe to retry); one that ended another way is 409 ``task_not_pending``. Changing a task is a
write, so it needs the ``book`` scope, the workspace's write scope. 404 ``unknown_lead`` / ``unknown_task``.
"""

from datetime import datetime
from typing import Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel

from appt_pipeline.service.access import ApiBook, ApiRead
from appt_pipeline.service.common import NO_STORE, LeadIdPath, ServiceError, WorkspaceIdPath, error_responses
from appt_pipeline.service.reads import fetch_tasks, transition_task


class FollowUpTask(BaseModel):
    """A follow-up task (SPEC §1 ``follow_up_tasks``); times ISO-8601 UTC."""

    id: UUID
    type: Literal["meeting-canceled", "meeting-rescheduled"]
    status: Literal["pending", "completed", "skipped", "cancelled"]
    is_urgent: bool
    due_date: datetime
    suggested_message: str | None
    appointment_id: UUID | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class LeadTasks(BaseModel):
    """``GET …/tasks``: the lead's tasks, pending first, then newest first."""

    workspace_id: str
    lead_id: str
    tasks: list[FollowUpTask]


router = APIRouter(prefix="/api/v1", tags=["tasks"])


@router.get("/workspaces/{workspace_id}/leads/{lead_id}/tasks", response_class=Response,
            summary="A lead's follow-up tasks (SPEC §10)",
            responses={200: {"model": LeadTasks, "description": "the tasks"}, **error_responses(401, 403, 404, 503)})
async def lead_tasks(request: Request, grant: ApiRead, workspace_id: WorkspaceIdPath,
                     lead_id: LeadIdPath) -> Response:
    """Every follow-up task of the lead, whatever its status."""
    tasks = await fetch_tasks(request.app.state.service.db, grant.workspace_id, lead_id)
    if tasks is None:
        raise ServiceError(404, "unknown_lead")
    body = f'{{"workspace_id":{_json_str(grant.workspace_id)},"lead_id":{_json_str(lead_id)},"tasks":{tasks}}}'
    return Response(body, media_type="application/json", headers=NO_STORE)


def _json_str(value: str) -> str:
    return orjson.dumps(value).decode()


async def _transition(request: Request, workspace_id: str, lead_id: str, task_id: UUID, action: str) -> Response:
    outcome = await transition_task(request.app.state.service.db, workspace_id, lead_id, task_id, action)
    if outcome.error in ("unknown_lead", "unknown_task"):
        raise ServiceError(404, outcome.error)
    if outcome.error is not None:
        raise ServiceError(409, outcome.error)
    return Response(outcome.task_json, media_type="application/json", headers=NO_STORE)


_TRANSITION_RESPONSES = {200: {"model": FollowUpTask, "description": "the task after the change"},
                         409: {"description": "the task already ended another way (`task_not_pending`)"},
                         **error_responses(401, 403, 404, 503)}
TaskIdPath = Path(description="follow_up_tasks.id")


@router.post("/workspaces/{workspace_id}/leads/{lead_id}/tasks/{task_id}/complete", response_class=Response,
             summary="Complete a pending follow-up task (SPEC §10)", responses=_TRANSITION_RESPONSES)
async def complete_task(request: Request, grant: ApiBook, workspace_id: WorkspaceIdPath, lead_id: LeadIdPath,
                        task_id: UUID = TaskIdPath) -> Response:
    """``pending`` → ``completed`` (``completed_at`` stamped)."""
    return await _transition(request, grant.workspace_id, lead_id, task_id, "complete")


@router.post("/workspaces/{workspace_id}/leads/{lead_id}/tasks/{task_id}/skip", response_class=Response,
             summary="Skip a pending follow-up task (SPEC §10)", responses=_TRANSITION_RESPONSES)
async def skip_task(request: Request, grant: ApiBook, workspace_id: WorkspaceIdPath, lead_id: LeadIdPath,
                    task_id: UUID = TaskIdPath) -> Response:
    """``pending`` → ``skipped``."""
    return await _transition(request, grant.workspace_id, lead_id, task_id, "skip")
