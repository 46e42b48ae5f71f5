"""``appt-pipeline dev`` (SPEC §12): the whole stack locally around the Dagster UI.

:func:`run_dev` imports the legacy sample when none of its workspaces exists yet, registers every workspace
as a partition, starts both provider simulators and the webhook intake service on loopback
(:func:`appt_pipeline.local.stack.local_stack`, webhooks connected), prints where everything listens with
copy-paste admin calls that change a booking, then runs ``dagster dev`` (UI + daemon: sensors, schedules,
run queue) until Ctrl-C / SIGTERM, and stops everything.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.cli.launch import ensure_partitions
from appt_pipeline.cli.runtime import Runtime
from appt_pipeline.local.stack import LocalStack, local_stack, session_secret_key
from appt_pipeline.sample import SAMPLE_DIR
from appt_pipeline.sandbox.legacy_seed import legacy_seeds
from appt_pipeline.settings import PROJECT_ROOT
from appt_pipeline.store.legacy_import import import_legacy
from appt_pipeline.store.tokens import create_token, revoke_named
from appt_pipeline.store.workspaces import workspace_ids

#: Name of the read+book tokens ``dev`` makes at each start (the previous start's are revoked).
DEV_TOKEN_NAME = "appt-pipeline dev"


class DevStackError(RuntimeError):
    """A simulator or the intake service could not start (typically a port in use)."""


@dataclass(frozen=True)
class DevPorts:
    """TCP ports of the Dagster UI, the webhook intake service and the two simulators."""

    ui: int = 3000
    service: int = 8000
    ghl: int = 8101
    calendly: int = 8102


def run_dev(runtime: Runtime, *, host: str = "127.0.0.1", ports: DevPorts = DevPorts(),
            say: Callable[[str], None] = print) -> int:
    """Run the local stack and ``dagster dev`` until interrupted; returns ``dagster dev``'s exit status
    (0, 130 or ``-SIGINT`` after Ctrl-C).

    Raises:
        appt_pipeline.store.workspaces.SecretKeyError: ``APPT_SECRET_KEY`` is set but not a Fernet key.
        DevStackError: a simulator or the service could not listen on its port.
    """
    with session_secret_key() as (key, _), contextlib.ExitStack() as stack:
        legacy = legacy_seeds(SAMPLE_DIR)
        ids = workspace_ids(runtime.engine)
        if not set(legacy.accounts) & set(ids):
            say("importing the legacy sample (run `appt-pipeline demo` to migrate and reconcile it)")
            import_legacy(runtime.engine, SAMPLE_DIR)
            ids = workspace_ids(runtime.engine)
        with dg.DagsterInstance.get() as instance:
            ensure_partitions(instance, ids)
        try:
            sims = stack.enter_context(local_stack(
                runtime.engine, runtime.urls.app_url, legacy, ids, secret_key=key, id_seed="dev", host=host,
                ghl_port=ports.ghl, calendly_port=ports.calendly, service_port=ports.service))
        except OSError as exc:
            raise DevStackError(str(exc)) from exc
        sims.connect_webhooks()
        say(f"{runtime.describe()}\n"
            f"Dagster UI:         http://{host}:{ports.ui}\n"
            f"webhook service:    {sims.service_url}  (POST /webhooks/{{ghl,calendly}}/<workspace>, GET /health)\n"
            f"GHL simulator:      {sims.ghl_url}  (admin: /_admin/…)\n"
            f"Calendly simulator: {sims.calendly_url}\n"
            f"connected workspaces: {', '.join(f'{ws} ({p.value})' for ws, p in sims.providers.items())}")
        for line in dev_examples(sims):
            say(line)
        for line in dev_access(runtime.engine, sims):
            say(line)
        return _dagster_dev(host, ports.ui)


#: Seconds ``dagster dev`` gets to stop after the first SIGTERM / SIGINT before its process group is killed, so the
#: whole ``appt-pipeline dev`` stops within 15 s (the simulators, the service and PostgreSQL stop after it).
DAGSTER_STOP_GRACE_S = 9.0


def _dagster_dev(host: str, port: int) -> int:
    """``dagster dev`` in its own session (process group) until it exits.

    SIGINT / SIGTERM of this process — from a terminal or a supervisor — are passed on to the whole group as
    SIGINT (what ``dagster dev`` stops cleanly on: webserver, daemon, code servers); a group still there
    :data:`DAGSTER_STOP_GRACE_S` seconds after the first signal is killed. The caller's handlers come back
    afterwards. Returns ``dagster dev``'s exit status.
    """
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
           "-h", host, "-p", str(port)]
    # own session: `dagster dev` ignores SIGINT when started from a non-interactive shell otherwise
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=dict(os.environ), start_new_session=True,
                            stdin=subprocess.DEVNULL)
    stop_at: list[float] = []

    def stop(signum: int, _frame: object) -> None:
        if not stop_at:
            stop_at.append(time.monotonic() + DAGSTER_STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                if stop_at and time.monotonic() > stop_at[0]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # whatever the group left behind (a run worker, a code server) goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def dev_examples(sims: LocalStack) -> list[str]:
    """Copy-paste admin calls that change a booking at a simulator (each one becomes a signed webhook)."""
    soon = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    when = soon.isoformat().replace("+00:00", "Z")
    out = ["Try (each change reaches the history through the service, the sensor and a webhook_ingest_job run, "
           "within ~5-10 s):"]
    ghl = next((b for b in sims.legacy.bookings if b.provider == "GHL" and b.workspace_id in sims.providers), None)
    cal = next((b for b in sims.legacy.bookings if b.provider == "CALENDLY" and b.workspace_id in sims.providers
                and b.status.value == "CONFIRMED"), None)
    if ghl is not None:
        out.append(f"  curl -s -X POST {sims.ghl_url}/_admin/appointments/{ghl.key}/reschedule "
                   f"-H 'content-type: application/json' -d '{{\"startTime\": \"{when}\", \"force\": true}}'"
                   f"   # lead {ghl.lead_id}")
    if cal is not None:
        out.append(f"  curl -s -X POST {sims.calendly_url}/_admin/invitees/reschedule "
                   f"-H 'content-type: application/json' -d '{{\"invitee\": \"{cal.key}\", \"start_time\": "
                   f"\"{when}\", \"force\": true}}'   # lead {cal.lead_id}")
    return out


def dev_access(engine: sa.Engine, sims: LocalStack) -> list[str]:
    """Make a ``read,book`` token for each connected sample workspace (revoking the previous start's) and
    return the lines that print each once with the URLs of a lead's timeline and the capacity page.

    The lead shown is the one of the reschedule examples when it belongs to the workspace, else the
    workspace's first lead; the pages ask for the token in their login form (rules §10 "Access").
    """
    ids = sorted(sims.providers)
    revoke_named(engine, ids, DEV_TOKEN_NAME)
    examples: dict[str, str] = {}
    for booking in sims.legacy.bookings:
        examples.setdefault(booking.workspace_id, booking.lead_id)
    with engine.connect() as conn:
        first = dict(conn.execute(sa.text(
            "SELECT workspace_id, min(id) FROM leads WHERE workspace_id = ANY(:ws) GROUP BY workspace_id"
        ), {"ws": ids}).tuples().all())
    out = ["Pages and API (paste the workspace's token into the login form, or send `Authorization: Bearer …`;",
           "printed once, revoked at the next `dev` start; `appt-pipeline tokens list WS` shows them):"]
    for ws in ids:
        token = create_token(engine, ws, "read,book", name=DEV_TOKEN_NAME)
        lead = examples.get(ws) or first.get(ws)
        out.append(f"  {ws}: token {token.token}")
        if lead is not None:
            out.append(f"    timeline: {sims.service_url}/workspaces/{ws}/leads/{lead}/timeline")
        out.append(f"    capacity: {sims.service_url}/workspaces/{ws}/capacity")
    return out
