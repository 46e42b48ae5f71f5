"""One "process" of the shared rate budget tests (``test_shared_limiter.py``): its own engine, httpx client and
limiter; sends ``--requests`` GETs at once to one GHL location and prints its call counters as JSON.

``python -m appt_pipeline_tests.helpers.rate_budget_worker --base-url URL --location LOC --requests N
[--database-url URL] [--fail-on-429]``. With ``--database-url`` the limiter is the PostgreSQL one (shared
with every other process on that database), else an in-process one. Once set up the worker prints ``ready``
and waits for a line on stdin (so the processes start together, after their imports); ``--fail-on-429``
makes a 429 fail the request at once instead of being retried (the control counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import httpx
import sqlalchemy as sa

from appt_pipeline.pipelines.shared_limiter import SharedAccountLimiter
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import GHL_RATE_LIMIT, CallStats, RetryPolicy


async def _run(args: argparse.Namespace, engine: sa.Engine | None, stats: CallStats) -> int:
    limit = GHL_RATE_LIMIT
    limiter = (SharedAccountLimiter(engine, "ghl", args.location, limit.max_requests, limit.period_s)
               if engine is not None else None)
    retry = RetryPolicy(max_rate_limited_attempts=1) if args.fail_on_429 else None
    async with httpx.AsyncClient() as http:
        client = GhlClient(base_url=args.base_url, token=f"tok-{args.location}", location_id=args.location,
                           limiter=limiter, http=http, stats=stats, retry=retry, timeout_s=10.0)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        results = await asyncio.gather(
            *(client.get_contact_appointments(f"{args.location}_c_{i % args.contacts}") for i in range(args.requests)),
            return_exceptions=True)
    return sum(1 for r in results if isinstance(r, BaseException))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--location", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--contacts", type=int, default=1)
    parser.add_argument("--database-url")
    parser.add_argument("--fail-on-429", action="store_true")
    args = parser.parse_args(argv)
    engine = sa.create_engine(args.database_url, pool_size=2) if args.database_url else None
    stats = CallStats()
    try:
        failed = asyncio.run(_run(args, engine, stats))
    finally:
        if engine is not None:
            engine.dispose()
    json.dump({**stats.as_metadata(), "failed": failed}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
