"""The account limiter (pure, no HTTP): never more than N requests in ANY sliding window of the period, yet
≥ 90 % of the limit used in steady state; a leaky bucket (aiolimiter) is shown to break the first rule.
Plus 429 header parsing and call stats. (Against the simulator's own accounting: test_providers_ghl.py.)"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from datetime import UTC, datetime

from aiolimiter import AsyncLimiter

from appt_pipeline.providers.http import AccountLimiter, CallStats, LimiterRegistry, parse_retry_after


def max_in_window(stamps: list[float], seconds: float) -> int:
    """Peak number of stamps in any half-open window ``[t, t + seconds)``."""
    stamps = sorted(stamps)
    return max((bisect_left(stamps, s + seconds, lo=i) - i for i, s in enumerate(stamps)), default=0)


async def grant_times(acquire, n: int, latency: float = 0.0) -> list[float]:
    """Start ``n`` concurrent "requests" through ``acquire`` (an async context manager factory or an
    awaitable); each takes ``latency`` seconds. Returns their start times."""
    stamps: list[float] = []

    async def one() -> None:
        gate = acquire()
        if hasattr(gate, "__aenter__"):
            async with gate:
                stamps.append(time.monotonic())
                await asyncio.sleep(latency)
        else:
            await gate
            stamps.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(n)))
    return stamps


def test_sliding_window_bound_and_utilisation() -> None:
    limit, period = 20, 1.0
    limiter = AccountLimiter(limit, period, name="test")
    started = time.monotonic()
    stamps = asyncio.run(grant_times(limiter.slot, 3 * limit))
    elapsed = time.monotonic() - started
    assert max_in_window(stamps, period) <= limit
    assert max_in_window(stamps, limiter.window_s) <= limit
    # 3N requests need two full windows after the first burst (never sooner), and the budget is nearly used:
    # the busiest window carries ≥ 90 % of the limit (a load-independent measure; throughput is benchmarked)
    assert elapsed >= 2 * period
    assert max_in_window(stamps, period) >= 0.9 * limit
    assert limiter.window_s == period + 0.02


def test_slow_requests_hold_their_permit_until_answered() -> None:
    """A request counts from its send until ``period`` after its answer: whenever the provider stamps it,
    no window of the provider can see more than N (here every request takes 0.3 s)."""
    limit, period, latency = 5, 0.5, 0.3
    limiter = AccountLimiter(limit, period)
    stamps = asyncio.run(grant_times(limiter.slot, 3 * limit, latency=latency))
    # any arrival time in [send, send + latency] keeps ≤ N per window: the starts are ≥ period + latency apart
    starts = sorted(stamps)
    assert all(b - a >= period + latency - 0.01 for a, b in zip(starts, starts[limit:], strict=False))


def test_limiter_survives_a_new_event_loop() -> None:
    limiter = AccountLimiter(3, 0.3)
    asyncio.run(grant_times(limiter.slot, 3))  # all three permits held for 0.3 s after this loop ends
    started = time.monotonic()
    asyncio.run(grant_times(limiter.slot, 1))
    assert time.monotonic() - started >= 0.2


def test_leaky_bucket_admits_about_twice_the_limit_in_a_window() -> None:
    """Why not aiolimiter: after an initial burst it refills continuously, so a window sees ~2N."""
    limit, period = 20, 0.5
    stamps = asyncio.run(grant_times(AsyncLimiter(limit, period).acquire, 2 * limit))
    assert max_in_window(stamps, period) > limit


def test_pause_holds_every_request() -> None:
    limiter = AccountLimiter(100, 1.0)

    async def run() -> float:
        async with limiter.slot():
            limiter.pause(0.3)
        async with limiter.slot() as waited:
            return waited

    waited = asyncio.run(run())
    assert waited >= 0.29 and limiter.paused_for() == 0


def test_registry_shares_one_limiter_per_account() -> None:
    reg = LimiterRegistry()
    assert reg.get("ghl", "loc1") is reg.get("GHL", "loc1")
    assert reg.get("ghl", "loc1") is not reg.get("ghl", "loc2")
    assert reg.get("calendly", "u").max_requests == 500 and reg.get("ghl", "x").period_s == 10


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "7"}) == 7
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now=now) == 30
    assert parse_retry_after({"X-RateLimit-Reset": "60"}) == 60
    assert parse_retry_after({"Retry-After": "2", "X-RateLimit-Reset": "60"}) == 2
    assert parse_retry_after({"x-ratelimit-reset": str(int(now.timestamp()) + 5)}, now=now) == 5
    assert parse_retry_after({"X-RateLimit-Reset": "-3"}) == 0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"X-RateLimit-Reset": "soon"}) is None


def test_stats_metadata() -> None:
    stats = CallStats(requests=5, rate_limited=1, retries=2, errors=1)
    stats.errors_by_kind["server"] += 1
    meta = stats.as_metadata("ghl_")
    assert meta["ghl_api_requests"] == 5 and meta["ghl_api_429s"] == 1 and meta["ghl_api_errors_server"] == 1


def test_provider_error_is_masked_and_picklable() -> None:
    import pickle

    from appt_pipeline.providers.http import ProviderError

    error = ProviderError("server", "ghl GET /x → HTTP 500: jane@example.com +1 555 123 4567", provider="ghl",
                          status_code=500, path="/x")
    assert "jane" not in str(error) and "555" not in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, str(copy), copy.status_code, copy.path) == ("server", str(error), 500, "/x")


def test_a_5xx_waits_for_retry_after_only_never_for_the_rate_window_reset() -> None:
    from appt_pipeline.providers.http import parse_retry_after

    calendly_5xx = {"X-RateLimit-Limit": "500", "X-RateLimit-Remaining": "4997", "X-RateLimit-Reset": "60"}
    assert parse_retry_after(calendly_5xx, rate_limit_reset=False) is None
    assert parse_retry_after(calendly_5xx) == 60.0
    assert parse_retry_after({**calendly_5xx, "Retry-After": "2"}, rate_limit_reset=False) == 2.0
