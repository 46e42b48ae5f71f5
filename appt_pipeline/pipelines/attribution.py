"""Attribution backfill (SPEC §9): fill missing calendar attribution of one workspace from its providers.

Every write path stores ``ghl_calendar_id`` / ``calendly_event_type_uri`` when it knows them; rows
written without (the migration, older webhooks) are filled here:

* GHL — ``GET /calendars/events/appointments/{id}`` → ``calendarId``;
* Calendly — ``GET /scheduled_events/{uuid}`` → ``event_type`` (one request per distinct event,
  shared by all its invitees' rows).

How a run goes (docs/original-system.md §11.1, with its defaults and clamps):

1. the workspace's oldest rows missing attribution, at most ``limit`` (default 500, clamped to
   1…5,000 — a clamp is logged and reported in ``AttributionReport.clamped``), only for providers the
   workspace has credentials for (both providers are served, whatever ``meeting_booking_provider``
   says; rows of an unconfigured provider are counted as skipped);
2. lookups in batches of ``batch_size`` (default 10, 1…50), the lookups of a batch concurrently,
   every request through the account's one shared rate limiter (:class:`AccountLimiter`; GHL 100 /
   10 s per location, Calendly 500 / min per user) with the transport's retries (429, 5xx, timeouts);
3. one ``UPDATE`` per batch that only sets still-NULL columns (never overwrites; a rerun fills 0);
4. a pause of ``pause_s`` (default 0.5 s, 0…30 s) between batches, not after the last.

Each failure is isolated and counted by kind (``<provider>_<ProviderError.kind>`` such as
``ghl_not_found`` or ``calendly_server``; ``ghl_missing_calendar_id``; ``calendly_missing_event_type``;
``ghl_location_mismatch``; ``write_<Exception>`` when a batch's UPDATE fails); the run continues.
Dry-run: the lookups are made, nothing is written, ``filled`` counts what would have been filled.
Logs carry ids, URIs and counts only (SPEC §11); tokens never leave :class:`ProviderAccount`.

Use from synchronous code: ``asyncio.run(backfill_attribution(engine, accounts))``.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Provider, SecretName
from appt_pipeline.pipelines.accounts import ProviderAccount, provider_account, workspace_row
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import (
    CALENDLY_RATE_LIMIT,
    GHL_RATE_LIMIT,
    CallStats,
    ProviderError,
    RateLimit,
    RetryPolicy,
)
from appt_pipeline.providers.normalize import CALENDLY_CANONICAL_BASE
from appt_pipeline.store.attribution import (
    AttributionCandidate,
    AttributionFill,
    ProviderCoverage,
    attribution_coverage,
    fill_attribution,
    mark_unanswered,
    overall_coverage,
    select_missing_attribution,
)
from appt_pipeline.store.workspaces import get_secret

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10
MAX_BATCH_SIZE = 50
DEFAULT_PAUSE_S = 0.5
MAX_PAUSE_S = 30.0
DEFAULT_LIMIT = 500
MAX_LIMIT = 5_000
#: Attempts of a batch's UPDATE when Postgres aborts it as a deadlock / serialization victim.
WRITE_ATTEMPTS = 3
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def load_attribution_accounts(
    engine: sa.Engine, workspace_id: str, secret_key: str | None
) -> tuple[list[ProviderAccount], dict[str, str]]:
    """Every provider account the workspace can be asked with, and why the others cannot.

    Unlike :func:`appt_pipeline.pipelines.accounts.load_provider_account` (the *booking* provider only),
    attribution serves both providers, because a workspace's history may hold rows of either
    (docs/original-system.md §11.1). GHL needs ``ghl_location_id`` and the ``ghl_private_token`` secret;
    Calendly needs the ``calendly_access_token`` secret (its limiter account is
    ``calendly_user_uri``, else ``calendly_organization_uri``, else the workspace id).

    Returns:
        ``(accounts, not_configured)`` — ``not_configured`` maps ``"GHL"``/``"CALENDLY"`` to a reason.

    Raises:
        WorkspaceNotConfigured: the workspace does not exist.
        appt_pipeline.store.workspaces.SecretKeyError: a stored token cannot be decrypted with ``secret_key``.
    """
    ws = workspace_row(engine, workspace_id)
    accounts: list[ProviderAccount] = []
    not_configured: dict[str, str] = {}
    ghl_token = get_secret(engine, workspace_id, SecretName.GHL_PRIVATE_TOKEN, secret_key)
    if ws["ghl_location_id"] and ghl_token:
        accounts.append(provider_account(ws, Provider.GHL, ghl_token))
    else:
        not_configured[Provider.GHL.value] = "needs ghl_location_id and ghl_private_token"
    calendly_token = get_secret(engine, workspace_id, SecretName.CALENDLY_ACCESS_TOKEN, secret_key)
    if calendly_token:
        accounts.append(provider_account(ws, Provider.CALENDLY, calendly_token))
    else:
        not_configured[Provider.CALENDLY.value] = "needs calendly_access_token"
    return accounts, not_configured


@dataclass
class AttributionReport:
    """Counters of one backfill run (SPEC §9). Seconds unless named otherwise.

    Attributes:
        workspace_id, dry_run: what ran.
        limit, batch_size, pause_s: the values used (after clamping).
        clamped: ``{"limit": {"requested": 9000, "used": 5000}, …}`` for every option that was clamped.
        candidates: rows selected (missing attribution, lookup key known, provider configured, ≤ limit);
            ``candidates_by_provider`` splits them.
        lookups: provider lookups attempted (distinct GHL appointment ids / Calendly event URIs).
        batches: batches run; ``paused_s``: total seconds paused between them.
        filled: rows whose attribution was written (dry-run: would be); ``filled_by_provider`` splits them.
        failed: rows not filled because their lookup or write failed; ``failed_by_kind`` splits them.
        skipped: missing rows left alone: ``skipped_by_reason`` — ``<provider>_not_configured`` (no
            credentials), ``<provider>_no_lookup_key`` (nothing to ask the provider by),
            ``already_attributed`` (a writer filled the row during the run).
        not_configured: provider → reason, for providers without credentials.
        coverage: per provider after the run (:meth:`ProviderCoverage.as_dict`), plus ``"*"`` for both.
        api: run totals (:meth:`CallStats.as_metadata`: ``api_requests``, ``api_429s``, …);
            ``api_by_provider`` per provider.
    """

    workspace_id: str
    dry_run: bool
    limit: int
    batch_size: int
    pause_s: float
    clamped: dict[str, dict[str, float]] = field(default_factory=dict)
    candidates: int = 0
    candidates_by_provider: dict[str, int] = field(default_factory=dict)
    lookups: int = 0
    batches: int = 0
    paused_s: float = 0.0
    filled: int = 0
    filled_by_provider: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    failed_by_kind: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    not_configured: dict[str, str] = field(default_factory=dict)
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)
    api: dict[str, int | float] = field(default_factory=dict)
    api_by_provider: dict[str, dict[str, int | float]] = field(default_factory=dict)
    duration_s: float = 0.0


def _clamp(name: str, value: float, low: float, high: float, clamped: dict[str, dict[str, float]]) -> float:
    used = min(max(value, low), high)
    if used != value:
        clamped[name] = {"requested": value, "used": used}
        log.warning("attribution backfill: %s=%s clamped to %s (allowed %s…%s)", name, value, used, low, high)
    return used


def _canonical_calendly(uri: str) -> str:
    """A Calendly URI in its canonical ``https://api.calendly.com/...`` form (SPEC preamble)."""
    if uri.startswith(("http://", "https://")) and not uri.startswith(CALENDLY_CANONICAL_BASE + "/"):
        path = uri.split("://", 1)[1].partition("/")[2]
        return f"{CALENDLY_CANONICAL_BASE}/{path}"
    return uri


@dataclass
class _Lookup:
    """One provider request and the rows it serves; ``value`` or ``error_kind`` after it ran."""

    provider: Provider
    key: str
    rows: list[AttributionCandidate]
    value: str | None = None
    error_kind: str | None = None


class _Clients:
    """One client per configured provider (from the run's :class:`ClientFactory`), each with its own CallStats."""

    def __init__(self, accounts: dict[Provider, ProviderAccount], factory: ClientFactory) -> None:
        self.stats = {p.value: CallStats() for p in accounts}
        self.accounts = accounts
        self.ghl: GhlClient | None = None
        self.calendly: CalendlyClient | None = None
        if ghl := accounts.get(Provider.GHL):
            self.ghl = factory.ghl(ghl, self.stats[Provider.GHL.value])
        if cal := accounts.get(Provider.CALENDLY):
            self.calendly = factory.calendly(cal, self.stats[Provider.CALENDLY.value])

    async def look_up(self, lookup: _Lookup) -> None:
        """Fill ``lookup.value`` or ``lookup.error_kind``; never raises (failures are isolated)."""
        prefix = lookup.provider.value.lower()
        try:
            if lookup.provider is Provider.GHL:
                assert self.ghl is not None
                appointment = await self.ghl.get_appointment(lookup.key)
                location = self.accounts[Provider.GHL].account_key
                if appointment.location_id and appointment.location_id != location:
                    lookup.error_kind = "ghl_location_mismatch"
                elif not appointment.calendar_id.strip():
                    lookup.error_kind = "ghl_missing_calendar_id"
                else:
                    lookup.value = appointment.calendar_id.strip()
            else:
                assert self.calendly is not None
                event = await self.calendly.get_scheduled_event(lookup.key)
                event_type = (event.event_type_uri or "").strip()
                if not event_type:
                    lookup.error_kind = "calendly_missing_event_type"
                else:
                    lookup.value = _canonical_calendly(event_type)
        except ProviderError as exc:
            lookup.error_kind = f"{prefix}_{exc.kind.value}"
            log.warning("attribution %s lookup %s failed: %s", prefix, lookup.key, exc.message)
        except Exception as exc:  # a bug or an unexpected answer must not stop the run either
            lookup.error_kind = f"{prefix}_unexpected_{type(exc).__name__}"
            log.warning("attribution %s lookup %s failed unexpectedly (%s)", prefix, lookup.key, type(exc).__name__)
        if lookup.error_kind and lookup.value is None:
            log.info("attribution %s %s not filled: %s (%d rows)", prefix, lookup.key, lookup.error_kind,
                     len(lookup.rows))


def _write_batch(engine: sa.Engine, workspace_id: str, fills: list[AttributionFill]) -> dict[str, str]:
    """One UPDATE for the batch, retried when Postgres aborts it as a deadlock / serialization victim."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                return fill_attribution(conn, workspace_id, fills)
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate not in _RETRYABLE_SQLSTATES or attempt == WRITE_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)
    return {}  # pragma: no cover - the loop returns or raises


def _mark_unanswered(engine: sa.Engine, workspace_id: str, ids: list[str]) -> None:
    with engine.begin() as conn:
        mark_unanswered(conn, workspace_id, ids, utc_now())


async def backfill_attribution(
    engine: sa.Engine,
    accounts: ProviderAccount | Iterable[ProviderAccount],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause_s: float = DEFAULT_PAUSE_S,
    limit: int = DEFAULT_LIMIT,
    dry_run: bool = False,
    not_configured: dict[str, str] | None = None,
    workspace_id: str | None = None,
    ghl_rate: RateLimit = GHL_RATE_LIMIT,
    calendly_rate: RateLimit = CALENDLY_RATE_LIMIT,
    timeout_s: float = 15.0,
    retry: RetryPolicy | None = None,
) -> AttributionReport:
    """Fill the workspace's missing calendar attribution from its providers (SPEC §9).

    Args:
        engine: the app database.
        accounts: the workspace's provider account(s) (:func:`load_attribution_accounts`, or one
            :class:`ProviderAccount` from ``load_provider_account``); all of the same workspace. Rows of
            a provider without an account are skipped and counted.
        batch_size: lookups per batch, clamped to 1…50 (default 10).
        pause_s: seconds between batches, clamped to 0…30 (default 0.5).
        limit: rows per run, clamped to 1…5,000 (default 500); the oldest rows first.
        dry_run: ask the providers but write nothing.
        not_configured: reasons for providers without an account (reported as given).
        workspace_id: required when ``accounts`` is empty (nothing can be looked up: the run only
            reports coverage and counts the missing rows as skipped); else must match the accounts.
        ghl_rate, calendly_rate: each account's limit (one limiter per account for the whole run).
        timeout_s: per-request timeout in seconds; ``retry``: the transport's :class:`RetryPolicy`.

    Returns:
        :class:`AttributionReport`.

    Raises:
        ValueError: accounts of different workspaces (or not of ``workspace_id``), or neither accounts
            nor ``workspace_id``.
        sqlalchemy.exc.DBAPIError: the candidate or coverage query failed (a failed batch UPDATE is
            counted instead, as ``write_<Exception>``).
    """
    started = time.monotonic()
    given = [accounts] if isinstance(accounts, ProviderAccount) else list(accounts)
    workspace_id = workspace_id or (given[0].workspace_id if given else None)
    if workspace_id is None:
        raise ValueError("backfill_attribution needs a provider account or a workspace_id")
    if any(a.workspace_id != workspace_id for a in given):
        raise ValueError("backfill_attribution: accounts of another workspace")
    by_provider = {a.provider: a for a in given}
    clamped: dict[str, dict[str, float]] = {}
    report = AttributionReport(
        workspace_id, dry_run,
        limit=int(_clamp("limit", int(limit), 1, MAX_LIMIT, clamped)),
        batch_size=int(_clamp("batch_size", int(batch_size), 1, MAX_BATCH_SIZE, clamped)),
        pause_s=float(_clamp("pause_s", float(pause_s), 0.0, MAX_PAUSE_S, clamped)),
        clamped=clamped,
        not_configured=dict(not_configured or {}),
    )
    for provider in Provider:
        if provider not in by_provider:
            report.not_configured.setdefault(provider.value, "no provider account given")

    with engine.connect() as conn:
        candidates = select_missing_attribution(conn, workspace_id, limit=report.limit, providers=by_provider)
    report.candidates = len(candidates)
    report.candidates_by_provider = dict(sorted(Counter(c.provider.value for c in candidates).items()))
    lookups: dict[tuple[Provider, str], _Lookup] = {}
    for c in candidates:  # oldest first; a Calendly event shared by several invitees is asked once
        lookups.setdefault((c.provider, c.lookup_key), _Lookup(c.provider, c.lookup_key, [])).rows.append(c)
    ordered = list(lookups.values())
    report.lookups = len(ordered)

    failed: Counter[str] = Counter()
    filled: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        options = ClientOptions(ghl_rate=ghl_rate, calendly_rate=calendly_rate, timeout_s=timeout_s, retry=retry)
        clients = _Clients(by_provider, ClientFactory(http, options, engine))
        for start in range(0, len(ordered), report.batch_size):
            if start:
                await asyncio.sleep(report.pause_s)
                report.paused_s += report.pause_s
            batch = ordered[start:start + report.batch_size]
            report.batches += 1
            await asyncio.gather(*(clients.look_up(lookup) for lookup in batch))
            unanswered = [row.id for lookup in batch if lookup.error_kind for row in lookup.rows]
            for lookup in batch:
                if lookup.error_kind:
                    failed[lookup.error_kind] += len(lookup.rows)
            if unanswered and not dry_run:
                await asyncio.to_thread(_mark_unanswered, engine, workspace_id, unanswered)
            fills = [
                AttributionFill(row.id, ghl_calendar_id=lookup.value) if lookup.provider is Provider.GHL
                else AttributionFill(row.id, calendly_event_type_uri=lookup.value)
                for lookup in batch if lookup.value for row in lookup.rows
            ]
            if not fills:
                continue
            if dry_run:
                filled.update(lookup.provider.value for lookup in batch if lookup.value for _ in lookup.rows)
                continue
            try:
                written = await asyncio.to_thread(_write_batch, engine, workspace_id, fills)
            except Exception as exc:  # isolate: count the batch's rows and go on with the next batch
                log.warning("workspace %s: attribution batch of %d rows not written (%s)", workspace_id, len(fills),
                            type(exc).__name__)
                failed[f"write_{type(exc).__name__}"] += len(fills)
                continue
            filled.update(written.values())
            if len(written) < len(fills):
                skipped["already_attributed"] += len(fills) - len(written)

    with engine.connect() as conn:
        coverage = attribution_coverage(conn, workspace_id)
    for provider in Provider:
        cov = coverage[provider.value]
        prefix = provider.value.lower()
        if provider not in by_provider and cov.missing:
            skipped[f"{prefix}_not_configured"] += cov.missing
        elif provider in by_provider and cov.unresolvable:
            skipped[f"{prefix}_no_lookup_key"] += cov.unresolvable

    report.filled = sum(filled.values())
    report.filled_by_provider = dict(sorted(filled.items()))
    report.failed = sum(failed.values())
    report.failed_by_kind = dict(sorted(failed.items()))
    report.skipped = sum(skipped.values())
    report.skipped_by_reason = dict(sorted(skipped.items()))
    report.coverage = {name: cov.as_dict() for name, cov in coverage.items()}
    report.coverage["*"] = overall_coverage(coverage).as_dict()
    totals = CallStats()
    for name, stats in clients.stats.items():
        report.api_by_provider[name] = stats.as_metadata()
        totals.add(stats)
    report.api = totals.as_metadata()
    report.duration_s = time.monotonic() - started
    log.info("workspace %s attribution: candidates=%d filled=%d failed=%d skipped=%d api_requests=%d dry_run=%s",
             workspace_id, report.candidates, report.filled, report.failed, report.skipped, totals.requests, dry_run)
    return report


def coverage_of(engine: sa.Engine, workspace_id: str) -> dict[str, ProviderCoverage]:
    """The workspace's attribution coverage per provider (convenience for callers without a run)."""
    with engine.connect() as conn:
        return attribution_coverage(conn, workspace_id)
