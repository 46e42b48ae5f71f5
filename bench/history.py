"""Benchmark of the history read (SPEC §10): ``GET …/leads/{lead}/appointments`` through the HTTP service.

    .venv/bin/python -m bench.history [--leads N] [--per-lead N] [--duration S] [--connections N]
                                      [--workers N] [--database-url URL] [--keep] [--json FILE]

1. **data** — one workspace, ``--leads`` leads (default 200,000) with ``--per-lead`` appointments each
   (default 5: 1,000,000 rows) in a realistic mix: reschedule chains (RESCHEDULED rows linked to their
   successor), cancellations, shows and no-shows, the newest CONFIRMED; 2 to 3 status / time changes per row
   (creation, status change, time moves). Seeded set-based (``generate_series``), then ``ANALYZE``.
2. **ours over HTTP** — ``appt-pipeline serve`` in its own process (real uvicorn, real PostgreSQL), a read
   token made with ``appt-pipeline tokens create``, and ``wrk`` (Debian package, installed with apt when
   missing) in a separate process on loopback: ``--connections`` (16) concurrent clients for ``--duration``
   (20 s) GET the histories of random leads. Requests/s and p50 / p99 latency; targets ≥ 1,500 req/s and
   p99 ≤ 50 ms on this machine.
3. **naive** — the same random leads read the original's way from ``--connections`` client processes, each
   with its own connection: one query for the lead's rows, then one query per row for its successor and one for its
   changes. Requests/s and latency, and the ratio of ours (HTTP) to it. The store's one-statement read
   (``store.history.read_history``) from as many processes is also measured, the like-for-like ratio.

The bench creates its own databases (``appt_bench_hist_<pid>`` and ``…_dagster``) on the server of
``--database-url`` and drops them at the end (unless ``--keep``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from appt_pipeline.domain.history import HistoryFilters
from appt_pipeline.store.history import read_history
from appt_pipeline.store.schema import upgrade
from bench.harness import bench_databases, ensure_wrk, free_port, log, process, run_wrk, wait_healthy

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LUA = Path(__file__).with_name("history.lua")
WS = "hist_ws"
TARGET_RPS = 1_500
TARGET_P99_MS = 50.0
#: All times are relative to this fixed instant, so every run reads the same data.
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# status of appointment i (1-based) of lead g: the last one CONFIRMED, the others a mix in which RESCHEDULED
# rows are linked to their successor
_STATUS = """CASE WHEN {i} >= %(per)s THEN 'CONFIRMED'
     ELSE (ARRAY['RESCHEDULED','RESCHEDULED','RESCHEDULED','RESCHEDULED','CANCELED','CANCELED','SHOWED',
                 'SHOWED','NO_SHOW','CONFIRMED'])[1 + ({g} + {i}) %% 10] END"""

SEED = [
    "INSERT INTO workspaces (id, name, meeting_booking_provider, timezone) "
    "VALUES (%(ws)s, 'History bench', 'GHL', 'America/New_York')",
    "INSERT INTO leads (id, workspace_id, timezone) "
    "SELECT 'lead_' || g, %(ws)s, CASE WHEN g %% 3 = 0 THEN 'Europe/Berlin' END FROM generate_series(1, %(leads)s) g",
    f"""
    INSERT INTO appointments (id, workspace_id, lead_id, provider, ghl_appointment_id, ghl_calendar_id, start_at,
        end_at, status, status_changed_at, canceled_at, rescheduled_from_id, source, last_source, last_observed_at,
        created_at, updated_at)
    SELECT md5('a' || g || '.' || i)::uuid, %(ws)s, 'lead_' || g, 'GHL', 'g' || g || '.' || i, 'cal-' || (g %% 3),
        s.start_at, s.start_at + interval '30 minutes', s.status::appointment_status, %(t0)s - interval '1 day',
        CASE WHEN s.status IN ('CANCELED', 'RESCHEDULED') THEN %(t0)s - interval '1 day' END,
        CASE WHEN i > 1 AND s.prev_status = 'RESCHEDULED' THEN md5('a' || g || '.' || (i - 1))::uuid END,
        'RECONCILE_CRON', 'WEBHOOK', %(t0)s, %(t0)s - interval '60 days' + i * interval '1 day', %(t0)s
    FROM generate_series(1, %(leads)s) g CROSS JOIN generate_series(1, %(per)s) i,
    LATERAL (SELECT {_STATUS.format(g="g", i="i")} AS status, {_STATUS.format(g="g", i="i - 1")} AS prev_status,
                    %(t0)s - interval '30 days' + i * interval '5 days' + (g %% 48) * interval '30 minutes'
                    AS start_at) s
    """,
    """
    INSERT INTO appointment_status_changes (appointment_id, from_status, to_status, from_start_at, to_start_at,
        source, observed_at)
    SELECT id, NULL::appointment_status, 'CONFIRMED'::appointment_status, NULL::timestamptz, start_at, source,
           created_at FROM appointments
    UNION ALL
    SELECT id, 'CONFIRMED', status, NULL, NULL, last_source, status_changed_at FROM appointments
    WHERE status <> 'CONFIRMED'
    UNION ALL
    SELECT id, 'CONFIRMED', 'CONFIRMED', start_at - interval '1 day', start_at, 'WEBHOOK',
           created_at + interval '1 hour'
    FROM appointments WHERE (hashtext(id::text) & 3) = 0
    """,
    "ANALYZE leads",
    "ANALYZE appointments",
    "ANALYZE appointment_status_changes",
]

# the original's way: the rows, then per row its successor and its changes
NAIVE_ROWS = """
SELECT id, provider, status, start_at, end_at, timezone, source, last_source, ghl_appointment_id,
       calendly_invitee_uri, ghl_calendar_id, calendly_event_type_uri, rescheduled_from_id, canceled_at, cancel_reason
FROM appointments WHERE workspace_id = %s AND lead_id = %s
ORDER BY coalesce(start_at, created_at) DESC LIMIT 50
"""
NAIVE_SUCCESSOR = "SELECT id FROM appointments WHERE rescheduled_from_id = %s LIMIT 1"
NAIVE_CHANGES = ("SELECT from_status, to_status, from_start_at, to_start_at, source, observed_at "
                 "FROM appointment_status_changes WHERE appointment_id = %s ORDER BY observed_at, id")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def seed(app_url: str, leads: int, per: int) -> dict[str, int]:
    params = {"ws": WS, "leads": leads, "per": per, "t0": T0}
    with psycopg.connect(libpq(app_url), autocommit=True) as conn:
        for statement in SEED:
            conn.execute(statement, params)  # type: ignore[call-overload]  # statements are module constants
        counts = {table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                  for table in ("leads", "appointments", "appointment_status_changes")}
        counts["chained"] = int(conn.execute(  # type: ignore[index]
            "SELECT count(*) FROM appointments WHERE rescheduled_from_id IS NOT NULL").fetchone()[0])
    return counts


def naive_history(conn: psycopg.Connection, lead: str) -> list[dict[str, Any]]:
    items = []
    for row in conn.execute(NAIVE_ROWS, (WS, lead)).fetchall():
        successor = conn.execute(NAIVE_SUCCESSOR, (row[0],)).fetchone()
        changes = conn.execute(NAIVE_CHANGES, (row[0],)).fetchall()
        items.append({"id": row[0], "rescheduled_to_id": successor[0] if successor else None,
                      "changes": changes, "row": row})
    return items


def _read_loop(kind: str, app_url: str, leads: int, seed: int, start_at: float, stop_at: float) -> list[float]:
    """One client process: ``kind`` reads ("naive" or "ours") of random leads from ``start_at`` to ``stop_at``
    (``time.time()`` instants shared by all processes); the latencies in ms."""
    rng = random.Random(seed)
    latencies: list[float] = []
    engine = sa.create_engine(app_url, pool_size=1, max_overflow=0)
    filters = HistoryFilters()
    try:
        with psycopg.connect(libpq(app_url), autocommit=True) as conn, engine.connect() as c:
            while time.time() < start_at:
                time.sleep(0.005)
            while time.time() < stop_at:
                lead = f"lead_{rng.randint(1, leads)}"
                t = time.perf_counter()
                if kind == "naive":
                    naive_history(conn, lead)
                else:
                    assert read_history(c, WS, lead, filters, T0) is not None
                    c.rollback()
                latencies.append((time.perf_counter() - t) * 1e3)
    finally:
        engine.dispose()
    return latencies


def parallel_reads(app_url: str, leads: int, clients: int, duration: float, kind: str) -> dict[str, Any]:
    """``clients`` client processes (not threads: the GIL would measure Python, not the reads), each with its
    own connection, read random leads' histories the ``kind`` way for ``duration`` seconds. Requests/s and
    latency percentiles (ms)."""
    start_at = time.time() + 3.0  # every process connected before the clock starts
    with ProcessPoolExecutor(max_workers=clients) as pool:
        parts = list(pool.map(_read_loop, [kind] * clients, [app_url] * clients, [leads] * clients,
                              range(clients), [start_at] * clients, [start_at + duration] * clients))
    flat = sorted(x for part in parts for x in part)
    q = statistics.quantiles(flat, n=100) if len(flat) > 1 else [flat[0]] * 99
    return {"requests": len(flat), "duration_s": duration, "rps": len(flat) / duration, "p50_ms": q[49],
            "p99_ms": q[98]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0])
    p.add_argument("--leads", type=int, default=200_000)
    p.add_argument("--per-lead", type=int, default=5, help="appointments per lead (default 5)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of HTTP load (default 20)")
    p.add_argument("--naive-duration", type=float, default=10.0, help="seconds of each direct read phase")
    p.add_argument("--connections", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--workers", type=int, default=1, help="serve --workers (default 1)")
    p.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_SERVER_URL))
    p.add_argument("--keep", action="store_true", help="keep the bench databases")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)

    results: dict[str, Any] = {"leads": args.leads, "per_lead": args.per_lead}
    log(f"bench.history on {os.cpu_count()} CPUs; {args.leads:,} leads × {args.per_lead} appointments; "
        f"PostgreSQL {make_url(args.database_url).host}")
    with bench_databases(args.database_url, args.keep, "appt_bench_hist") as (app_url, dagster_url), \
            tempfile.TemporaryDirectory(prefix="appt-bench-hist-") as tmp:
        work = Path(tmp)
        upgrade(app_url)
        t = time.monotonic()
        results["rows"] = seed(app_url, args.leads, args.per_lead)
        log(f"== 1. data: {results['rows']} seeded in {time.monotonic() - t:.1f} s")
        leads = [f"lead_{g}" for g in range(1, args.leads + 1)]
        rng = random.Random(7)
        paths = work / "paths.txt"
        paths.write_text("".join(f"/api/v1/workspaces/{WS}/leads/{rng.choice(leads)}/appointments\n"
                                 for _ in range(200_000)))
        env = {**os.environ, "APPT_DATABASE_URL": app_url, "APPT_DAGSTER_PG_URL": dagster_url,
               "APPT_SECRET_KEY": Fernet.generate_key().decode(), "APPT_HOME": str(work / "home"),
               "PYTHONUNBUFFERED": "1"}
        created = process_output([sys.executable, "-m", "appt_pipeline.cli", "tokens", "create", WS, "--scope", "read",
                                  "--name", "bench", "--json"], env)
        token = json.loads(created)["token"]
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = work / "serve.log"
        wrk = ensure_wrk()
        with process([sys.executable, "-m", "appt_pipeline.cli", "serve", "--port", str(port), "--workers",
                      str(args.workers)], env, log_path) as proc:
            wait_healthy(base_url, proc, log_path)
            wrk_args = [str(paths), token, str(args.threads)]
            run_wrk(wrk, base_url, LUA, wrk_args, threads=args.threads, connections=args.connections, duration=2)
            res = run_wrk(wrk, base_url, LUA, wrk_args, threads=args.threads, connections=args.connections,
                          duration=args.duration)
        wall = res["duration_us"] / 1e6
        http = {"requests": res["requests"], "non200": res["non2xx"], "rps": res["requests"] / wall,
                "p50_ms": res["p50_us"] / 1e3, "p99_ms": res["p99_us"] / 1e3, "max_ms": res["max_us"] / 1e3,
                "socket_errors": res["connect_errors"] + res["read_errors"] + res["write_errors"] + res["timeouts"]}
        results["http"] = http
        log(f"== 2. ours over HTTP: wrk -t{args.threads} -c{args.connections} for {args.duration:.0f} s, "
            f"serve --workers {args.workers}")
        log(f"   {http['rps']:,.0f} requests/s (target ≥ {TARGET_RPS:,}: "
            f"{'meets' if http['rps'] >= TARGET_RPS else 'MISSES'} target); p50 {http['p50_ms']:.1f} ms, "
            f"p99 {http['p99_ms']:.1f} ms (target ≤ {TARGET_P99_MS:.0f} ms: "
            f"{'meets' if http['p99_ms'] <= TARGET_P99_MS else 'MISSES'} target); "
            f"non-200 {http['non200']}, socket errors {http['socket_errors']}")
        sample = naive_history_check(app_url, leads[:200])
        log(f"== 3. direct reads from {args.connections} client processes, {args.naive_duration:.0f} s each "
            f"(the naive read and ours agree on {sample} sampled histories)")
        naive = parallel_reads(app_url, args.leads, args.connections, args.naive_duration, "naive")
        direct = parallel_reads(app_url, args.leads, args.connections, args.naive_duration, "ours")
        results["naive"], results["ours_direct"] = naive, direct
        for name, r in (("naive (1 + 2 per row queries)", naive), ("ours, store.history (1 statement)", direct)):
            log(f"   {name:36s} {r['rps']:8,.0f} requests/s   p50 {r['p50_ms']:6.1f} ms   p99 {r['p99_ms']:6.1f} ms")
        results["ratio_http_to_naive"] = http["rps"] / naive["rps"]
        results["ratio_direct_to_naive"] = direct["rps"] / naive["rps"]
        log(f"   ratio ours over HTTP / naive direct: {results['ratio_http_to_naive']:.1f}×; "
            f"ours direct / naive direct: {results['ratio_direct_to_naive']:.1f}×")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def process_output(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def naive_history_check(app_url: str, leads: list[str]) -> int:
    """The naive read and ours return the same ids, successors and change counts (so the comparison is fair)."""
    engine = sa.create_engine(app_url)
    try:
        with psycopg.connect(libpq(app_url)) as conn, engine.connect() as c:
            for lead in leads:
                naive = naive_history(conn, lead)
                ours = read_history(c, WS, lead, HistoryFilters(), T0)
                assert ours is not None
                got = [(str(i["id"]), i["rescheduled_to_id"], len(i["changes"])) for i in ours.items]
                want = [(str(n["id"]), str(n["rescheduled_to_id"]) if n["rescheduled_to_id"] else None,
                         len(n["changes"])) for n in naive]
                if got != want:
                    raise SystemExit(f"the two reads disagree for {lead}: {got} != {want}")
    finally:
        engine.dispose()
    return len(leads)


if __name__ == "__main__":
    raise SystemExit(main())
