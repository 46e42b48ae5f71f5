"""Signed webhook delivery for the provider simulators (what the real providers push to our receiver).

Every change a simulator makes is recorded as a :class:`~.common.ProviderEvent` in ``sim.emitted``
(an :class:`EventFeed`). A :class:`WebhookDelivery` listens to that feed (it never drains it, so
``sim.emitted.list()`` / ``/_admin/emitted/drain`` keep working), asks the simulator where the event
goes (``sim._webhook_outgoing(event)`` → a list of :class:`Outgoing`: URL, signed body, callbacks)
and POSTs it from a background thread running an asyncio loop with ``httpx``.

Provider behaviour reproduced (delays compressed and configurable via :class:`DeliverySettings`):

* **Calendly** (docs/providers.md §2.6, "webhook errors" docs page): any non-2xx answer (3xx, 4xx,
  5xx) or a timeout/connection error is retried with exponential back-off for a retry budget (real:
  24 h; here :attr:`DeliverySettings.retry_budget` seconds); when the budget runs out the
  subscription is disabled (``state: disabled``, ``retry_started_at`` kept) and nothing more is sent
  to it. Body ``{event, created_at, created_by, payload}`` built once (retries resend the same
  bytes); header ``Calendly-Webhook-Signature: t=<unix s>,v1=<hex>`` signed afresh per attempt.
* **GHL** (docs/providers.md §1.5, "automated webhook retries" help article): retried **only** on
  HTTP 429, at most 6 times, every 10 min + jitter in reality (here :attr:`DeliverySettings.retry_delay`
  + ``retry_jitter`` seconds); any other status, timeouts and connection errors are final. Body =
  the event payload + ``webhookId`` + ``timestamp``; ``X-GHL-Signature`` (Ed25519) and, when
  enabled, ``x-wh-signature`` (RSA-SHA256) over the exact bytes sent.

Ordering: by default deliveries to one target (a Calendly subscription, a GHL URL) are sent one at
a time in emission order, and a delivery waiting for a retry holds back the ones behind it
(``ordered=True``). ``ordered=False`` sends every delivery independently and concurrently, after a
random ``start_jitter`` delay, so they may arrive out of order (the real providers document no
ordering — tests use this to exercise the receiver).

The background thread starts on the first delivery and exits after ``idle_exit`` seconds without
work, so a simulator without subscriptions never starts one. Every attempt is recorded in a
:class:`DeliveryRecord` (ids, names and status codes only — never bodies); :meth:`WebhookDelivery.flush`
waits until everything emitted so far has been delivered or given up.

Keys: GHL's signing keys are derived from the simulator's ``id_seed`` (:class:`GhlSigningKeys`), so
a restarted demo keeps the public keys an operator stored as workspace secrets. They are test keys,
public by construction — never use them for anything real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appt_pipeline.domain.signatures import public_key_text
from appt_pipeline.sandbox.common import EventLog, ProviderEvent, SimulatorError

Listener = Callable[[ProviderEvent], None]


# --------------------------------------------------------------------------------------------
# The event feed: EventLog + listeners
# --------------------------------------------------------------------------------------------


class EventFeed(EventLog):
    """An :class:`~.common.EventLog` that also tells listeners about every new event.

    ``list()``/``drain()`` behave exactly as before (draining never hides an event from a listener:
    listeners are called at ``emit`` time). Listeners run in the emitting thread, after the event is
    appended and outside the log's lock; they must be quick and must not raise (a raising listener
    is ignored so the simulator's write still succeeds).
    """

    def __init__(self) -> None:
        super().__init__()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event emitted from now on; returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, event: ProviderEvent) -> None:
        super().emit(event)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):
                listener(event)


# --------------------------------------------------------------------------------------------
# Settings, outgoing messages, records
# --------------------------------------------------------------------------------------------


@dataclass
class DeliverySettings:
    """How a simulator delivers webhooks. Times are seconds.

    - ``timeout``: per attempt (connect + read); a timeout counts as "no answer" (status ``None``).
    - ``ordered``: one delivery at a time per target, in emission order (default); ``False`` =
      concurrent, each delivery first waits a random ``0 … start_jitter`` (seeded by ``seed``).
    - ``retry_statuses``: statuses that are retried; ``None`` = every non-2xx (Calendly), ``(429,)``
      for GHL. ``retry_on_error``: retry timeouts / connection errors too.
    - ``max_retries``: retries after the first attempt (``None`` = unlimited, bounded by the budget).
    - ``retry_delay`` × ``backoff`` ** (n − 1), capped at ``max_delay``, plus uniform
      ``0 … retry_jitter``: the wait before retry *n*.
    - ``retry_budget``: seconds from the first attempt after which a failing delivery is given up
      (a retry that would start later is not made); ``None`` = no budget.
    - ``idle_exit``: the background thread stops after this long without work (restarts on demand).
    """

    timeout: float = 5.0
    ordered: bool = True
    start_jitter: float = 0.0
    retry_statuses: tuple[int, ...] | None = None
    retry_on_error: bool = True
    max_retries: int | None = None
    retry_delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 8.0
    retry_jitter: float = 0.0
    retry_budget: float | None = 30.0
    idle_exit: float = 2.0
    seed: int = 0

    @classmethod
    def calendly(cls, **changes: Any) -> DeliverySettings:
        """Calendly: every non-2xx/timeout retried, 0.5 s doubling (cap 8 s) for 30 s (real: 24 h),
        then the subscription is disabled (docs/providers.md §2.6)."""
        return replace(cls(), **changes)

    @classmethod
    def ghl(cls, **changes: Any) -> DeliverySettings:
        """GHL: only 429 retried, 6 times, every 1 s + up to 0.2 s jitter (real: 10 min + jitter);
        anything else is final (docs/providers.md §1.5)."""
        base = cls(
            retry_statuses=(429,),
            retry_on_error=False,
            max_retries=6,
            retry_delay=1.0,
            backoff=1.0,
            max_delay=1.0,
            retry_jitter=0.2,
            retry_budget=None,
        )
        return replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.retry_statuses is not None:
            out["retry_statuses"] = list(self.retry_statuses)
        return out

    def changed(self, **changes: Any) -> DeliverySettings:
        """A copy with ``changes`` applied (validated; unknown names → :class:`SimulatorError`)."""
        known = {f.name for f in fields(DeliverySettings)}
        unknown = set(changes) - known
        if unknown:
            raise SimulatorError(f"unknown delivery setting(s) {sorted(unknown)}")
        if changes.get("retry_statuses") is not None:
            try:
                changes["retry_statuses"] = tuple(int(s) for s in changes["retry_statuses"])
            except (TypeError, ValueError) as exc:
                raise SimulatorError("retry_statuses must be a list of HTTP status codes") from exc
        new = replace(self, **changes)
        numbers = (new.timeout, new.start_jitter, new.retry_delay, new.max_delay, new.retry_jitter, new.idle_exit)
        try:
            if any(n < 0 for n in numbers) or new.timeout == 0 or new.backoff < 1:
                raise SimulatorError("delivery times must be >= 0 (timeout > 0) and backoff >= 1")
            if (new.max_retries is not None and new.max_retries < 0) or (
                new.retry_budget is not None and new.retry_budget < 0
            ):
                raise SimulatorError("max_retries and retry_budget must be >= 0")
        except TypeError as exc:
            raise SimulatorError("delivery settings must be numbers (booleans for ordered/retry_on_error)") from exc
        return new


Builder = Callable[[], tuple[bytes, dict[str, str]]]


def _never() -> str | None:
    return None


def _ignore(outcome: str) -> None:
    return None


@dataclass
class Outgoing:
    """One message for one target, as a simulator's router describes it.

    ``target``: the ordering key and what the record names (a Calendly subscription URI, or
    ``ghl:<locationId>``). ``build()`` → ``(body bytes, headers)`` for one attempt (called before
    every attempt, in the delivery thread). ``check()`` → a reason to stop before an attempt (e.g.
    ``subscription_disabled``) or ``None``. ``on_outcome(outcome)`` is told ``"failing"`` after each
    failed attempt that will be retried, ``"delivered"``, or ``"gave_up:<reason>"`` (reasons:
    ``final_status``, ``retries_exhausted``, ``retry_budget_exhausted``, or a ``check()`` reason).
    ``resource``: the appointment id / invitee URI (for the records). ``webhook_id``: GHL's.
    """

    target: str
    url: str
    build: Builder
    resource: str | None = None
    webhook_id: str | None = None
    check: Callable[[], str | None] = _never
    on_outcome: Callable[[str], None] = _ignore


@dataclass
class DeliveryRecord:
    """What happened to one message (no body): ``state`` ``pending|delivered|failed``; ``statuses``
    = the HTTP status of every attempt (``None`` = timeout / connection error); times are UTC ISO."""

    id: str
    seq: int
    event: str
    account: str
    target: str
    url: str
    resource: str | None
    webhook_id: str | None
    emitted_at: str
    state: str = "pending"
    attempts: int = 0
    statuses: list[int | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reason: str | None = None
    first_attempt_at: str | None = None
    last_attempt_at: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("seq")
        return out


@dataclass
class _Job:
    seq: int
    gen: int
    out: Outgoing
    record: DeliveryRecord


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(obj: Any) -> bytes:
    """Compact JSON (like ``JSON.stringify``), UTF-8: the exact bytes a webhook body is signed over."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------
# The delivery engine
# --------------------------------------------------------------------------------------------


class WebhookDelivery:
    """Delivers a simulator's emitted events to the configured webhook targets (thread + asyncio).

    ``route(event)`` → the :class:`Outgoing` messages for an event (``[]`` = nothing configured);
    it is called in the emitting thread at emit time, so the message reflects the provider's state
    at that moment. ``wall_clock`` → unix seconds for attempt times (signatures use their own
    wall-clock reads inside ``build``). ``user_agent``: the ``User-Agent`` header sent.
    """

    def __init__(
        self,
        route: Callable[[ProviderEvent], list[Outgoing]],
        settings: DeliverySettings | None = None,
        *,
        id_seed: int | str = 0,
        user_agent: str = "appt-sandbox-webhooks",
        wall_clock: Callable[[], float] = time.time,
        max_records: int = 50_000,
    ):
        self._route = route
        self.settings = settings or DeliverySettings()
        self.user_agent = user_agent
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._rng = random.Random(f"webhook-delivery:{id_seed}")
        self._jitter_rng = random.Random(self.settings.seed)
        self._seq = 0
        self._gen = 0
        self._inbox: deque[_Job] = deque()
        self._unfinished: dict[int, DeliveryRecord] = {}
        self._records: deque[DeliveryRecord] = deque(maxlen=max_records)
        self._counts = self._zero_counts()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        # loop-thread only:
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: dict[str, deque[_Job]] = {}
        self._client: httpx.AsyncClient | None = None

    @staticmethod
    def _zero_counts() -> dict[str, int]:
        return {"emitted": 0, "pending": 0, "delivered": 0, "failed": 0, "attempts": 0, "retries": 0}

    # ------------------------------------------------------------------ public API

    def configure(self, **changes: Any) -> DeliverySettings:
        """Change delivery settings (see :class:`DeliverySettings`); they apply to the next attempt."""
        with self._lock:
            self.settings = self.settings.changed(**changes)
            if "seed" in changes:
                self._jitter_rng = random.Random(self.settings.seed)
            return replace(self.settings)

    def on_event(self, event: ProviderEvent) -> None:
        """Feed listener: route ``event`` and queue one delivery per target."""
        outgoing = self._route(event)
        if not outgoing:
            return
        with self._lock:
            if self._closing:
                return
            for out in outgoing:
                seq = self._seq
                self._seq += 1
                record = DeliveryRecord(
                    id=str(_uuid4(self._rng)),
                    seq=seq,
                    event=event.name,
                    account=event.account,
                    target=out.target,
                    url=out.url,
                    resource=out.resource,
                    webhook_id=out.webhook_id,
                    emitted_at=event.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                )
                self._records.append(record)
                self._unfinished[seq] = record
                self._counts["emitted"] += 1
                self._counts["pending"] += 1
                self._inbox.append(_Job(seq, self._gen, out, record))
            self._ensure_thread()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every delivery queued so far is delivered or given up; ``True`` when done,
        ``False`` when ``timeout`` seconds passed first (later deliveries are not waited for)."""
        with self._cond:
            target = self._seq
            return self._cond.wait_for(lambda: not any(s < target for s in self._unfinished), timeout)

    def pending(self) -> int:
        with self._lock:
            return len(self._unfinished)

    def deliveries(self, *, state: str | None = None, event: str | None = None) -> list[DeliveryRecord]:
        """Copies of the delivery records, oldest first (optionally one ``state`` / ``event`` name)."""
        with self._lock:
            return [
                replace(r, statuses=list(r.statuses), errors=list(r.errors))
                for r in self._records
                if (state is None or r.state == state) and (event is None or r.event == event)
            ]

    def counts(self) -> dict[str, Any]:
        """``{emitted, pending, delivered, failed, attempts, retries, by_status: {"200": n, "error": m}}``."""
        with self._lock:
            by_status: dict[str, int] = {}
            for r in self._records:
                for s in r.statuses:
                    key = "error" if s is None else str(s)
                    by_status[key] = by_status.get(key, 0) + 1
            return {**self._counts, "by_status": by_status}

    def summary(self, *, state: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """The admin view: counts, settings and the last ``limit`` records (no bodies)."""
        records = [r.to_dict() for r in self.deliveries(state=state)]
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return {"counts": self.counts(), "settings": self.settings.to_dict(), "deliveries": records}

    def reset(self) -> None:
        """Forget queued/in-flight deliveries and records (in-flight attempts are abandoned)."""
        with self._cond:
            self._gen += 1
            self._inbox.clear()
            self._unfinished.clear()
            self._records.clear()
            self._counts = self._zero_counts()
            loop = self._loop
            self._cond.notify_all()
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_all)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread (queued deliveries are abandoned); later events are ignored."""
        with self._lock:
            self._closing = True
            thread, loop = self._thread, self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_all)
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    # ------------------------------------------------------------------ thread and loop

    def _ensure_thread(self) -> None:  # under self._lock
        if self._thread is not None:
            if self._loop is not None and self._wake is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._wake.set)
            return
        self._thread = threading.Thread(target=self._thread_main, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    self._loop = self._wake = None

    async def _main(self) -> None:
        wake = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._wake = wake
        idle_since = time.monotonic()
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            self._client = client
            while True:
                with self._lock:
                    jobs = list(self._inbox)
                    self._inbox.clear()
                    idle = not jobs and not self._tasks
                    if idle and (self._closing or time.monotonic() - idle_since >= self.settings.idle_exit):
                        self._thread = None
                        self._loop = self._wake = None
                        return
                    ordered = self.settings.ordered
                for job in jobs:
                    self._dispatch(job, ordered)
                if not idle:
                    idle_since = time.monotonic()
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=0.2)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, job: _Job, ordered: bool) -> None:
        if not ordered:
            with self._lock:
                delay = self._jitter_rng.uniform(0, self.settings.start_jitter) if self.settings.start_jitter else 0.0
            self._spawn(self._run(job, delay))
            return
        key = job.out.target
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[key] = deque([job])
        self._spawn(self._worker(key))

    async def _worker(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                await self._run(queue.popleft(), 0.0)
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._queues.clear()

    # ------------------------------------------------------------------ one delivery

    def _current(self, job: _Job) -> bool:
        return job.gen == self._gen and not self._closing

    async def _run(self, job: _Job, start_delay: float) -> None:
        try:
            if start_delay:
                await asyncio.sleep(start_delay)
            await self._attempts(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken callback must not leave the delivery pending forever
            self._finish(job, "failed", f"internal_error:{type(exc).__name__}")

    async def _attempts(self, job: _Job) -> None:
        out, record = job.out, job.record
        first_attempt: float | None = None
        retries = 0
        while True:
            if not self._current(job):
                return
            reason = out.check()
            if reason is not None:
                self._finish(job, "failed", reason)
                out.on_outcome(f"gave_up:{reason}")
                return
            body, headers = out.build()
            started = self.wall_clock()
            first_attempt = started if first_attempt is None else first_attempt
            status, error = await self._post(out.url, body, headers)
            with self._lock:
                if not self._current(job):
                    return
                settings = self.settings
                record.attempts += 1
                record.statuses.append(status)
                if error:
                    record.errors.append(error)
                record.first_attempt_at = record.first_attempt_at or _iso(started)
                record.last_attempt_at = _iso(self.wall_clock())
                self._counts["attempts"] += 1
            if status is not None and 200 <= status < 300:
                self._finish(job, "delivered", None)
                out.on_outcome("delivered")
                return
            retryable = (
                settings.retry_on_error
                if status is None
                else (settings.retry_statuses is None or status in settings.retry_statuses)
            )
            if not retryable:
                self._finish(job, "failed", "final_status")
                out.on_outcome("gave_up:final_status")
                return
            if settings.max_retries is not None and retries >= settings.max_retries:
                self._finish(job, "failed", "retries_exhausted")
                out.on_outcome("gave_up:retries_exhausted")
                return
            retries += 1
            delay = min(settings.max_delay, settings.retry_delay * settings.backoff ** (retries - 1))
            if settings.retry_jitter:
                with self._lock:
                    delay += self._jitter_rng.uniform(0, settings.retry_jitter)
            if settings.retry_budget is not None and self.wall_clock() + delay - first_attempt > settings.retry_budget:
                self._finish(job, "failed", "retry_budget_exhausted")
                out.on_outcome("gave_up:retry_budget_exhausted")
                return
            out.on_outcome("failing")
            with self._lock:
                if self._current(job):
                    self._counts["retries"] += 1
            await asyncio.sleep(delay)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        all_headers = {"Content-Type": "application/json", "User-Agent": self.user_agent, **headers}
        assert self._client is not None
        try:
            response = await self._client.post(url, content=body, headers=all_headers, timeout=self.settings.timeout)
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, None

    def _finish(self, job: _Job, state: str, reason: str | None) -> None:
        with self._cond:
            if job.gen != self._gen:
                return
            record = job.record
            record.state = state
            record.reason = reason
            record.finished_at = _iso(self.wall_clock())
            self._unfinished.pop(job.seq, None)
            self._counts["pending"] -= 1
            self._counts[state] += 1
            self._cond.notify_all()


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def calendly_signing_key(id_seed: int | str, subscription_uuid: str) -> str:
    """A generated subscription signing key: 43 base64url characters, derived from the simulator's
    ``id_seed`` and the subscription uuid (reproducible; a test key, not a secret)."""
    digest = hashlib.sha256(f"calendly-signing-key:{id_seed}:{subscription_uuid}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _small_primes(limit: int = 2000) -> tuple[int, ...]:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return tuple(i for i, v in enumerate(sieve) if v)


_SMALL_PRIMES = _small_primes()


def _probable_prime(n: int, rng: random.Random, rounds: int = 32) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@lru_cache(maxsize=8)
def deterministic_rsa_key(seed: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA private key (e = 65537) derived from ``seed``: the same seed gives the same key.

    Test-only (the primes come from a seeded PRNG); ~0.1–0.5 s the first time, cached.
    """
    rng = random.Random(f"rsa:{seed}:{bits}")
    e = 65537
    half = bits // 2

    def prime() -> int:
        while True:
            c = rng.getrandbits(half) | (3 << (half - 2)) | 1  # top two bits set: n has exactly `bits` bits
            if any(c % p == 0 for p in _SMALL_PRIMES) or (c - 1) % e == 0:
                continue
            if _probable_prime(c, rng):
                return c

    p = prime()
    q = prime()
    while q == p:
        q = prime()
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


class GhlSigningKeys:
    """The simulated HighLevel signing keys: Ed25519 (``X-GHL-Signature``) and RSA-2048 (legacy
    ``x-wh-signature``; real GHL uses 4096 bits, docs/providers.md §1.5), both derived from ``seed``.

    The RSA key is made on first use. :meth:`public_keys` gives what an operator stores as the
    workspace secrets ``ghl_webhook_public_key`` / ``ghl_webhook_legacy_public_key`` (base64 SPKI DER).
    """

    def __init__(self, seed: int | str = 0):
        self.seed = str(seed)
        self.ed25519 = Ed25519PrivateKey.from_private_bytes(
            hashlib.sha256(f"ghl-ed25519:{self.seed}".encode()).digest()
        )

    @property
    def rsa(self) -> rsa.RSAPrivateKey:
        return deterministic_rsa_key(f"ghl-legacy:{self.seed}")

    def public_keys(self) -> dict[str, str]:
        """``{"ed25519": …, "rsa": …}`` — base64 SubjectPublicKeyInfo DER, one line each."""
        return {"ed25519": public_key_text(self.ed25519.public_key()), "rsa": public_key_text(self.rsa.public_key())}


__all__ = [
    "DeliveryRecord",
    "DeliverySettings",
    "EventFeed",
    "GhlSigningKeys",
    "Outgoing",
    "WebhookDelivery",
    "calendly_signing_key",
    "deterministic_rsa_key",
    "dumps",
]
