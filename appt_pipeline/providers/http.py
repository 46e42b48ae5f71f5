"""Shared transport policy for the provider clients (SPEC §6, §11; docs/providers.md §1.3–1.4, §2.4–2.5).

One :class:`ProviderHttp` per client; what is shared per provider account is its :class:`RateBudget`:
within one process the :class:`AccountLimiter`, across processes (when a database is configured) the
PostgreSQL-backed :class:`~appt_pipeline.pipelines.shared_limiter.SharedAccountLimiter` with the same rule
(docs/operations.md "Rate limits"); optionally also the ``httpx.AsyncClient`` and the :class:`CallStats`.

* **Rate limit** — :class:`AccountLimiter`: never more than ``max_requests`` requests in *any*
  sliding window of ``period_s`` as the provider counts them (a permit is held from send until
  ``period_s`` after the answer), while a steady stream uses ≥ 97 % of the limit. (A leaky bucket such
  as aiolimiter admits up to ~2N in the window right after a burst; a sliding log of send times lets
  in-flight delays spill into the next window — both draw 429s.) Defaults: GHL 100 / 10 s per
  location, Calendly 500 / 60 s per user (docs/providers.md §1.4, §2.5); both configurable.
* **429** — the wait is ``Retry-After`` (seconds or HTTP date), else ``X-RateLimit-Reset`` (seconds
  until reset; Calendly), else the limiter's window; the whole account limiter pauses for that long
  (every request of the account is told the same thing by the provider; a POST's 429 delays only that
  request, as it may be the endpoint's own quota), then the request is retried. A wait longer than
  ``RetryPolicy.max_retry_after_s`` (e.g. a daily quota) fails at once with kind ``rate_limited``.
* **Retries** (tenacity) — 429 for any method (the request was not processed); 5xx, network errors
  and timeouts for idempotent requests (GET) with exponential back-off and jitter; POSTs are retried
  only when the connection was never made (connect error/timeout): a POST that may have reached the
  provider is never sent twice. Attempts are bounded (:class:`RetryPolicy`).
* **Timeout** per attempt (``timeout_s``; httpx connect/read/write/pool).
* **Errors** — :class:`ProviderError` with a ``kind``; messages carry method, path (never the
  query string), status and the provider's message with e-mails and phone numbers masked
  (:func:`~appt_pipeline.domain.redaction.mask_pii`) and the token removed; the httpx cause is not
  chained (its request carries the query and headers).
* **Stats** — :class:`CallStats` counts requests, 429s, retries and errors for run metadata.

The token lives in a :class:`Secret` whose ``repr``/``str`` are ``"***"``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, Self
from urllib.parse import unquote, urlsplit

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from appt_pipeline.domain.provider_hosts import HostAllowlist, ProviderHostError, check_provider_url
from appt_pipeline.domain.redaction import mask_pii
from appt_pipeline.settings import provider_host_allowlist

logger = logging.getLogger(__name__)

#: An ``X-RateLimit-Reset`` at or above this is a Unix time, not a number of seconds to wait.
_EPOCH_THRESHOLD = 1_000_000_000


class ErrorKind(StrEnum):
    """``ProviderError.kind`` values."""

    AUTH = "auth"  # 401/403: bad, expired or insufficient credentials
    NOT_FOUND = "not_found"  # 404/410
    RATE_LIMITED = "rate_limited"  # 429 after the allowed retries (or a wait longer than allowed)
    SERVER = "server"  # 5xx after the allowed retries
    NETWORK = "network"  # connection refused/reset, DNS, protocol errors
    TIMEOUT = "timeout"  # no answer within the per-request timeout
    BAD_RESPONSE = "bad_response"  # 2xx whose body is not the JSON shape we need; unexpected status
    REFUSED = "refused"  # other 4xx: the provider refused the request (validation, slot taken, conflict)


class ProviderError(Exception):
    """A provider call that failed (after the retries the policy allows).

    Attributes:
        kind: an :class:`ErrorKind` value (a ``str``).
        provider: ``"ghl"`` or ``"calendly"``.
        status_code: HTTP status when the provider answered, else ``None``.
        method, path: the request's method and URL path (no query string, no host).
        retry_after_s: seconds the provider asked us to wait (429), if it said.
        retryable: whether the transport may retry this failure (set by :class:`ProviderHttp`).

    ``str(error)`` is safe to log and store: e-mails/phones masked, no token, no query string.
    """

    def __init__(
        self,
        kind: ErrorKind | str,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after_s: float | None = None,
        retryable: bool = False,
    ) -> None:
        self.kind = ErrorKind(kind)
        self.provider = provider
        self.status_code = status_code
        self.method = method
        self.path = path
        self.retry_after_s = retry_after_s
        self.retryable = retryable
        super().__init__(mask_pii(message))

    @property
    def message(self) -> str:
        """The masked message (same as ``str(self)``)."""
        return str(self)

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {
            "provider": self.provider, "status_code": self.status_code, "method": self.method, "path": self.path,
            "retry_after_s": self.retry_after_s, "retryable": self.retryable,
        }
        return (_rebuild_error, (self.kind.value, str(self), kwargs))


def _rebuild_error(kind: str, message: str, kwargs: dict[str, Any]) -> ProviderError:
    return ProviderError(kind, message, **kwargs)


class Secret:
    """A credential whose ``repr``/``str`` never reveal it; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        # trailing whitespace broke signatures in the original (docs/original-system.md §14, item 5)
        self._value = (value or "").strip()

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)



def default_safety_margin_s(period_s: float) -> float:
    """How long past the provider's window a permit stays held after its answer, unless configured: 0.1 % of
    the period, at least 20 ms (seconds) — the slack between the provider's clock and ours."""
    return max(0.001 * period_s, 0.02)

@dataclass
class CallStats:
    """Per-run call counters for run metadata (SPEC §6; DESIGN "Materializations carry … API calls, 429s").

    Attributes:
        requests: HTTP attempts sent (each retry counts).
        rate_limited: 429 answers received.
        retries: attempts that were retried after a failure.
        errors: calls that failed for good (after retries); ``errors_by_kind`` splits them.
        limiter_wait_s: total seconds spent waiting for the rate limiter (or a 429 pause).
    """

    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    errors: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    limiter_wait_s: float = 0.0

    def add(self, other: CallStats) -> None:
        """Add ``other``'s counters to these (totals over several clients or calendars)."""
        self.requests += other.requests
        self.rate_limited += other.rate_limited
        self.retries += other.retries
        self.errors += other.errors
        self.errors_by_kind.update(other.errors_by_kind)
        self.limiter_wait_s += other.limiter_wait_s

    def as_metadata(self, prefix: str = "") -> dict[str, int | float]:
        """Flat JSON-able counters, e.g. ``{"api_requests": 12, "api_429s": 1, …}`` (``prefix`` prepended)."""
        out: dict[str, int | float] = {
            f"{prefix}api_requests": self.requests,
            f"{prefix}api_429s": self.rate_limited,
            f"{prefix}api_retries": self.retries,
            f"{prefix}api_errors": self.errors,
            f"{prefix}api_limiter_wait_s": round(self.limiter_wait_s, 3),
        }
        for kind, count in sorted(self.errors_by_kind.items()):
            out[f"{prefix}api_errors_{kind}"] = count
        return out


class RateBudget(Protocol):
    """What :class:`ProviderHttp` needs of an account's limiter: :class:`AccountLimiter` (one process) or
    :class:`~appt_pipeline.pipelines.shared_limiter.SharedAccountLimiter` (every process, via PostgreSQL).

    ``slot()`` is an async context manager around ONE HTTP attempt, yielding the seconds waited for it;
    ``pause(seconds)`` holds every request of the account (a 429 said so); ``window_s`` is how long a permit
    stays held after the answer (seconds); ``name`` a log label (never a token)."""

    name: str
    max_requests: int
    period_s: float

    @property
    def window_s(self) -> float: ...

    def slot(self) -> AbstractAsyncContextManager[float]: ...

    def pause(self, seconds: float) -> None: ...

    def paused_for(self) -> float: ...


class AccountLimiter:
    """One provider account's request budget: never more than ``max_requests`` requests in ANY sliding
    window of ``period_s`` seconds, as the provider counts them (by arrival).

    Share one instance between every client and coroutine that spends the same account's budget within
    a run (GHL: per location; Calendly: per user). Use :meth:`slot` around each HTTP attempt.

    How: a request holds one of ``max_requests`` permits (an ``asyncio.Semaphore``, FIFO) from before it
    is sent until ``period_s + safety_margin_s`` after its answer (or failure) arrived; the permit's return
    is scheduled with ``loop.call_later``. The provider stamps a request somewhere between our send and
    our receipt, so every request it counts in a window ``[t, t + period)`` still holds its permit at the
    window's end: at most ``max_requests`` of them, whatever the latency or its jitter. A limiter that
    only spaces the *sends* (a sliding log of send times, e.g. pyrate-limiter or ``limits``) cannot
    promise that: a request delayed in flight (connection set-up, server queueing) lands in the next
    window; measured on loopback, such a limiter drew 429s from the simulator. A leaky bucket
    (aiolimiter) is worse: ~2N in the window after a burst. Throughput in steady state is
    ``N / (period + latency + margin)``: ≥ 97 % of the limit for latencies under 2 % of the period.

    A 429 pauses the whole account (:meth:`pause`): every waiting request then waits until the time the
    provider named. Monotonic clock. The limiter may be used from successive event loops (held permits
    carry over).

    Args:
        max_requests: N, the provider's limit per window (GHL 100, Calendly 500 or 50 on free plans).
        period_s: the window in seconds (GHL 10, Calendly 60).
        name: a label for logs (an account key such as a location id; never a token).
        safety_margin_s: added to the hold time against clock-rate and rounding differences with the
            provider (default ``max(0.1 % of the period, 20 ms)``).
    """

    def __init__(
        self, max_requests: int, period_s: float, *, name: str = "provider", safety_margin_s: float | None = None
    ) -> None:
        if max_requests < 1 or period_s <= 0:
            raise ValueError("max_requests must be ≥ 1 and period_s > 0")
        self.max_requests = max_requests
        self.period_s = float(period_s)
        self.name = name
        self.safety_margin_s = (default_safety_margin_s(period_s) if safety_margin_s is None
                                else float(safety_margin_s))
        self._paused_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._returns: list[float] = []  # monotonic times at which held permits come back

    def __repr__(self) -> str:
        return f"AccountLimiter({self.name!r}, {self.max_requests}/{self.period_s:g}s)"

    @property
    def window_s(self) -> float:
        """How long a permit stays held after its request finished: period plus safety margin (seconds)."""
        return self.period_s + self.safety_margin_s

    def pause(self, seconds: float) -> None:
        """Hold every request of this account for ``seconds`` from now (a 429 told us to wait)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    def _permits(self) -> asyncio.Semaphore:
        """The semaphore of the running loop (rebuilt, with permits still held, when the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            now = time.monotonic()
            self._returns = [t for t in self._returns if t > now]
            semaphore = asyncio.Semaphore(self.max_requests - len(self._returns))
            for at in self._returns:
                loop.call_later(at - now, self._give_back, semaphore, at)
            self._loop, self._semaphore = loop, semaphore
        return self._semaphore

    def _give_back(self, semaphore: asyncio.Semaphore, at: float) -> None:
        if at in self._returns:
            self._returns.remove(at)
        if semaphore is self._semaphore:
            semaphore.release()

    async def acquire(self) -> float:
        """Wait for a permit (and the end of any pause); returns the seconds waited. Pair with :meth:`release`."""
        started = time.monotonic()
        while True:
            delay = self.paused_for()
            if delay > 0:
                await asyncio.sleep(delay)
            permits = self._permits()
            await permits.acquire()
            if self.paused_for() <= 0:
                return time.monotonic() - started
            permits.release()  # a 429 came in while we waited: nothing was sent, wait for the pause

    def release(self) -> None:
        """The request's answer (or failure) arrived: its permit returns ``window_s`` seconds from now."""
        semaphore = self._permits()
        at = time.monotonic() + self.window_s
        self._returns.append(at)
        asyncio.get_running_loop().call_later(self.window_s, self._give_back, semaphore, at)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """``async with limiter.slot() as waited:`` — one request; yields the seconds waited for it."""
        waited = await self.acquire()
        try:
            yield waited
        finally:
            self.release()


@dataclass(frozen=True)
class RateLimit:
    """A provider limit: ``max_requests`` per ``period_s`` seconds."""

    max_requests: int
    period_s: float


#: Documented defaults (docs/providers.md §1.4: GHL burst 100 / 10 s per location; §2.5: Calendly 500 / min per user).
GHL_RATE_LIMIT = RateLimit(100, 10.0)
CALENDLY_RATE_LIMIT = RateLimit(500, 60.0)


#: Builds an account's :class:`RateBudget`: ``(provider, account key, limit) -> budget``.
BudgetFactory = Callable[[str, str, RateLimit], RateBudget]


def in_process_budget(provider: str, account_key: str, limit: RateLimit) -> RateBudget:
    """The default :data:`BudgetFactory`: an :class:`AccountLimiter` of this process only."""
    return AccountLimiter(limit.max_requests, limit.period_s, name=f"{provider}:{account_key}")


class LimiterRegistry:
    """One :class:`RateBudget` per (provider, account key) — create one registry per run and hand it
    to every client of that run, so all their requests share each account's budget (SPEC §6).

    ``budgets`` builds each account's limiter: :func:`in_process_budget` by default (shared within this
    process only); :class:`~appt_pipeline.pipelines.clients.ClientFactory` passes the PostgreSQL-backed one
    when it has a database, so every process shares the budget (docs/operations.md "Rate limits")."""

    def __init__(
        self, *, ghl: RateLimit = GHL_RATE_LIMIT, calendly: RateLimit = CALENDLY_RATE_LIMIT,
        budgets: BudgetFactory = in_process_budget,
    ) -> None:
        self._limits = {"ghl": ghl, "calendly": calendly}
        self._budgets = budgets
        self._limiters: dict[tuple[str, str], RateBudget] = {}

    def get(self, provider: str, account_key: str) -> RateBudget:
        """The limiter of ``provider`` (``"ghl"``/``"calendly"``) account ``account_key`` (created on first use)."""
        key = (provider.lower(), account_key)
        if key not in self._limiters:
            self._limiters[key] = self._budgets(key[0], account_key, self._limits[key[0]])
        return self._limiters[key]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry bounds (seconds). Defaults follow the original's budget (docs/original-system.md §7.3) with jitter.

    Attributes:
        max_attempts: attempts in all for 5xx / network / timeout failures of idempotent requests.
        max_rate_limited_attempts: attempts in all when answered 429.
        backoff_initial_s, backoff_max_s, backoff_jitter_s: exponential back-off
            ``initial · 2^(n-1) + U(0, jitter)``, capped at ``max``.
        rate_limit_jitter_s: random extra wait after a 429's stated delay.
        max_retry_after_s: a 429 asking for a longer wait fails at once (kind ``rate_limited``)
            instead of holding the run (e.g. a daily quota).
        default_retry_after_s: wait after a 429 without ``Retry-After``/``X-RateLimit-Reset``
            (``None`` = the limiter's window).
    """

    max_attempts: int = 4
    max_rate_limited_attempts: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    backoff_jitter_s: float = 0.5
    rate_limit_jitter_s: float = 0.25
    max_retry_after_s: float = 120.0
    default_retry_after_s: float | None = None


def parse_retry_after(
    headers: Mapping[str, str], *, now: datetime | None = None, rate_limit_reset: bool = True
) -> float | None:
    """Seconds to wait from a 429's headers, or ``None`` when they do not say.

    ``Retry-After`` (delta-seconds or an HTTP date; RFC 9110 §10.2.3) first, then — when
    ``rate_limit_reset`` — ``X-RateLimit-Reset`` (Calendly: seconds until the window resets,
    docs/providers.md §2.5; a value that looks like a Unix time is read as one). Negative values become 0.
    A 5xx passes ``rate_limit_reset=False``: Calendly sends that header on every answer, and it says
    when the rate window frees up, not when a failed server comes back.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    raw = lower.get("retry-after")
    if raw is not None:
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    raw = lower.get("x-ratelimit-reset") if rate_limit_reset else None
    if raw is not None:
        try:
            value = float(raw.strip())
        except ValueError:
            return None
        if value >= _EPOCH_THRESHOLD:
            value -= (now or datetime.now(UTC)).timestamp()
        return max(0.0, value)
    return None


class _WaitPolicy:
    """tenacity wait: the provider's stated delay for 429s, exponential back-off with jitter otherwise."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_exponential_jitter(
            multiplier=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.backoff_jitter_s
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after_s is not None:
            return exc.retry_after_s + random.uniform(0, self._policy.rate_limit_jitter_s)
        return self._backoff(state)


class _StopPolicy:
    """tenacity stop: attempt bound by failure kind (429s get more attempts than other failures)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        limit = self._policy.max_attempts
        if isinstance(exc, ProviderError) and exc.kind is ErrorKind.RATE_LIMITED:
            limit = self._policy.max_rate_limited_attempts
        return state.attempt_number >= limit


_MASKED_LOGGERS: set[str] = set()
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]+>")


class _MaskingFilter(logging.Filter):
    """Masks e-mails/phones (also URL-encoded) in httpx's request log lines, whose URL carries the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                a if isinstance(a, int | float) else mask_pii(unquote(str(a))) for a in record.args
            )
        return True


def _install_log_masking() -> None:
    for name in ("httpx",):
        if name not in _MASKED_LOGGERS:
            logging.getLogger(name).addFilter(_MaskingFilter())
            _MASKED_LOGGERS.add(name)


def _provider_message(response: httpx.Response) -> str:
    """The provider's own error text: GHL ``message`` (string or list) / ``error``; Calendly ``title``,
    ``message`` and ``details[].message``; else the first 200 characters of the body."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
        title = _HTML_TITLE.search(text)
        if title:  # a CDN / gateway error page
            text = title.group(1)
        return " ".join(_HTML_TAG.sub(" ", text).split())[:200]
    if not isinstance(body, Mapping):
        return str(body)[:200]
    parts: list[str] = []
    for key in ("title", "message", "error", "error_description"):
        value = body.get(key)
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value)
        if isinstance(value, str | int) and str(value) not in parts:
            parts.append(str(value))
    details = body.get("details")
    if isinstance(details, list):
        for d in details[:3]:
            if isinstance(d, Mapping) and d.get("message"):
                param = f"{d['parameter']}: " if d.get("parameter") else ""
                code = f" ({d['code']})" if d.get("code") else ""
                parts.append(f"{param}{d['message']}{code}")
    return " — ".join(parts)[:300]


class ProviderHttp:
    """Sends one provider's requests under the shared policy; used by the GHL and Calendly clients.

    Args:
        provider: ``"ghl"`` or ``"calendly"`` (labels errors and logs).
        base_url: where requests go, e.g. ``https://services.leadconnectorhq.com`` or a simulator.
        token: Bearer token (kept in a :class:`Secret`; never logged, never in exceptions).
        limiter: the account's shared :class:`RateBudget` (:class:`AccountLimiter` or the PostgreSQL one).
        http: a shared ``httpx.AsyncClient``; when ``None`` one is created and closed by :meth:`aclose`.
        timeout_s: per-attempt timeout in seconds.
        stats: counters to add to (shared per run if you like); a new one when ``None``.
        retry: the :class:`RetryPolicy`.
        default_headers: sent with every request (e.g. ``Accept``).
        allowed_hosts: extra hosts a token may go to; default ``APPT_PROVIDER_HOST_ALLOWLIST``
            (``appt_pipeline.settings.provider_host_allowlist``).

    Provider hosts (README "Provider hosts"): ``base_url`` and the URL of every request are checked with
    :func:`~appt_pipeline.domain.provider_hosts.check_provider_url` before the token is sent; redirects
    are never followed (also with a passed-in client): a 3xx is a ``bad_response`` error.

    Raises:
        ProviderError: kind ``auth`` without a token; kind ``refused`` for a base URL a token may not go to.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        token: str | Secret,
        limiter: RateBudget,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 15.0,
        stats: CallStats | None = None,
        retry: RetryPolicy | None = None,
        default_headers: Mapping[str, str] | None = None,
        allowed_hosts: HostAllowlist | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._token = token if isinstance(token, Secret) else Secret(token)
        if not self._token:
            raise ProviderError(ErrorKind.AUTH, f"{provider}: no API token configured", provider=provider)
        self._allowed_hosts = allowed_hosts if allowed_hosts is not None else provider_host_allowlist()
        self._check_host(self.base_url, "base URL")
        self.limiter = limiter
        self.timeout = httpx.Timeout(timeout_s)
        self.stats = stats if stats is not None else CallStats()
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64), follow_redirects=False
        )
        self._default_headers = dict(default_headers or {})
        _install_log_masking()

    def __repr__(self) -> str:
        return f"ProviderHttp({self.provider!r}, {self.base_url!r}, limiter={self.limiter!r})"

    async def aclose(self) -> None:
        """Close the httpx client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    def _check_host(self, url: str, what: str) -> None:
        """Raise ``ProviderError(kind="refused")`` unless the token may be sent to ``url``."""
        try:
            check_provider_url(
                url, self._allowed_hosts, what=f"{self.provider} {what}", request=what == "request URL"
            )
        except ProviderHostError as exc:
            raise ProviderError(ErrorKind.REFUSED, str(exc), provider=self.provider) from None

    # -- routing ---------------------------------------------------------------------------------

    def url_for(self, url_or_path: str) -> str:
        """The URL to request for a path (``/users/me``) or an absolute URL.

        Absolute URLs under ``base_url`` are used as they are; any other absolute URL — canonical
        provider URIs such as ``https://api.calendly.com/scheduled_events/…`` and pagination links —
        keeps its path and query and is routed to ``base_url`` (SPEC preamble: the configured base URL
        only changes where requests are sent). The token is therefore never sent to another host.
        """
        if url_or_path.startswith(("http://", "https://")):
            if url_or_path == self.base_url or url_or_path.startswith(self.base_url + "/"):
                return url_or_path
            parts = urlsplit(url_or_path)
            return self.base_url + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return self.base_url + (url_or_path if url_or_path.startswith("/") else "/" + url_or_path)

    # -- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url_or_path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send a request under the policy and return the decoded JSON body (``None`` for an empty body).

        Args:
            method: HTTP method.
            url_or_path: a path relative to ``base_url`` or an absolute URL (routed by :meth:`url_for`).
            params: query parameters (``None`` values are dropped).
            json: JSON body.
            headers: extra headers (e.g. GHL ``Version``).
            idempotent: whether 5xx/timeouts may be retried; default: true for GET/HEAD/PUT/DELETE.

        Raises:
            ProviderError: after the allowed retries; ``kind`` says why.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        url = self.url_for(url_or_path)
        path = urlsplit(url).path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        all_headers = {
            **self._default_headers,
            **(headers or {}),
            "Authorization": f"Bearer {self._token.reveal()}",
        }

        async def attempt() -> Any:
            async with self.limiter.slot() as waited:
                self.stats.limiter_wait_s += waited
                self.stats.requests += 1
                return await send()

        async def send() -> Any:
            self._check_host(url, "request URL")  # again before every request carrying the token
            try:
                response = await self._http.request(
                    method, url, params=query or None, json=json, headers=all_headers, timeout=self.timeout,
                    follow_redirects=False,  # a 3xx is an error (see _decode), never followed with the token
                )
            except httpx.TimeoutException as exc:
                never_sent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                raise self._error(
                    ErrorKind.TIMEOUT, method, path, f"no answer within {self.timeout.read}s ({type(exc).__name__})",
                    retryable=idempotent or never_sent,
                ) from None
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError)
                raise self._error(
                    ErrorKind.NETWORK, method, path, f"{type(exc).__name__}: {exc}", retryable=idempotent or never_sent
                ) from None
            return self._decode(response, method, path, idempotent=idempotent)

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, ProviderError) and exc.retryable),
            stop=_StopPolicy(self.retry),
            wait=_WaitPolicy(self.retry),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except ProviderError as exc:
            self.stats.errors += 1
            self.stats.errors_by_kind[exc.kind.value] += 1
            raise

    def _decode(self, response: httpx.Response, method: str, path: str, *, idempotent: bool) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            if not response.content or status == 204:
                return None
            try:
                return response.json()
            except ValueError:
                raise self._error(
                    ErrorKind.BAD_RESPONSE, method, path, "answer is not JSON", status_code=status
                ) from None
        detail = _provider_message(response)
        if status == 429:
            self.stats.rate_limited += 1
            wait = parse_retry_after(response.headers)
            if wait is None:
                wait = self.retry.default_retry_after_s
            if wait is None:
                wait = self.limiter.window_s
            too_long = wait > self.retry.max_retry_after_s
            if not too_long and method != "POST":
                # the provider told the account to wait. A POST's 429 may be its endpoint's own quota
                # (Calendly POST /invitees, docs/providers.md §2.5): then only that request waits.
                self.limiter.pause(wait)
            raise self._error(
                ErrorKind.RATE_LIMITED, method, path, detail or "too many requests", status_code=status,
                retry_after_s=None if too_long else wait, retryable=not too_long,
            )
        if status in (401, 403):
            raise self._error(ErrorKind.AUTH, method, path, detail, status_code=status)
        if status in (404, 410):
            raise self._error(ErrorKind.NOT_FOUND, method, path, detail, status_code=status)
        if status >= 500:
            retry_after = parse_retry_after(response.headers, rate_limit_reset=False)
            if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                retry_after = None
            raise self._error(
                ErrorKind.SERVER, method, path, detail, status_code=status, retry_after_s=retry_after,
                retryable=idempotent,
            )
        if 400 <= status < 500:
            raise self._error(ErrorKind.REFUSED, method, path, detail, status_code=status)
        if 300 <= status < 400:
            detail = "redirect not followed (a provider token never follows a redirect)"
        raise self._error(ErrorKind.BAD_RESPONSE, method, path, detail, status_code=status)

    def _error(
        self,
        kind: ErrorKind,
        method: str,
        path: str,
        detail: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        retryable: bool = False,
    ) -> ProviderError:
        token = self._token.reveal()
        status = f" → HTTP {status_code}" if status_code is not None else ""
        safe_path = unquote(path)
        text = f"{self.provider} {method} {safe_path}{status}: {kind.value}" + (f" — {detail}" if detail else "")
        if token:
            text = text.replace(token, "[redacted-token]")
        return ProviderError(
            kind, text, provider=self.provider, status_code=status_code, method=method, path=mask_pii(safe_path),
            retry_after_s=retry_after_s, retryable=retryable,
        )

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "%s retry %d after %s (waiting %.2fs)", self.provider, state.attempt_number, exc, wait
        )


class ProviderClient:
    """What every provider client shares: its :class:`ProviderHttp` (``self._http``), the call counters,
    the account limiter, and closing as an async context manager."""

    _http: ProviderHttp

    @property
    def stats(self) -> CallStats:
        """This client's call counters (shared when a ``stats`` object was passed in)."""
        return self._http.stats

    @property
    def limiter(self) -> RateBudget:
        return self._http.limiter

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
