"""The provider budget shared through PostgreSQL (docs/operations.md §5 "Rate limits") under several processes.

``.venv/bin/python -m bench.rate_budget [--processes N] [--requests N] [--database-url URL] [--keep]``

Starts the GHL simulator at its real limit (100 requests / 10 s per location) on loopback, a fresh app database
(``sql/`` applied), and N worker processes (``python -m bench.rate_budget --worker …``), each with its own
engine, httpx client and :class:`~appt_pipeline.pipelines.shared_limiter.SharedAccountLimiter`, which send
their requests at once to ONE location from the same instant. Prints, from the simulator's own accounting:
requests, 429s, the busiest 10 s window ÷ limit, the share of the limit used over the run (requests ÷
(windows spanned × limit)), the wall time against the floor any client needs ((⌈requests÷N⌉−1) windows),
and the database statements per request (``pg_stat_database.xact_commit`` of the app database ÷ requests).
Exit status 1 on any 429 or a use below 90 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import time

import httpx
import sqlalchemy as sa

from bench.harness import bench_databases, log

# the simulator listens on loopback: provider tokens may go there (README "Provider hosts"); workers inherit it
os.environ.setdefault("APPT_PROVIDER_HOST_ALLOWLIST", "127.0.0.1:*")

LOCATION = "loc_bench"
TOKEN = "tok-bench-rate-budget"


async def _worker(args: argparse.Namespace) -> dict[str, float | int]:
    from appt_pipeline.pipelines.shared_limiter import SharedAccountLimiter
    from appt_pipeline.providers.ghl import GhlClient
    from appt_pipeline.providers.http import GHL_RATE_LIMIT, CallStats

    engine = sa.create_engine(args.database_url, pool_size=2)
    stats = CallStats()
    try:
        limiter = SharedAccountLimiter(engine, "ghl", LOCATION, GHL_RATE_LIMIT.max_requests, GHL_RATE_LIMIT.period_s)
        async with httpx.AsyncClient() as http:
            client = GhlClient(base_url=args.base_url, token=TOKEN, location_id=LOCATION, limiter=limiter, http=http,
                               stats=stats, timeout_s=10.0)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            await asyncio.gather(*(client.get_contact_appointments(f"c_{i % 50}") for i in range(args.requests)))
    finally:
        engine.dispose()
    return stats.as_metadata()


def _commits(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")).scalar_one())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--requests", type=int, default=150, help="requests per process")
    parser.add_argument("--database-url", default=os.environ.get("APPT_BENCH_DATABASE_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        json.dump(asyncio.run(_worker(args)), sys.stdout)
        return 0

    from appt_pipeline.providers.http import GHL_RATE_LIMIT
    from appt_pipeline.sandbox import GhlContact, GhlLocation, GhlSeed, GhlSimulator, SimulatorServer
    from appt_pipeline.store.schema import upgrade

    limit, period = GHL_RATE_LIMIT.max_requests, GHL_RATE_LIMIT.period_s
    total = args.processes * args.requests
    sim = GhlSimulator(GhlSeed(locations=[GhlLocation(
        id=LOCATION, token=TOKEN, timezone="UTC",
        contacts=[GhlContact(email=f"p{i}@example.com", id=f"c_{i}") for i in range(50)])]))
    log(f"=== shared rate budget: {args.processes} processes × {args.requests} requests = {total} to one GHL "
        f"location, REAL limit {limit} / {period:g} s (simulator's moving window) ===")
    with bench_databases(args.database_url, args.keep, "appt_bench_rate") as (app_url, _), \
            SimulatorServer(sim) as server:
        upgrade(app_url)
        engine = sa.create_engine(app_url)
        command = [sys.executable, "-m", "bench.rate_budget", "--worker", "--database-url", app_url,
                   "--base-url", server.base_url, "--requests", str(args.requests)]
        workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for _ in range(args.processes)]
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        commits_before = _commits(engine)
        started = time.monotonic()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        stats = []
        for w in workers:
            out, _ = w.communicate(timeout=600)
            stats.append(json.loads(out))
        wall = time.monotonic() - started
        commits = _commits(engine) - commits_before
        engine.dispose()
    accepted = sim.accounting.accepted(LOCATION)
    limited = len(sim.accounting.rate_limited(LOCATION))
    peak = sim.accounting.max_requests_in_window(LOCATION, period)
    span = accepted[-1] - accepted[0]
    use = len(accepted) / ((span + period) / period * limit)
    floor = (math.ceil(total / limit) - 1) * period
    waits = [round(s["api_limiter_wait_s"], 1) for s in stats]
    client_429s = sum(s["api_429s"] for s in stats)
    log(f"  requests accepted {len(accepted)} of {total}; 429s {limited} (client side {client_429s})")
    log(f"  peak max_requests_in_window({period:g} s) = {peak} / {limit} → {peak / limit:.0%}")
    log(f"  use over the run: {len(accepted)} requests in {span:.2f} s (+ the last window) → {use:.1%} of the limit")
    log(f"  wall {wall:.1f} s vs floor {floor:.0f} s ((⌈{total}÷{limit}⌉−1)·{period:g} s) → ×{wall / floor:.3f}"
        if floor else f"  wall {wall:.1f} s")
    log(f"  limiter wait per process, summed over its requests (s): {waits}")
    log(f"  database transactions: {commits} → {commits / max(1, len(accepted)):.2f} per request "
        f"(take + return = 2; the rest are polls while waiting)")
    return 0 if limited == 0 and use >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
