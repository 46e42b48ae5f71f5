"""Benchmark of the SPEC §10 drift checks: the full checks of one workspace against the run-scoped ones.

    .venv/bin/python -m bench.drift_checks [--leads N] [--touched N] [--repeat N] [--database-url URL] [--keep]

1. **data** — one workspace with ``--leads`` leads (default 200,000), each with one GHL appointment (CONFIRMED
   upcoming, every tenth CANCELED) and a webhook staging row per 20 leads, seeded set-based; every lead's rollup
   computed in one statement at a reference a day ago (``rollup_update_sql``), then ``ANALYZE``.
2. **a run** — ``--touched`` leads (default 5) written through the write path now, as a webhook run over that
   many events would.
3. **checks** — ``store.drift_checks.run_checks`` over the whole workspace (``appt-pipeline checks``, the daily
   ``drift_check_job``) and scoped to the run (``since`` = the run's start, what the writing jobs do), each the
   best of ``--repeat`` (3); the figures and the ratio full / run-scoped are printed. Both must pass.

Creates its own databases (``appt_bench_checks_<pid>``) on the server of ``--database-url`` and drops them at the
end (unless ``--keep``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.store.drift_checks import CHECK_NAMES, run_checks
from appt_pipeline.store.rollups import rollup_update_sql
from appt_pipeline.store.schema import upgrade
from appt_pipeline.store.write_path import write_observations
from bench.harness import bench_databases, log

WS = "bench_checks"

SEED = [
    "INSERT INTO workspaces (id, name) VALUES (:ws, 'Checks bench')",
    "INSERT INTO leads (id, workspace_id, status) SELECT 'lead_' || g, :ws, "
    "CASE WHEN g % 10 = 0 THEN 'qualified' ELSE 'meeting-booked' END FROM generate_series(1, :leads) g",
    """INSERT INTO appointments (workspace_id, lead_id, provider, ghl_appointment_id, start_at, end_at, status,
           status_changed_at, canceled_at, source, last_source, last_observed_at, created_at)
       SELECT :ws, 'lead_' || g, 'GHL', 'g' || g, :t0 + (g % 500) * interval '1 hour',
              :t0 + (g % 500) * interval '1 hour' + interval '30 minutes',
              CASE WHEN g % 10 = 0 THEN 'CANCELED' ELSE 'CONFIRMED' END::appointment_status, :ref,
              CASE WHEN g % 10 = 0 THEN :ref END, 'RECONCILE_CRON', 'RECONCILE_CRON', :ref, :ref - interval '1 day'
       FROM generate_series(1, :leads) g""",
    """INSERT INTO webhook_events (workspace_id, provider, event_type, dedupe_key, payload, status, processed_at)
       SELECT :ws, 'GHL', 'AppointmentUpdate', 'k' || g,
              jsonb_build_object('type', 'AppointmentUpdate', 'webhookId', 'w' || g,
                                 'appointment', jsonb_build_object('id', 'g' || g, 'startTime', '2026-03-05T15:00Z')),
              'processed', :ref
       FROM generate_series(1, :leads / 20) g""",
]


def _best(fn: object, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--touched", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    t0 = datetime.now(UTC).replace(microsecond=0)
    ref = t0 - timedelta(days=1)
    with bench_databases(args.database_url, args.keep, "appt_bench_checks") as (app_url, _dagster):
        upgrade(app_url)
        engine = sa.create_engine(app_url)
        started = time.perf_counter()
        with engine.begin() as conn:
            params = {"ws": WS, "leads": args.leads, "t0": t0, "ref": ref}
            for statement in SEED:
                conn.execute(sa.text(statement), params)
            conn.execute(sa.text(rollup_update_sql("SELECT id FROM leads WHERE workspace_id = :ws")), params)
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
        log(f"data: {args.leads:,} leads, {args.leads:,} appointments, {args.leads // 20:,} staging rows "
            f"in {time.perf_counter() - started:.1f} s")
        run_start = datetime.now(UTC)
        write_observations(engine, [
            Observation(workspace_id=WS, lead_id=f"lead_{i}", provider=Provider.GHL, status=Status.CONFIRMED,
                        source=Source.WEBHOOK, ghl_appointment_id=f"g{i}",
                        start_at=t0 + timedelta(days=2), end_at=t0 + timedelta(days=2, minutes=30))
            for i in range(1, args.touched + 1)])
        with engine.connect() as conn:
            full_s, full = _best(lambda: run_checks(conn, WS, datetime.now(UTC)), args.repeat)
            run_s, scoped = _best(lambda: run_checks(conn, WS, datetime.now(UTC), since=run_start), args.repeat)
            for name in CHECK_NAMES:  # per check, run-scoped (best of --repeat)
                took, _ = _best(lambda n=name: run_checks(conn, WS, datetime.now(UTC), since=run_start, names=[n]),
                                args.repeat)
                log(f"  run-scoped {name:<26} {took * 1000:8.1f} ms")
        for name, outcomes in (("full", full), ("run-scoped", scoped)):
            failed = [o.name for o in outcomes if not o.passed]  # type: ignore[attr-defined]
            assert not failed, f"{name} checks failed: {failed}"
        log(f"full checks ({args.leads:,} leads):        {full_s * 1000:9.1f} ms")
        log(f"run-scoped checks ({args.touched} leads touched): {run_s * 1000:9.1f} ms")
        log(f"ratio full / run-scoped: {full_s / run_s:,.0f}x")
        engine.dispose()


if __name__ == "__main__":
    main()
