"""One provider account's request budget shared by every process through PostgreSQL (issue 13 item 3b;
docs/operations.md "Rate limits").

Reconciliation runs, the availability refresh, the service's booking route and Celery workers may call the
same GHL location or Calendly user at once. :class:`SharedAccountLimiter` keeps the provider's limit
(GHL 100 / 10 s per location, Calendly 500 / 60 s per user) across all of them: the permits live in
``provider_rate_permits`` (:mod:`appt_pipeline.store.rate_permits`), with the rule of the in-process
:class:`~appt_pipeline.providers.http.AccountLimiter` — a request holds a permit from before it is sent until
``period_s`` (+ a safety margin) after its answer arrived, so no window of the provider ever counts more than
``max_requests`` of ours, whoever sent them — timed by the database clock that every process shares.

Why not a library: pyrate-limiter's ``PostgresBucket`` (and ``limits``' storages) log *send* times; a request
delayed in flight then lands in the provider's next window, which drew 429s from the simulators (see
``AccountLimiter``). The SQL here is three short statements.

Per process, one coroutine per account polls the database at a time (an ``asyncio.Lock``, FIFO); it sleeps
until the earliest permit frees (capped at ``poll_max_s``), so an idle wait costs a query per permit return at
most. Database calls run in a worker thread (``asyncio.to_thread``), never on the event loop. A 429's pause is
shared: the next permit return writes it to ``provider_rate_accounts.paused_until``. A process that dies with
a request in flight frees the permit after ``in_flight_lease_s`` + the window.

Errors: a database error while taking a permit (``sqlalchemy.exc.SQLAlchemyError``) propagates from
``slot()`` — no request is sent without a permit; one while giving it back is logged and the request's
answer still reaches the caller (the permit frees when its lease ends).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import sqlalchemy as sa

from appt_pipeline.providers.http import RateBudget, RateLimit, default_safety_margin_s
from appt_pipeline.store.rate_permits import account_key, ensure_permits, return_permit, take_permit

logger = logging.getLogger(__name__)

#: Seconds a permit stays taken while its request is in flight before another process may reuse it (only
#: matters when the holder died; every live request gives its permit back when answered).
DEFAULT_IN_FLIGHT_LEASE_S = 300.0
#: Longest sleep between two looks at the permits (seconds): bounds the delay after a pause is lifted by a
#: permit return from another process.
DEFAULT_POLL_MAX_S = 0.5
#: Shortest sleep when a free permit was taken by a concurrent process in the same instant (seconds).
_MIN_POLL_S = 0.005


class SharedAccountLimiter:
    """A :class:`~appt_pipeline.providers.http.RateBudget` whose permits are rows in PostgreSQL.

    Args:
        engine: the deployment's database (schema with ``sql/0013_provider_rate_permits.sql``).
        provider: ``"ghl"`` or ``"calendly"``.
        account_id: GHL location id / Calendly user URI; stored only as :func:`account_key`'s hash.
        max_requests: N, the provider's limit per window.
        period_s: the window (seconds).
        safety_margin_s: added to the hold time (default ``max(0.1 % of the period, 20 ms)``, as in-process).
        in_flight_lease_s: seconds a taken permit is held before its answer (see module doc).
        poll_max_s: longest sleep between two looks at the permits.

    Raises:
        ValueError: ``max_requests`` < 1, ``period_s`` ≤ 0, unknown provider or blank account id.
    """

    def __init__(
        self, engine: sa.Engine, provider: str, account_id: str, max_requests: int, period_s: float, *,
        safety_margin_s: float | None = None, in_flight_lease_s: float = DEFAULT_IN_FLIGHT_LEASE_S,
        poll_max_s: float = DEFAULT_POLL_MAX_S,
    ) -> None:
        if max_requests < 1 or period_s <= 0:
            raise ValueError("max_requests must be ≥ 1 and period_s > 0")
        self.engine = engine
        self.key = account_key(provider, account_id)
        self.name = self.key  # the hashed key: safe in logs
        self.max_requests = max_requests
        self.period_s = float(period_s)
        self.safety_margin_s = (default_safety_margin_s(period_s) if safety_margin_s is None
                                else float(safety_margin_s))
        self.lease_s = float(in_flight_lease_s) + self.window_s
        self.poll_max_s = float(poll_max_s)
        self._ready = False
        self._paused_until = 0.0  # monotonic; what this process knows of the account's pause
        self._pending_pause_s = 0.0  # a 429's wait, written to the database with the next permit return
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"SharedAccountLimiter({self.key!r}, {self.max_requests}/{self.period_s:g}s)"

    @property
    def window_s(self) -> float:
        """How long a permit stays held after its request was answered: period plus safety margin (seconds)."""
        return self.period_s + self.safety_margin_s

    def pause(self, seconds: float) -> None:
        """Hold every request of the account, in every process, for ``seconds`` from now (a 429 said so)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self._pending_pause_s = max(self._pending_pause_s, seconds)

    def paused_for(self) -> float:
        """Seconds left of the pause this process knows of (0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    def _local_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    # -- database calls (worker thread) ------------------------------------------------------------

    def _take_once(self) -> tuple[int | None, float]:
        with self.engine.connect() as conn:
            if not self._ready:
                ensure_permits(conn, self.key, self.max_requests)
                self._ready = True
            slot, wait_s, permits = take_permit(conn, self.key, self.max_requests, self.lease_s)
            if slot is None and permits < self.max_requests:  # rows removed or N raised since: create them
                ensure_permits(conn, self.key, self.max_requests)
                slot, wait_s, _ = take_permit(conn, self.key, self.max_requests, self.lease_s)
        return slot, wait_s

    def _return_once(self, slot: int, hold_s: float, pause_s: float) -> None:
        with self.engine.connect() as conn:
            return_permit(conn, self.key, slot, hold_s, pause_s=pause_s)

    # -- the budget ----------------------------------------------------------------------------------

    async def _acquire(self) -> int:
        """Wait for a permit of the account; returns its slot."""
        async with self._local_lock():
            while True:
                delay = self.paused_for()
                if delay > 0:
                    await asyncio.sleep(delay)
                future = asyncio.ensure_future(asyncio.to_thread(self._take_once))
                try:
                    slot, wait_s = await asyncio.shield(future)
                except asyncio.CancelledError:
                    future.add_done_callback(self._give_back_abandoned)
                    raise
                if slot is not None:
                    return slot
                await asyncio.sleep(min(max(wait_s, _MIN_POLL_S), self.poll_max_s))

    def _give_back_abandoned(self, future: asyncio.Future[tuple[int | None, float]]) -> None:
        """The waiter was cancelled while its permit was being taken: return it (held a window, as if sent)."""
        if future.cancelled() or future.exception() is not None:
            return
        slot, _ = future.result()
        if slot is not None:
            with suppress(RuntimeError):  # the loop is shutting down: the lease frees the permit
                asyncio.get_running_loop().run_in_executor(None, self._return_once, slot, self.window_s, 0.0)

    async def _release(self, slot: int) -> None:
        """Give the permit back (held ``window_s`` from now). A database error here is logged, not raised: the
        request was answered and its answer must reach the caller; the permit then frees when its lease ends
        (later than needed — never sooner), and a pending pause stays local to this process."""
        pause_s, self._pending_pause_s = self._pending_pause_s, 0.0
        try:
            await asyncio.shield(asyncio.to_thread(self._return_once, slot, self.window_s, pause_s))
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("rate permit %s/%d not returned (%s); it frees when its lease ends",
                           self.key, slot, type(exc).__name__)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """``async with limiter.slot() as waited:`` — one request; yields the seconds waited for its permit.
        Raises ``sqlalchemy.exc.SQLAlchemyError`` when no permit can be taken for want of the database (nothing
        is sent); a failure to give the permit back is only logged (see :meth:`_release`)."""
        started = time.monotonic()
        slot = await self._acquire()
        try:
            yield time.monotonic() - started
        finally:
            await self._release(slot)


class SharedBudgets:
    """A :data:`~appt_pipeline.providers.http.BudgetFactory` of :class:`SharedAccountLimiter` over ``engine``
    (for :class:`~appt_pipeline.providers.http.LimiterRegistry`)."""

    def __init__(self, engine: sa.Engine, **options: float) -> None:
        self.engine = engine
        self.options = options

    def __call__(self, provider: str, account_id: str, limit: RateLimit) -> RateBudget:
        return SharedAccountLimiter(self.engine, provider, account_id, limit.max_requests, limit.period_s,
                                    **self.options)
