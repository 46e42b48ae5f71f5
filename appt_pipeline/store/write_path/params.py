"""The vocabulary the write path's SQL binds as parameters (never pasted into SQL text).

Every statement of the write path is executed with :data:`VOCAB_PARAMS` merged into its parameters,
so ``source <> ALL (CAST(:no_side_effect_sources AS appointment_source[]))`` and friends read the one
definition in :mod:`appt_pipeline.domain`.
"""

from appt_pipeline.domain.rules import STATUS_PROTECTED_FROM_BOOKING, TASK_MEETING_CANCELED, TASK_MEETING_RESCHEDULED
from appt_pipeline.domain.vocab import (
    SOURCES_OF_MOVE_TASKS,
    SOURCES_WITHOUT_SIDE_EFFECTS,
    ErrorKind,
    LeadStatus,
    Source,
    TaskStatus,
)

#: SQL fragment: the observation ``o``-less row's ``source`` has side effects (SPEC §3, §4.4).
HAS_SIDE_EFFECTS = "source <> ALL (CAST(:no_side_effect_sources AS appointment_source[]))"

VOCAB_PARAMS: dict[str, object] = {
    "no_side_effect_sources": [s.value for s in SOURCES_WITHOUT_SIDE_EFFECTS],
    "move_task_sources": [s.value for s in SOURCES_OF_MOVE_TASKS],
    "migration": Source.MIGRATION.value,
    "unknown_lead": ErrorKind.UNKNOWN_LEAD.value,
    "lead_in_other_workspace": ErrorKind.LEAD_IN_OTHER_WORKSPACE.value,
    "provider_key_in_other_workspace": ErrorKind.PROVIDER_KEY_IN_OTHER_WORKSPACE.value,
    "task_canceled": TASK_MEETING_CANCELED,
    "task_rescheduled": TASK_MEETING_RESCHEDULED,
    "protected_lead_statuses": sorted(STATUS_PROTECTED_FROM_BOOKING),
    "meeting_booked": LeadStatus.MEETING_BOOKED.value,
    "qualified": LeadStatus.QUALIFIED.value,
    "task_pending": TaskStatus.PENDING.value,
    "task_completed": TaskStatus.COMPLETED.value,
    "task_cancelled": TaskStatus.CANCELLED.value,
}

#: ``follow_up_tasks`` pending status as it stands in the partial unique index ``(lead_id, type) WHERE status =
#: 'pending'`` (sql/0001_schema.sql): ``ON CONFLICT … WHERE`` must repeat the index predicate literally to
#: infer that index, so it is spelled from the vocabulary here rather than bound.
TASK_PENDING_LITERAL = TaskStatus.PENDING.value
