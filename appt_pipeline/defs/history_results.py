"""Typed results of ``appointment_history_and_rollups``, and the one place that turns them into (and back
from) materialization metadata.

Every ``appointment_history`` materialization carries the same core keys first —
:data:`CORE_KEYS`: ``created``, ``updated``, ``status_changes``, ``errors``, ``rollups_changed``,
``duration_s`` (seconds) — then ``evidence`` and the extras of that evidence (the fields of
:class:`MigrationResult`, :class:`ReconciliationResult` or :class:`WebhookResult`). ``lead_rollups``
carries :class:`RollupsResult`. :func:`history_metadata` / :func:`rollups_metadata` write them;
:func:`parse_history` / :func:`parse_rollups` read them back from a run's materializations, so that readers
(the demo, tests) get typed fields instead of looking metadata keys up by string.

Core counters per evidence (SPEC §4 write outcomes):

* ``created``: appointments the run created (migration: legacy leads turned into appointments;
  reconciliation and webhooks: new CONFIRMED provider bookings).
* ``updated``: known appointments the run changed (cancellations + reschedules; 0 for the migration,
  which only creates or finds).
* ``status_changes``: appointment status transitions (reconciliation counts its cancellations, the only
  status change its report tracks).
* ``errors``: leads (migration), leads (reconciliation) or staging rows (webhooks) that failed.
* ``rollups_changed``: leads whose rollup columns changed (SPEC §3).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import dagster as dg

from appt_pipeline.pipelines.reconciliation import ReconcileReport
from appt_pipeline.pipelines.webhook_ingest import IngestReport
from appt_pipeline.store.migration import MigrationReport


@dataclass(frozen=True)
class HistoryCounters:
    """The core counters every materialization of ``appointment_history`` carries (module doc)."""

    created: int = 0
    updated: int = 0
    status_changes: int = 0
    errors: int = 0
    rollups_changed: int = 0
    duration_s: float = 0.0


#: The asset check of ``lead_rollups`` every history run reports (SPEC §10): drifted leads must be 0.
ROLLUP_DRIFT_CHECK = "rollup_drift"

CORE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(HistoryCounters))


@dataclass(frozen=True)
class MigrationResult:
    """A migration run (SPEC §5): core counters plus the scan's own counts."""

    EVIDENCE: ClassVar[str] = "migration"
    core: HistoryCounters
    apply: bool = True
    scanned: int = 0
    exists: int = 0
    skipped: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    warnings_by_kind: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: MigrationReport) -> "MigrationResult":
        core = HistoryCounters(created=report.created, updated=0, status_changes=report.status_changes,
                               errors=report.errors, rollups_changed=report.rollups_changed,
                               duration_s=round(report.duration_s, 3))
        return cls(core=core, apply=report.apply, scanned=report.scanned, exists=report.exists,
                   skipped=report.skipped, errors_by_kind=dict(report.errors_by_kind),
                   warnings_by_kind=dict(report.warnings_by_kind))


@dataclass(frozen=True)
class ReconciliationResult:
    """A reconciliation run (SPEC §6): core counters, the pass's counts and the provider API counters
    (``api``: ``api_requests``, ``api_429s``, … flattened into the metadata)."""

    EVIDENCE: ClassVar[str] = "reconciliation"
    core: HistoryCounters
    source: str = ""
    apply: bool = True
    provider: str = ""
    leads_due: int = 0
    leads_checked: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    not_found: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    new_bookings: int = 0
    cancellations: int = 0
    reschedules: int = 0
    circuit_broken: bool = False
    budget_exhausted: bool = False
    api: dict[str, int | float] = field(default_factory=dict)
    #: why the workspace was skipped (not connected to its provider); None when it ran
    skipped_workspace: str | None = None

    @classmethod
    def from_report(cls, report: ReconcileReport, *, apply: bool) -> "ReconciliationResult":
        core = HistoryCounters(created=report.new_bookings, updated=report.cancellations + report.reschedules,
                               status_changes=report.cancellations, errors=report.errors,
                               rollups_changed=report.changed, duration_s=round(report.duration_s, 3))
        return cls(core=core, source=report.source, apply=apply, provider=report.provider,
                   leads_due=report.leads_due, leads_checked=report.leads_checked, changed=report.changed,
                   unchanged=report.unchanged, skipped=report.skipped, not_found=report.not_found,
                   errors_by_kind=dict(report.errors_by_kind), new_bookings=report.new_bookings,
                   cancellations=report.cancellations, reschedules=report.reschedules,
                   circuit_broken=report.circuit_broken, budget_exhausted=report.budget_exhausted,
                   api=dict(report.api))

    @property
    def api_requests(self) -> int:
        return int(self.api.get("api_requests", 0))

    @property
    def api_429s(self) -> int:
        return int(self.api.get("api_429s", 0))


@dataclass(frozen=True)
class WebhookResult:
    """A webhook ingestion run (SPEC §7): core counters plus the staging rows' outcomes."""

    EVIDENCE: ClassVar[str] = "webhooks"
    core: HistoryCounters
    source: str = ""
    apply: bool = True
    rows_claimed: int = 0
    processed: int = 0
    ignored: int = 0
    ignored_by_reason: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    new_bookings: int = 0
    cancellations: int = 0
    reschedules: int = 0
    no_shows: int = 0
    max_lag_s: float = 0.0

    @classmethod
    def from_report(cls, report: IngestReport, *, source: str, apply: bool) -> "WebhookResult":
        core = HistoryCounters(created=report.new_bookings, updated=report.cancellations + report.reschedules,
                               status_changes=report.status_changes, errors=report.failed,
                               rollups_changed=report.primary_changes, duration_s=round(report.duration_s, 3))
        return cls(core=core, source=source, apply=apply, rows_claimed=report.claimed, processed=report.processed,
                   ignored=report.ignored, ignored_by_reason=dict(report.ignored_by_reason), failed=report.failed,
                   failed_by_kind=dict(report.failed_by_kind), new_bookings=report.new_bookings,
                   cancellations=report.cancellations, reschedules=report.reschedules, no_shows=report.no_shows,
                   max_lag_s=round(report.max_lag_s, 3))


HistoryResult = MigrationResult | ReconciliationResult | WebhookResult
_BY_EVIDENCE: dict[str, type[MigrationResult] | type[ReconciliationResult] | type[WebhookResult]] = {
    cls.EVIDENCE: cls for cls in (MigrationResult, ReconciliationResult, WebhookResult)
}
#: dict fields spread into the metadata as their own keys (the API counters), not one JSON value
_FLATTENED = {"api"}


@dataclass(frozen=True)
class RollupsResult:
    """``lead_rollups`` of one run: leads of the workspace, leads with history, rollups changed by the run."""

    leads: int = 0
    leads_with_history: int = 0
    rollups_changed: int = 0


def _metadata_value(value: Any) -> Any:
    return dg.MetadataValue.json(value) if isinstance(value, dict | list) else value


def history_metadata(result: HistoryResult) -> dict[str, Any]:
    """Metadata of an ``appointment_history`` materialization: :data:`CORE_KEYS` first, then ``evidence``
    and the evidence's extras (dicts as JSON, the API counters flattened, ``None`` left out)."""
    metadata: dict[str, Any] = {key: getattr(result.core, key) for key in CORE_KEYS}
    metadata["evidence"] = result.EVIDENCE
    for f in fields(result):
        value = getattr(result, f.name)
        if f.name == "core" or value is None:
            continue
        if f.name in _FLATTENED:
            metadata.update(value)
        else:
            metadata[f.name] = _metadata_value(value)
    return metadata


def rollups_metadata(result: RollupsResult) -> dict[str, Any]:
    """Metadata of a ``lead_rollups`` materialization (the fields of :class:`RollupsResult`)."""
    return {f.name: getattr(result, f.name) for f in fields(result)}


def _plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, dg.MetadataValue) else v for k, v in metadata.items()}


def parse_history(metadata: Mapping[str, Any]) -> HistoryResult:
    """The typed result behind an ``appointment_history`` materialization's metadata (raw values or
    ``MetadataValue``\\ s). Raises ``KeyError`` / ``ValueError`` when it is not one this module wrote."""
    values = _plain(metadata)
    cls = _BY_EVIDENCE.get(str(values.get("evidence")))
    if cls is None:
        raise ValueError(f"not an appointment_history materialization: evidence={values.get('evidence')!r}")
    core = HistoryCounters(**{key: values[key] for key in CORE_KEYS})
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in _FLATTENED:
            kwargs[f.name] = {k: v for k, v in values.items() if k.startswith(f"{f.name}_")}
        elif f.name != "core" and f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(core=core, **kwargs)


def parse_rollups(metadata: Mapping[str, Any]) -> RollupsResult:
    """The typed result behind a ``lead_rollups`` materialization's metadata."""
    values = _plain(metadata)
    return RollupsResult(**{f.name: values[f.name] for f in fields(RollupsResult) if f.name in values})
