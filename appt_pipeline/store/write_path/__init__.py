"""The one write path (SPEC §4): observations → appointment history + lead rollups, in one transaction.

Modules, one concern each:

* :mod:`.staging` — the staging table ``appt_obs`` (typed column contract, DDL, COPY, key lookups);
* :mod:`.locks` — lead locks in id order, unknown leads, locking and noting existing keys;
* :mod:`.upsert` — the upsert of SPEC §4.1 and the status history (§4.2);
* :mod:`.links` — reschedule links (§4.3);
* :mod:`.side_effects` — primaries, rollups, lead status (§3) and follow-up tasks (§4.4);
* :mod:`.params` — the vocabulary bound into the SQL above;
* :mod:`.apply` — the entry points :func:`apply_staged`, :func:`apply_observations`, :func:`write_observations`.
"""

from appt_pipeline.store.write_path.apply import (
    StagedSummary,
    WriteResult,
    apply_observations,
    apply_staged,
    write_observations,
)
from appt_pipeline.store.write_path.staging import (
    ANALYZE_STAGE_ROWS,
    CREATE_STAGE_SQL,
    KEY_KIND,
    KEY_VALUE,
    STAGE_COLUMNS,
    STAGE_TABLE,
    StageColumn,
    ensure_stage,
    rows_by_key,
    stage_insert_sql,
)
from appt_pipeline.store.write_path.upsert import ConcurrentKeyInsert

__all__ = [
    "ANALYZE_STAGE_ROWS",
    "CREATE_STAGE_SQL",
    "KEY_KIND",
    "KEY_VALUE",
    "STAGE_COLUMNS",
    "STAGE_TABLE",
    "ConcurrentKeyInsert",
    "StageColumn",
    "StagedSummary",
    "WriteResult",
    "apply_observations",
    "apply_staged",
    "ensure_stage",
    "rows_by_key",
    "stage_insert_sql",
    "write_observations",
]
