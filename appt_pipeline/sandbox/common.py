"""Machinery shared by the provider simulators: rate limits, accounting, faults, ids, time, paging.

Nothing here knows a provider's JSON shapes; ``ghl.py`` and ``calendly.py`` supply those. All
timestamps are timezone-aware UTC ``datetime`` values unless named otherwise; durations are seconds.
Wall-clock instants used for rate limiting and accounting are ``time.time()`` floats (epoch seconds),
the same clock the ``limits`` package uses for its moving windows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import string
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default simulator clock: the current time, UTC."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An HTTP error answer with a provider-shaped JSON body (rendered by the app's handler)."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


class SimulatorError(ValueError):
    """A Python admin call that cannot be applied (unknown id, slot not free, bad argument)."""


# --------------------------------------------------------------------------------------------
# Deterministic ids
# --------------------------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits


class IdFactory:
    """Reproducible ids from one seed (thread-safe).

    GHL ids look like ``5fzTTNEKe7xc3TrBv3wj`` (20 alphanumerics); Calendly uuids like
    ``785113db-e1d3-49d7-a2fe-6b567e670325``. The same seed and the same sequence of calls give
    the same ids, so tests and demos are reproducible.
    """

    def __init__(self, seed: int | str = 0):
        self._rng = random.Random(f"ids:{seed}")
        self._trace_rng = random.Random(f"trace:{seed}")
        self._lock = threading.Lock()

    def ghl_id(self) -> str:
        with self._lock:
            return "".join(self._rng.choice(_ALNUM) for _ in range(20))

    def uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def trace_id(self) -> str:
        """A GHL-style ``traceId`` (uuid4 text); separate stream so tracing never shifts entity ids."""
        with self._lock:
            return str(uuid.UUID(int=self._trace_rng.getrandbits(128), version=4))


# --------------------------------------------------------------------------------------------
# Time formatting and parsing
# --------------------------------------------------------------------------------------------


def as_utc(value: datetime | str) -> datetime:
    """``datetime`` or ISO-8601 text (``Z``/offset; naive = UTC) → aware UTC datetime."""
    if isinstance(value, str):
        value = parse_iso(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (``2021-06-23T03:30:00+05:30``, ``...Z``, fractions); naive means UTC.

    Raises ``ValueError`` on anything else (date-only strings included).
    """
    raw = text.strip()
    if len(raw) < 16 or raw[10] not in "Tt ":
        raise ValueError(f"not an ISO-8601 date-time: {text!r}")
    value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in "Zz" else raw)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def iso_ms_z(value: datetime) -> str:
    """UTC with milliseconds and ``Z``: ``2026-07-17T09:41:05.921Z`` (GHL ``dateAdded``)."""
    v = value.astimezone(UTC)
    return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"


def iso_us_z(value: datetime) -> str:
    """UTC with microseconds and ``Z``: ``2019-08-24T14:15:22.123456Z`` (Calendly times)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_offset(value: datetime, tz: ZoneInfo) -> str:
    """Local time with the zone's offset, whole seconds: ``2026-08-01T12:00:00+02:00`` (GHL times)."""
    return value.astimezone(tz).replace(microsecond=0).isoformat()


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def from_epoch_ms(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# --------------------------------------------------------------------------------------------
# Working hours and slot grids
# --------------------------------------------------------------------------------------------

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

WorkingHours = dict[str, list[tuple[str, str]]]


def default_working_hours() -> WorkingHours:
    """Monday–Friday 09:00–17:00 local time (a typical provider default)."""
    return {d: [("09:00", "17:00")] for d in WEEKDAYS[:5]}


def _hhmm(text: str) -> dtime:
    hours, minutes = text.split(":")
    return dtime(int(hours), int(minutes))


def slot_grid(
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    hours: WorkingHours,
    duration: timedelta,
    interval: timedelta,
) -> Iterator[datetime]:
    """Slot starts (aware, UTC) in ``[start, end)`` on the working-hours grid of zone ``tz``.

    For each local day, slots start at the opening time and step by ``interval`` while the whole
    ``duration`` fits before the closing time (e.g. 09:00, 09:30 … 16:30 for 30-minute slots).
    """
    first_day = start.astimezone(tz).date() - timedelta(days=1)
    last_day = end.astimezone(tz).date() + timedelta(days=1)
    day = first_day
    while day <= last_day:
        for open_text, close_text in hours.get(WEEKDAYS[day.weekday()], []):
            slot = datetime.combine(day, _hhmm(open_text), tzinfo=tz)
            close = datetime.combine(day, _hhmm(close_text), tzinfo=tz)
            while slot + duration <= close:
                utc_slot = slot.astimezone(UTC)
                if start <= utc_slot < end:
                    yield utc_slot
                slot = slot + interval
        day += timedelta(days=1)


def on_grid(value: datetime, tz: ZoneInfo, hours: WorkingHours, duration: timedelta, interval: timedelta) -> bool:
    """True when ``value`` is one of the working-hours slot starts of its local day."""
    v = value.astimezone(UTC)
    return v in set(slot_grid(v - timedelta(hours=1), v + timedelta(hours=1), tz, hours, duration, interval))


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


# --------------------------------------------------------------------------------------------
# Rate limits (the `limits` package's moving window)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """``amount`` requests per ``seconds`` (a moving window, unless ``fixed``)."""

    amount: int
    seconds: int
    fixed: bool = False


@dataclass(frozen=True)
class QuotaState:
    """One quota after a request: limit, what is left and when room frees up.

    ``reset_in`` is seconds until the oldest request in the window leaves it (moving window) or
    until the window ends (fixed window); for an empty window it is the full window length.
    """

    quota: Quota
    allowed: bool
    remaining: int
    reset_in: float


class AccountLimiter:
    """Per-account request quotas enforced with ``limits`` (moving or fixed windows, in memory).

    ``acquire(account, quotas)`` is all-or-nothing: it first tests every quota and only then
    records the request in all of them, so a request refused by one quota consumes none.
    Thread-safe (one lock around test+hit).
    """

    def __init__(self) -> None:
        self._storage = MemoryStorage()
        self._moving = MovingWindowRateLimiter(self._storage)
        self._fixed = FixedWindowRateLimiter(self._storage)
        self._lock = threading.Lock()

    def _strategy(self, quota: Quota) -> MovingWindowRateLimiter | FixedWindowRateLimiter:
        return self._fixed if quota.fixed else self._moving

    @staticmethod
    def _item(quota: Quota, name: str) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(quota.amount, quota.seconds, namespace=f"sim:{name}")

    def _state(self, quota: Quota, name: str, account: str, allowed: bool) -> QuotaState:
        item = self._item(quota, name)
        reset_at, remaining = self._strategy(quota).get_window_stats(item, account)
        remaining = max(0, min(quota.amount, remaining))
        reset_in = float(quota.seconds) if remaining >= quota.amount else max(0.0, reset_at - time.time())
        return QuotaState(quota, allowed, remaining, reset_in)

    def _entry_time(self, key: str, default: float) -> float:
        """The timestamp the moving window stored for the request just recorded.

        Accounting uses the limiter's own instant, so a peak computed from accounting can never
        disagree with the limiter by the microseconds between two ``time.time()`` calls. (Reads the
        ``MemoryStorage`` entry list, newest first; falls back to ``default``.)
        """
        events = getattr(self._storage, "events", {}).get(key)
        return getattr(events[0], "atime", default) if events else default

    def acquire(self, account: str, quotas: dict[str, Quota]) -> tuple[bool, dict[str, QuotaState], float]:
        """Try to take one request from every quota of ``account``.

        Returns ``(allowed, states by quota name, time.time() of the decision)``; for an accepted
        request the instant is the one the moving window recorded.
        """
        with self._lock:
            blocked = [name for name, q in quotas.items() if not self._strategy(q).test(self._item(q, name), account)]
            at, stamped = time.time(), False
            if not blocked:
                for name, q in quotas.items():
                    self._strategy(q).hit(self._item(q, name), account)
                    if not q.fixed and not stamped:  # the first moving window (the main quota) stamps
                        at, stamped = self._entry_time(self._item(q, name).key_for(account), at), True
            states = {name: self._state(q, name, account, allowed=name not in blocked) for name, q in quotas.items()}
            return not blocked, states, at

    def peek(self, account: str, name: str, quota: Quota) -> QuotaState:
        with self._lock:
            return self._state(quota, name, account, allowed=True)

    def reset(self) -> None:
        with self._lock:
            self._storage.reset()


# --------------------------------------------------------------------------------------------
# Request accounting
# --------------------------------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One API request as the simulator saw it (``at`` = ``time.time()``, seconds)."""

    at: float
    account: str | None
    method: str
    path: str
    status: int
    outcome: str  # "accepted" | "canned" | "rate_limited" | "unauthenticated" | "rejected"
    query: str = ""  # the raw query string of an accepted request (chunked ranges are visible in tests)


class Accounting:
    """Per-account timestamps of accepted requests and of 429s, for tests and benchmarks.

    *Accepted* = the request passed authentication and the rate limiter, i.e. it consumed quota
    (it may still have been answered with an injected 5xx/timeout or a 4xx from the handler).
    *Rate limited* = answered 429, by the limiter or by an injected 429 burst. Timestamps are
    ``time.time()`` seconds taken right after the limiter's decision.
    """

    def __init__(self, log_size: int = 200_000):
        self._lock = threading.Lock()
        self._accepted: dict[str, list[float]] = {}
        self._limited: dict[str, list[float]] = {}
        self.log: deque[RequestRecord] = deque(maxlen=log_size)

    def record_accepted(self, account: str, at: float) -> None:
        with self._lock:
            self._accepted.setdefault(account, []).append(at)

    def record_limited(self, account: str, at: float) -> None:
        with self._lock:
            self._limited.setdefault(account, []).append(at)

    def record(self, rec: RequestRecord) -> None:
        self.log.append(rec)

    def accepted(self, account: str) -> list[float]:
        with self._lock:
            return sorted(self._accepted.get(account, []))

    def rate_limited(self, account: str) -> list[float]:
        with self._lock:
            return sorted(self._limited.get(account, []))

    def accounts(self) -> list[str]:
        with self._lock:
            return sorted(set(self._accepted) | set(self._limited))

    def max_requests_in_window(self, account: str, seconds: float) -> int:
        """The largest number of accepted requests of ``account`` inside any window of ``seconds``.

        Windows are half-open ``[t, t + seconds)`` and slide over every accepted timestamp, so the
        result is the true peak that a provider's moving-window limiter would have seen.
        """
        stamps = self.accepted(account)
        best = 0
        for i, start in enumerate(stamps):
            j = bisect_left(stamps, start + seconds, lo=i)
            best = max(best, j - i)
        return best

    def count_between(self, account: str, start: float, end: float) -> int:
        stamps = self.accepted(account)
        return bisect_right(stamps, end) - bisect_left(stamps, start)

    def summary(self, account: str | None = None, window: float | None = None) -> dict[str, Any]:
        accounts = [account] if account else self.accounts()
        out: dict[str, Any] = {}
        for acc in accounts:
            stamps = self.accepted(acc)
            item: dict[str, Any] = {
                "accepted": len(stamps),
                "rate_limited": len(self.rate_limited(acc)),
                "first": stamps[0] if stamps else None,
                "last": stamps[-1] if stamps else None,
            }
            if window:
                item["max_in_window"] = self.max_requests_in_window(acc, window)
                item["window_seconds"] = window
            out[acc] = item
        return out

    def reset(self) -> None:
        with self._lock:
            self._accepted.clear()
            self._limited.clear()
            self.log.clear()


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


@dataclass
class FaultSettings:
    """What goes wrong, per simulator. Rates are probabilities in [0, 1]; times are seconds.

    - ``error_rate``: share of accepted requests answered with a 5xx drawn from ``error_statuses``
      (500 carries the provider's JSON error body; 502/503/504 an HTML gateway page, as a CDN
      would). ``error_phase`` ``"before"`` (default) fails the request before it touches state;
      ``"after"`` applies a write and *then* answers 5xx (the client cannot know it succeeded).
    - ``latency``: fixed extra delay on every accepted request, plus uniform ``latency_jitter``.
    - ``timeout_rate``: share of accepted requests that stall for ``timeout_seconds`` (set it above
      the client's timeout) before being answered normally.
    - ``seed``: seeds the random draws, so a given sequence of requests meets the same faults.
    - ``only_paths``: when non-empty, faults apply only to request paths starting with one of them.
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    error_phase: str = "before"
    latency: float = 0.0
    latency_jitter: float = 0.0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    seed: int = 0
    only_paths: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


@dataclass
class Burst429:
    """Answer 429 to the next ``remaining`` requests and/or until ``until`` (``time.time()``)."""

    remaining: int | None
    until: float | None
    account: str | None


@dataclass
class CannedAnswer:
    """A fixed answer for requests whose path starts with ``path_prefix``: ``status`` with ``body`` (a JSON
    value, or a ``str`` sent as ``text/plain``), for the next ``remaining`` requests (``None``: until
    cleared). ``served`` counts the requests answered so."""

    path_prefix: str
    status: int
    body: Any
    remaining: int | None = None
    served: int = 0


@dataclass
class FaultDecision:
    delay: float = 0.0
    error_status: int | None = None
    error_phase: str = "before"


class FaultInjector:
    """Decides, per request, the injected faults (thread-safe, deterministic from the seed)."""

    def __init__(self, settings: FaultSettings | None = None):
        self._lock = threading.Lock()
        self.settings = settings or FaultSettings()
        self._rng = random.Random(self.settings.seed)
        self._bursts: list[Burst429] = []
        self._canned: list[CannedAnswer] = []
        self.injected: dict[str, int] = {"errors": 0, "timeouts": 0, "rate_limited": 0, "delayed": 0, "canned": 0}

    def configure(self, **changes: Any) -> FaultSettings:
        """Change some settings (e.g. ``error_rate=0.2``); a new ``seed`` restarts the draws.

        Invalid values raise :class:`SimulatorError` and change nothing.
        """
        known = {f.name for f in fields(FaultSettings)}
        unknown = set(changes) - known
        if unknown:
            raise SimulatorError(f"unknown fault setting(s) {sorted(unknown)}")
        converted = {
            k: tuple(v) if k in ("error_statuses", "only_paths") and v is not None else v for k, v in changes.items()
        }
        with self._lock:
            new = replace(self.settings, **converted)
            if new.error_phase not in ("before", "after"):
                raise SimulatorError("error_phase must be 'before' or 'after'")
            if not (0 <= new.error_rate <= 1 and 0 <= new.timeout_rate <= 1):
                raise SimulatorError("error_rate and timeout_rate must be between 0 and 1")
            if new.error_rate and not new.error_statuses:
                raise SimulatorError("error_statuses must not be empty")
            self.settings = new
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            return replace(new)

    def clear(self, *, counters: bool = False) -> None:
        """No faults at all: settings back to defaults (same seed), bursts dropped; the
        ``injected`` counters are zeroed only when ``counters``."""
        with self._lock:
            seed = self.settings.seed
            self.settings = FaultSettings(seed=seed)
            self._rng = random.Random(seed)
            self._bursts.clear()
            self._canned.clear()
            if counters:
                self.injected = dict.fromkeys(self.injected, 0)

    def burst_429(self, count: int | None = None, seconds: float | None = None, account: str | None = None) -> None:
        """The next ``count`` requests (and/or all requests for ``seconds``) get 429.

        ``account`` limits the burst to one location / user. The answers carry the provider's
        rate-limit headers with ``Remaining: 0`` and a reset equal to the time left in the burst
        (at least one second).
        """
        if count is None and seconds is None:
            raise SimulatorError("burst_429 needs count and/or seconds")
        with self._lock:
            until = time.time() + seconds if seconds is not None else None
            self._bursts.append(Burst429(count, until, account))

    def can(self, path_prefix: str, status: int, body: Any, count: int | None = None) -> CannedAnswer:
        """Answer requests whose path starts with ``path_prefix`` with ``status`` and ``body`` (after
        authentication and the rate limiter: they consume quota), ``count`` times or until :meth:`clear`.
        The newest canned answer for a path wins. Raises :class:`SimulatorError` for a bad status or count."""
        if not 100 <= int(status) <= 599:
            raise SimulatorError("status must be an HTTP status code")
        if count is not None and count < 1:
            raise SimulatorError("count must be at least 1")
        if not path_prefix.startswith("/"):
            raise SimulatorError("path_prefix must start with '/'")
        answer = CannedAnswer(path_prefix, int(status), body, count)
        with self._lock:
            self._canned.insert(0, answer)
        return answer

    def canned_for(self, path: str) -> CannedAnswer | None:
        """The canned answer for ``path`` (one use consumed), else ``None``."""
        with self._lock:
            self._canned = [c for c in self._canned if c.remaining is None or c.remaining > 0]
            for answer in self._canned:
                if path.startswith(answer.path_prefix):
                    if answer.remaining is not None:
                        answer.remaining -= 1
                    answer.served += 1
                    self.injected["canned"] += 1
                    return answer
            return None

    def check_burst(self, account: str | None) -> float | None:
        """Seconds to announce as reset when an active 429 burst covers ``account``, else ``None``."""
        with self._lock:
            now = time.time()
            self._bursts = [
                b
                for b in self._bursts
                if (b.remaining is None or b.remaining > 0) and (b.until is None or b.until > now)
            ]
            for burst in self._bursts:
                if burst.account is None or burst.account == account:
                    if burst.remaining is not None:
                        burst.remaining -= 1
                    self.injected["rate_limited"] += 1
                    return max(1.0, (burst.until - now) if burst.until else 1.0)
            return None

    def decide(self, path: str) -> FaultDecision:
        """Draw latency / timeout / 5xx for one accepted request (deterministic from the seed)."""
        with self._lock:
            s = self.settings
            if s.only_paths and not any(path.startswith(p) for p in s.only_paths):
                return FaultDecision()
            decision = FaultDecision(error_phase=s.error_phase)
            if s.latency or s.latency_jitter:
                decision.delay = s.latency + (self._rng.uniform(0, s.latency_jitter) if s.latency_jitter else 0.0)
                self.injected["delayed"] += 1
            if s.timeout_rate and self._rng.random() < s.timeout_rate:
                decision.delay += s.timeout_seconds
                self.injected["timeouts"] += 1
            if s.error_rate and self._rng.random() < s.error_rate:
                decision.error_status = self._rng.choice(s.error_statuses)
                self.injected["errors"] += 1
            return decision


GATEWAY_PAGES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def gateway_html(status: int) -> str:
    """The HTML page a CDN / load balancer serves for a 5xx (not JSON: clients must cope)."""
    title = GATEWAY_PAGES.get(status, f"{status} Error")
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    )


class Stopper:
    """Lets long injected delays end early when the server stops (so stop() is quick)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    async def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))


# --------------------------------------------------------------------------------------------
# Keyset pagination (Calendly)
# --------------------------------------------------------------------------------------------


def encode_token(direction: str, key: Sequence[Any]) -> str:
    raw = json.dumps([direction, list(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[str, list[Any]]:
    """Inverse of :func:`encode_token`; ``ValueError`` for anything not made by it."""
    try:
        padded = token + "=" * (-len(token) % 4)
        direction, key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError("invalid page token") from exc
    if direction not in ("n", "p") or not isinstance(key, list):
        raise ValueError("invalid page token")
    return direction, key


@dataclass
class Page:
    items: list[Any]
    next_token: str | None
    previous_token: str | None


def keyset_page(
    items: Iterable[Any], key: Callable[[Any], list[Any]], count: int, token: str | None, descending: bool
) -> Page:
    """One page of ``items`` ordered by ``key`` (unique; asc or desc) after/before a token.

    Tokens carry the sort key of the page edge, not an offset, so rows inserted or removed between
    two page requests never make a client skip or repeat the rows it has not seen yet.
    """
    ordered = sorted(items, key=key, reverse=descending)
    keys = [key(i) for i in ordered]

    def after(k: list[Any], edge: list[Any]) -> bool:
        return k < edge if descending else k > edge

    if token is None:
        start = 0
    else:
        direction, edge = decode_token(token)
        if direction == "n":
            start = next((i for i, k in enumerate(keys) if after(k, edge)), len(keys))
        else:
            end = next((i for i, k in enumerate(keys) if not after(edge, k)), len(keys))
            start = max(0, end - count)
            page = ordered[start:end]
            return Page(
                page,
                encode_token("n", keys[end - 1]) if page and end < len(keys) else None,
                encode_token("p", keys[start]) if page and start > 0 else None,
            )
    page = ordered[start : start + count]
    end = start + len(page)
    return Page(
        page,
        encode_token("n", keys[end - 1]) if page and end < len(keys) else None,
        encode_token("p", keys[start]) if page and start > 0 else None,
    )


# --------------------------------------------------------------------------------------------
# Provider events (kept for a later webhook-delivery feature)
# --------------------------------------------------------------------------------------------


class ProviderEvent(NamedTuple):
    """A change the real provider would announce by webhook.

    ``name``: GHL ``AppointmentCreate|AppointmentUpdate|AppointmentDelete``; Calendly
    ``invitee.created|invitee.canceled|invitee_no_show.created|invitee_no_show.deleted``.
    ``payload``: the webhook body (GHL ``{type, locationId, appointment}``) or the Calendly
    ``payload`` object (an Invitee with ``scheduled_event`` embedded). ``account``: location id /
    user URI. ``at``: when it happened (UTC).
    """

    name: str
    payload: dict[str, Any]
    account: str
    at: datetime


class EventLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[ProviderEvent] = []

    def emit(self, event: ProviderEvent) -> None:
        with self._lock:
            self._events.append(event)

    def list(self) -> list[ProviderEvent]:
        with self._lock:
            return list(self._events)

    def drain(self) -> list[ProviderEvent]:
        with self._lock:
            out, self._events = self._events, []
            return out


def coerce(cls: type, value: Any) -> Any:
    """Build dataclass ``cls`` from a dict (unknown keys rejected) or pass an instance through."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise SimulatorError(f"expected {cls.__name__} or dict, got {type(value).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise SimulatorError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    return cls(**value)


def day_range(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


__all__ = [
    "AccountLimiter",
    "Accounting",
    "ApiError",
    "Clock",
    "EventLog",
    "FaultInjector",
    "FaultSettings",
    "IdFactory",
    "ProviderEvent",
    "Quota",
    "QuotaState",
    "RequestRecord",
    "SimulatorError",
]
