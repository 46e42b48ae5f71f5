"""Availability refresh (docs/rules.md §9 "Availability"): free slots of a workspace's configured calendars.

For each configured calendar / event type of the workspace (:func:`~appt_pipeline.domain.calendars.
configured_calendars`: DEFAULT, then DIRECT_BOOK when set and different — one fetch when both are the
same), the free slot starts of ``[now, now + days)`` are fetched through the run's
:class:`~appt_pipeline.pipelines.clients.ClientFactory` (the account's one shared rate limiter and the
transport's retries on 429 / 5xx / timeouts):

* GHL ``GET /calendars/{id}/free-slots`` in ≤ 31-day ranges (epoch ms, ``timezone=UTC``);
* Calendly ``GET /event_type_available_times`` in ≤ 7-day ranges.

Each calendar is stored on its own (:mod:`appt_pipeline.store.availability`): on success its previous
slots are replaced in one transaction with ``fetched_at = now`` and ``stale_at = now + 2 ×
refresh_interval_s``; on failure (provider error, 404, garbage answer — wrong shape, unparseable times,
an error body in a 200 —, store error) its previous slots stay and ``last_error`` (masked) is recorded on
its status row. One calendar failing never fails the others. A rejected token (401/403) is reported on
every calendar of the workspace and not retried: the calendars after it are not asked (``not_attempted``).
Logs carry ids, URIs and counts only (docs/rules.md §11).

Use from async code (the service, booking): ``await refresh_workspace_availability(engine, factory, ws,
now=now, secret_key=key)``; from sync code (CLI, Dagster): :func:`refresh_availability`.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from appt_pipeline.domain.calendars import CalendarRef, configured_calendars
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Provider
from appt_pipeline.pipelines.accounts import (
    ProviderAccount,
    WorkspaceNotConfigured,
    load_provider_account,
    workspace_row,
)
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import CallStats, ErrorKind, ProviderError
from appt_pipeline.store.availability import (
    drop_unconfigured_calendars,
    record_refresh_failure,
    replace_calendar_slots,
    safe_error,
)
from appt_pipeline.store.workspaces import SecretKeyError

log = logging.getLogger(__name__)

#: The window fetched: the next 30 days (docs/rules.md §9).
DEFAULT_DAYS = 30
MAX_DAYS = 90
#: The refresh schedule's default interval (seconds); ``stale_at = fetched_at + 2 × interval``.
DEFAULT_REFRESH_INTERVAL_S = 3600
#: Slot length stored when the workspace has no ``meeting_duration_minutes`` (§1 default).
DEFAULT_SLOT_MINUTES = 30

#: ``CalendarRefresh.error_kind`` values besides :class:`~appt_pipeline.providers.http.ErrorKind`'s.
NOT_CONNECTED = "not_connected"  # the workspace cannot call its provider (no token / location / key)
NOT_ATTEMPTED = "not_attempted"  # skipped: the provider rejected the token on an earlier calendar
STORE_FAILED = "store_failed"  # fetched, but the database write failed (previous slots kept)
UNEXPECTED = "unexpected"  # any other exception while fetching (a bug): isolated like the rest


@dataclass
class CalendarRefresh:
    """Outcome for one calendar / event type.

    Attributes:
        calendar: the calendar.
        ok: its slots were replaced by this run.
        fetched: slot starts in the provider's answer (``None`` when the fetch failed).
        requests: provider requests made for it (429 retries included).
        error_kind: ``None`` on success, else a :class:`~appt_pipeline.providers.http.ErrorKind` value
            (``auth``, ``not_found``, ``bad_response``, ``server`` …) or one of :data:`NOT_CONNECTED`,
            :data:`NOT_ATTEMPTED`, :data:`STORE_FAILED`, :data:`UNEXPECTED`.
        error: the masked error text stored as ``last_error`` (``None`` on success).
    """

    calendar: CalendarRef
    ok: bool = False
    fetched: int | None = None
    requests: int = 0
    error_kind: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``calendar_key``, ``provider``, ``availability_source``, ``ok``, ``slots`` (fetched),
        ``requests``, ``error_kind``, ``error``."""
        return {"calendar_key": self.calendar.calendar_key, "provider": self.calendar.provider.value,
                "availability_source": self.calendar.availability_source.value, "ok": self.ok,
                "slots": self.fetched, "requests": self.requests, "error_kind": self.error_kind,
                "error": self.error}


@dataclass
class AvailabilityReport:
    """What one refresh of a workspace did (docs/rules.md §9). Times UTC, durations in seconds.

    Attributes:
        workspace_id, provider: the workspace and its booking provider (``None`` if unknown).
        window_start, window_end: the range asked, ``[now, now + days)``.
        fetched_at, stale_at: stamped on the calendars refreshed by this run.
        calendars: one :class:`CalendarRefresh` per calendar refreshed (or attempted).
        not_configured: why nothing could be fetched (no configured calendar, not connected), else None.
        dropped: status rows deleted for calendars no longer configured (full refreshes only).
        api: request counters of the run (:meth:`CallStats.as_metadata`).
    """

    workspace_id: str
    provider: str | None
    window_start: datetime
    window_end: datetime
    fetched_at: datetime
    stale_at: datetime
    calendars: list[CalendarRefresh] = field(default_factory=list)
    not_configured: str | None = None
    dropped: int = 0
    api: dict[str, int | float] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def refreshed(self) -> int:
        """Calendars whose slots this run replaced."""
        return sum(1 for c in self.calendars if c.ok)

    @property
    def failed(self) -> int:
        """Calendars whose refresh failed (their previous slots kept, ``last_error`` recorded)."""
        return sum(1 for c in self.calendars if not c.ok)

    def result_for(self, calendar: CalendarRef) -> CalendarRefresh | None:
        """The outcome of ``calendar`` (matched by provider and key), ``None`` when it was not refreshed."""
        return next((c for c in self.calendars if (c.calendar.provider, c.calendar.calendar_key)
                     == (calendar.provider, calendar.calendar_key)), None)


def _select(calendars: list[CalendarRef], only: CalendarRef | None) -> list[CalendarRef]:
    if only is None:
        return calendars
    chosen = [c for c in calendars if (c.provider, c.calendar_key) == (only.provider, only.calendar_key.strip())]
    if not chosen:
        raise ValueError(f"{only.provider.value} calendar {only.calendar_key!r} is not configured for the workspace")
    return chosen


async def _fetch(client: GhlClient | CalendlyClient, calendar: CalendarRef, start: datetime,
                 end: datetime) -> list[datetime]:
    if isinstance(client, GhlClient):
        return await client.get_free_slots(calendar.calendar_key, start, end, timezone="UTC")
    return [t.start_at for t in await client.get_available_times(calendar.calendar_key, start, end)]


def _store_success(engine: sa.Engine, workspace_id: str, calendar: CalendarRef, slots: list[datetime],
                   minutes: int, fetched_at: datetime, stale_at: datetime) -> bool:
    with engine.begin() as conn:
        return replace_calendar_slots(conn, workspace_id, calendar, slots, slot_minutes=minutes,
                                      fetched_at=fetched_at, stale_at=stale_at)


def _store_failure(engine: sa.Engine, workspace_id: str, calendar: CalendarRef, error: str,
                   attempted_at: datetime) -> str:
    with engine.begin() as conn:
        return record_refresh_failure(conn, workspace_id, calendar, error, attempted_at=attempted_at)


def _drop(engine: sa.Engine, workspace_id: str, keep: list[CalendarRef]) -> int:
    with engine.begin() as conn:
        return drop_unconfigured_calendars(conn, workspace_id, keep)


async def _fail(engine: sa.Engine, report: AvailabilityReport, result: CalendarRefresh, kind: str,
                error: str) -> None:
    result.ok, result.error_kind = False, kind
    try:
        result.error = await asyncio.to_thread(_store_failure, engine, report.workspace_id, result.calendar,
                                               error, report.fetched_at)
    except Exception as exc:  # the database is down: report it, the run goes on
        result.error = safe_error(f"{error}; recording it failed ({type(exc).__name__})")
    log.warning("workspace %s availability of %s %s failed: %s", report.workspace_id,
                result.calendar.provider.value, result.calendar.calendar_key, result.error)


async def refresh_workspace_availability(
    engine: sa.Engine,
    factory: ClientFactory,
    workspace_id: str,
    *,
    now: datetime | None = None,
    secret_key: str | None = None,
    account: ProviderAccount | None = None,
    days: int = DEFAULT_DAYS,
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
    only: CalendarRef | None = None,
) -> AvailabilityReport:
    """Refresh the stored free slots of the workspace's configured calendars (docs/rules.md §9).

    Args:
        engine: the app database.
        factory: the run's client factory (shared ``httpx.AsyncClient`` and per-account rate limiters).
        workspace_id: the workspace.
        now: reference time (UTC; default the current time): the window is ``[now, now + days)``,
            ``fetched_at = now``.
        secret_key: ``APPT_SECRET_KEY`` to decrypt the provider token (unused when ``account`` is given).
        account: the workspace's booking-provider account, when the caller already loaded it.
        days: window length in days, 1…90 (default 30).
        refresh_interval_s: the refresh interval in seconds (> 0); ``stale_at = now + 2 × interval``.
        only: refresh just this configured calendar (matched by provider and key; booking's one refresh
            before ``slot_unavailable``, §8). Calendars no longer configured are dropped only on full
            refreshes (``only`` None).

    Returns:
        :class:`AvailabilityReport`; per-calendar failures are in it, never raised.

    Raises:
        WorkspaceNotConfigured: the workspace does not exist.
        ValueError: ``days`` outside 1…90, ``refresh_interval_s`` ≤ 0, or ``only`` not configured.
    """
    started = time.monotonic()
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    if refresh_interval_s <= 0:
        raise ValueError("refresh_interval_s must be positive")
    now = now or utc_now()
    ws = await asyncio.to_thread(workspace_row, engine, workspace_id)
    calendars = _select(configured_calendars(ws), only)
    report = AvailabilityReport(
        workspace_id, str(ws["meeting_booking_provider"] or Provider.GHL.value), now, now + timedelta(days=days),
        now, now + timedelta(seconds=2 * refresh_interval_s),
    )
    if only is None:
        report.dropped = await asyncio.to_thread(_drop, engine, workspace_id, calendars)
    if not calendars:
        report.not_configured = "no configured calendar"
        report.duration_s = time.monotonic() - started
        log.info("workspace %s availability: no configured calendar", workspace_id)
        return report

    results = [CalendarRefresh(c) for c in calendars]
    report.calendars = results
    if account is None:
        try:
            account = await asyncio.to_thread(load_provider_account, engine, workspace_id, secret_key)
        except (WorkspaceNotConfigured, SecretKeyError) as exc:
            report.not_configured = safe_error(exc)
            for result in results:
                await _fail(engine, report, result, NOT_CONNECTED, f"not connected: {exc}")
            report.duration_s = time.monotonic() - started
            return report
    if account.workspace_id != workspace_id:
        raise ValueError("refresh_workspace_availability: account of another workspace")

    minutes = int(ws["meeting_duration_minutes"] or DEFAULT_SLOT_MINUTES)
    totals = CallStats()
    token_rejected: str | None = None
    for result in results:
        if token_rejected is not None:
            await _fail(engine, report, result, NOT_ATTEMPTED, f"not attempted: {token_rejected}")
            continue
        stats = CallStats()
        client = factory.client(account, stats)
        try:
            slots = await _fetch(client, result.calendar, report.window_start, report.window_end)
        except ProviderError as exc:
            result.requests = stats.requests
            await _fail(engine, report, result, exc.kind.value, f"{exc.kind.value}: {exc}")
            if exc.kind is ErrorKind.AUTH:
                token_rejected = f"the provider rejected the token ({exc.status_code or 'auth'})"
            continue
        except Exception as exc:  # a bug must not stop the other calendars either
            result.requests = stats.requests
            await _fail(engine, report, result, UNEXPECTED, f"unexpected {type(exc).__name__}")
            continue
        finally:
            totals.add(stats)
        result.requests, result.fetched = stats.requests, len(slots)
        try:
            await asyncio.to_thread(_store_success, engine, workspace_id, result.calendar, slots, minutes,
                                    report.fetched_at, report.stale_at)
        except Exception as exc:
            await _fail(engine, report, result, STORE_FAILED, f"storing the slots failed ({type(exc).__name__})")
            continue
        result.ok = True
        log.info("workspace %s availability of %s %s: %d slots, %d requests", workspace_id,
                 result.calendar.provider.value, result.calendar.calendar_key, len(slots), stats.requests)
    report.api = totals.as_metadata()
    report.duration_s = time.monotonic() - started
    return report


def refresh_availability(
    engine: sa.Engine,
    workspace_id: str,
    *,
    now: datetime | None = None,
    secret_key: str | None = None,
    options: ClientOptions | None = None,
    days: int = DEFAULT_DAYS,
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
    only: CalendarRef | None = None,
) -> AvailabilityReport:
    """Synchronous :func:`refresh_workspace_availability` for the CLI and Dagster: one ``httpx.AsyncClient``
    and one :class:`ClientFactory` built from ``options`` (rate limits, timeout in seconds, retries) for the
    call (default :class:`ClientOptions`: the providers' documented limits). Same arguments, result and
    errors; must not be called from a running event loop."""
    options = options or ClientOptions()

    async def run() -> AvailabilityReport:
        async with httpx.AsyncClient(timeout=options.timeout_s) as http:
            return await refresh_workspace_availability(
                engine, ClientFactory(http, options, engine), workspace_id, now=now, secret_key=secret_key,
                days=days, refresh_interval_s=refresh_interval_s, only=only)

    return asyncio.run(run())
