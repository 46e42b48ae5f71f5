"""The vocabulary the write path's SQL binds as parameters (never pasted into SQL text).

Every statement of the write path is executed with :data:`VOCAB_PARAMS` merged into its parameters,
so ``source <> ALL (CAST(:no_side_effect_sources AS appointment_source[]))`` and friends read the one
definition in :mod:`appt_pipeline.domain`.
"""

from appt_pipeline.domain.rules import STATUS_PROTECTED_FROM_BOOKING, TASK_MEETING_CANCELED, TASK_MEETING_RESCHEDULED
from appt_pipeline.domain.vocab import SOURCES_WITHOUT_SIDE_EFFECTS, ErrorKind, Source

#: SQL fragment: the observation ``o``-less row's ``source`` has side effects (SPEC §3, §4.4).
HAS_SIDE_EFFECTS = "source <> ALL (CAST(:no_side_effect_sources AS appointment_source[]))"

VOCAB_PARAMS: dict[str, object] = {
    "no_side_effect_sources": [s.value for s in SOURCES_WITHOUT_SIDE_EFFECTS],
    "migration": Source.MIGRATION.value,
    "unknown_lead": ErrorKind.UNKNOWN_LEAD.value,
    "lead_in_other_workspace": ErrorKind.LEAD_IN_OTHER_WORKSPACE.value,
    "provider_key_in_other_workspace": ErrorKind.PROVIDER_KEY_IN_OTHER_WORKSPACE.value,
    "task_canceled": TASK_MEETING_CANCELED,
    "task_rescheduled": TASK_MEETING_RESCHEDULED,
    "protected_lead_statuses": sorted(STATUS_PROTECTED_FROM_BOOKING),
}
