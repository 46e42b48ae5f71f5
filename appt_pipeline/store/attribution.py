"""Calendar attribution in SQL (SPEC §9): which appointments miss it, filling it, and coverage.

Attribution is ``appointments.ghl_calendar_id`` for GHL rows and ``appointments.calendly_event_type_uri``
for Calendly rows (SPEC §1). Every write path stores it when it knows it (empty strings become NULL,
so "missing" is exactly ``IS NULL``; the schema's CHECK forbids ``''``, which also retires the
original's empty-string blind spot, docs/original-system.md §14, item 27). The backfill
(:mod:`appt_pipeline.pipelines.attribution`) asks the providers for the rest and writes it here.

All statements are set-based and scoped to one workspace:

* :func:`select_missing_attribution` — the oldest rows missing attribution, with the key to look
  them up by (GHL appointment id; Calendly scheduled-event URI, else derived from the invitee URI);
* :func:`fill_attribution` — one ``UPDATE`` per batch that only sets columns that are still NULL
  (idempotent; never overwrites a value a writer stored meanwhile);
* :func:`attribution_coverage` — per provider: rows, attributed, missing, missing without a lookup
  key, and the coverage ratio (the ``calendar_attribution`` asset reports it).

These functions do not touch ``source``/``last_source``/``last_observed_at``, statuses or lead
rollups: attribution is not an observation of the booking's state (docs/original-system.md §11.1:
rollups untouched); ``updated_at`` is set on filled rows.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.vocab import Provider

#: The scheduled-event URI inside a canonical invitee URI ``…/scheduled_events/{uuid}/invitees/{uuid}``.
_EVENT_OF_INVITEE = r"^(https?://[^/]+/scheduled_events/[^/]+)/invitees/[^/]+/?$"

#: The key a row is looked up by at its provider; NULL when it has none.
_LOOKUP_KEY = (
    "CASE WHEN a.provider = 'GHL' THEN a.ghl_appointment_id "
    f"ELSE coalesce(a.calendly_scheduled_event_uri, substring(a.calendly_invitee_uri from '{_EVENT_OF_INVITEE}')) END"
)
_MISSING = (
    "CASE WHEN a.provider = 'GHL' THEN a.ghl_calendar_id IS NULL ELSE a.calendly_event_type_uri IS NULL END"
)

_SELECT_MISSING = sa.text(
    f"SELECT a.id::text AS id, a.provider::text AS provider, {_LOOKUP_KEY} AS lookup_key, a.created_at "
    "FROM appointments a "
    "WHERE a.workspace_id = :ws "
    "  AND a.provider::text = ANY(CAST(:providers AS text[])) "
    f"  AND {_MISSING} AND {_LOOKUP_KEY} IS NOT NULL "
    "ORDER BY a.attribution_checked_at ASC NULLS FIRST, a.created_at, a.id "
    "LIMIT :limit"
)

# Rows are locked in id order (the CTE) so that concurrent batches cannot deadlock each other; the
# locking read re-checks "still NULL" on the newest row version (READ COMMITTED re-evaluation), and
# coalesce() keeps any value that is there anyway: a stored attribution is never overwritten.
_FILL = sa.text(
    "WITH v AS ("
    "  SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:calendars AS text[]), CAST(:event_types AS text[]))"
    "    AS v(id, calendar_id, event_type_uri)"
    "), target AS ("
    "  SELECT a.id FROM appointments a JOIN v ON v.id = a.id"
    "  WHERE a.workspace_id = :ws AND ("
    "    (a.provider = 'GHL' AND a.ghl_calendar_id IS NULL AND v.calendar_id IS NOT NULL)"
    "    OR (a.provider = 'CALENDLY' AND a.calendly_event_type_uri IS NULL AND v.event_type_uri IS NOT NULL))"
    "  ORDER BY a.id FOR UPDATE OF a"
    ") "
    "UPDATE appointments a SET "
    "  ghl_calendar_id = CASE WHEN a.provider = 'GHL' THEN coalesce(a.ghl_calendar_id, v.calendar_id) "
    "    ELSE a.ghl_calendar_id END, "
    "  calendly_event_type_uri = CASE WHEN a.provider = 'CALENDLY' "
    "    THEN coalesce(a.calendly_event_type_uri, v.event_type_uri) ELSE a.calendly_event_type_uri END, "
    "  updated_at = now() "
    "FROM target, v "
    "WHERE a.id = target.id AND v.id = a.id "
    "RETURNING a.id::text AS id, a.provider::text AS provider"
)

_MARK_ASKED = sa.text(
    "UPDATE appointments SET attribution_checked_at = :now "
    "WHERE workspace_id = :ws AND id = ANY(CAST(:ids AS uuid[]))"
)


def mark_unanswered(conn: sa.Connection, workspace_id: str, ids: Sequence[str], now: datetime) -> None:
    """Stamp rows the provider gave no attribution for, so that the next run asks the never-asked ones first."""
    if ids:
        conn.execute(_MARK_ASKED, {"ws": workspace_id, "ids": list(ids), "now": now})


_COVERAGE = sa.text(
    "SELECT a.provider::text AS provider, count(*) AS total, "
    f"  count(*) FILTER (WHERE NOT ({_MISSING})) AS attributed, "
    f"  count(*) FILTER (WHERE {_MISSING} AND {_LOOKUP_KEY} IS NULL) AS unresolvable "
    "FROM appointments a WHERE a.workspace_id = :ws GROUP BY a.provider"
)


@dataclass(frozen=True, slots=True)
class AttributionCandidate:
    """An appointment missing attribution.

    Attributes:
        id: ``appointments.id`` (UUID text).
        provider: GHL or CALENDLY.
        lookup_key: GHL appointment id, or the canonical Calendly scheduled-event URI.
        created_at: ``appointments.created_at`` (UTC), the "oldest first" order.
    """

    id: str
    provider: Provider
    lookup_key: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttributionFill:
    """What the provider said for one row: ``ghl_calendar_id`` (GHL) or ``calendly_event_type_uri`` (Calendly).

    Blank values count as "not known" (``None``).
    """

    id: str
    ghl_calendar_id: str | None = None
    calendly_event_type_uri: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderCoverage:
    """Attribution coverage of one provider's rows in a workspace (SPEC §9).

    Attributes:
        provider: ``"GHL"`` or ``"CALENDLY"``.
        total: rows of that provider.
        attributed: rows with ``ghl_calendar_id`` / ``calendly_event_type_uri`` set.
        missing: ``total - attributed``.
        unresolvable: missing rows without a lookup key (a Calendly row with neither an event URI nor
            a canonical invitee URI): the backfill cannot fill them.
        ratio: ``attributed / total`` in [0, 1]; ``None`` when ``total`` is 0.
    """

    provider: str
    total: int = 0
    attributed: int = 0
    unresolvable: int = 0

    @property
    def missing(self) -> int:
        return self.total - self.attributed

    @property
    def ratio(self) -> float | None:
        return self.attributed / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"total", "attributed", "missing", "unresolvable", "ratio"}`` (ratio rounded to 4 places)."""
        ratio = self.ratio
        return {"total": self.total, "attributed": self.attributed, "missing": self.missing,
                "unresolvable": self.unresolvable, "ratio": None if ratio is None else round(ratio, 4)}


def select_missing_attribution(
    conn: sa.Connection, workspace_id: str, *, limit: int, providers: Collection[Provider] = tuple(Provider)
) -> list[AttributionCandidate]:
    """The workspace's oldest appointments missing attribution that can be looked up, at most ``limit``.

    GHL rows: ``ghl_calendar_id IS NULL`` (they always have ``ghl_appointment_id``). Calendly rows:
    ``calendly_event_type_uri IS NULL`` and a scheduled-event URI known (stored, else the prefix of a
    canonical invitee URI). Ordered by ``created_at``, then ``id``; only the given ``providers``.
    Every status counts (a canceled booking still occupied its calendar).
    """
    if limit <= 0 or not providers:
        return []
    result = conn.execute(
        _SELECT_MISSING, {"ws": workspace_id, "providers": [Provider(p).value for p in providers], "limit": limit}
    )
    return [AttributionCandidate(r.id, Provider(r.provider), r.lookup_key, r.created_at) for r in result]


def _blank_to_none(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def fill_attribution(conn: sa.Connection, workspace_id: str, fills: Sequence[AttributionFill]) -> dict[str, str]:
    """Store one batch of provider answers in one ``UPDATE``; returns ``{appointment id: provider}`` of rows filled.

    Only sets a column that is still NULL, only on rows of ``workspace_id`` and only the column of the
    row's provider: re-running, or a writer that stored a value meanwhile, changes nothing (that row
    is simply not in the result). Fills with nothing to set are ignored. Runs in the caller's
    transaction; raises ``sqlalchemy.exc.DBAPIError`` on database failure (e.g. a deadlock).
    """
    usable = [
        AttributionFill(f.id, _blank_to_none(f.ghl_calendar_id), _blank_to_none(f.calendly_event_type_uri))
        for f in fills
    ]
    usable = [f for f in usable if f.ghl_calendar_id or f.calendly_event_type_uri]
    if not usable:
        return {}
    result = conn.execute(_FILL, {
        "ws": workspace_id,
        "ids": [f.id for f in usable],
        "calendars": [f.ghl_calendar_id for f in usable],
        "event_types": [f.calendly_event_type_uri for f in usable],
    })
    return {r.id: r.provider for r in result}


def attribution_coverage(conn: sa.Connection, workspace_id: str) -> dict[str, ProviderCoverage]:
    """Coverage per provider, always both keys ``"GHL"`` and ``"CALENDLY"`` (zeros when no rows)."""
    out = {p.value: ProviderCoverage(p.value) for p in Provider}
    for r in conn.execute(_COVERAGE, {"ws": workspace_id}):
        out[r.provider] = ProviderCoverage(r.provider, int(r.total), int(r.attributed), int(r.unresolvable))
    return out


def overall_coverage(coverage: dict[str, ProviderCoverage]) -> ProviderCoverage:
    """Both providers together (``provider="*"``)."""
    return ProviderCoverage(
        "*",
        sum(c.total for c in coverage.values()),
        sum(c.attributed for c in coverage.values()),
        sum(c.unresolvable for c in coverage.values()),
    )
