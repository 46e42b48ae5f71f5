"""Provider request permits shared through PostgreSQL (issue 13 item 3b; docs/operations.md "Rate limits").

Tables ``provider_rate_accounts`` and ``provider_rate_permits`` (``sql/0013_provider_rate_permits.sql``). One
account = one provider budget (a GHL location, a Calendly user) with ``max_requests`` permit rows, slot
``0 … N-1``. A permit is free when its ``held_until`` has passed on the **database clock**
(``clock_timestamp()``), the one clock every process and machine shares. A request takes a permit before it
is sent (``held_until`` = now + in-flight lease, so a process that dies mid-request frees it when the lease
ends) and gives it back when its answer arrived (``held_until`` = now + the window): the same "held from send
until a window after the answer" rule as the in-process
:class:`~appt_pipeline.providers.http.AccountLimiter`, across processes.

Each function is one short transaction of one or two statements on the caller's connection (no row is
locked beyond it: ``FOR UPDATE SKIP LOCKED`` picks a free permit, so concurrent takers never wait on each
other). Account keys are :func:`account_key` values: provider and a SHA-256 prefix of the account id — no
token, no e-mail, no raw URI at rest.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

#: Providers with a shared budget (the CHECK of ``provider_rate_accounts.account_key`` lists the same).
PROVIDERS = ("ghl", "calendly")

_ENSURE_ACCOUNT = sa.text(
    "INSERT INTO provider_rate_accounts (account_key) VALUES (:key) ON CONFLICT (account_key) DO NOTHING"
)
_ENSURE_PERMITS = sa.text(
    "INSERT INTO provider_rate_permits (account_key, slot)"
    " SELECT :key, g FROM generate_series(0, CAST(:n AS integer) - 1) AS g"
    " ON CONFLICT (account_key, slot) DO NOTHING"
)

#: Take one free permit of the account (none while the account is paused) and say how long until one frees.
_TAKE = sa.text("""
WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS t),
account AS (SELECT paused_until FROM provider_rate_accounts WHERE account_key = :key),
pick AS (
    SELECT p.slot FROM provider_rate_permits AS p, clock
    WHERE p.account_key = :key AND p.slot < :n AND p.held_until <= clock.t
      AND NOT EXISTS (SELECT 1 FROM account WHERE account.paused_until > clock.t)
    LIMIT 1
    FOR UPDATE OF p SKIP LOCKED
),
taken AS (
    UPDATE provider_rate_permits AS p
    SET held_until = (SELECT t FROM clock) + CAST(:lease_s AS double precision) * interval '1 second'
    FROM pick WHERE p.account_key = :key AND p.slot = pick.slot
    RETURNING p.slot
)
SELECT (SELECT slot FROM taken) AS slot,
       (SELECT count(*) FROM provider_rate_permits WHERE account_key = :key AND slot < :n) AS permits,
       extract(epoch FROM greatest(
           (SELECT paused_until FROM account),
           (SELECT min(held_until) FROM provider_rate_permits WHERE account_key = :key AND slot < :n),
           (SELECT t FROM clock)
       ) - (SELECT t FROM clock))::double precision AS wait_s
""")

_RETURN = sa.text(
    "UPDATE provider_rate_permits"
    " SET held_until = clock_timestamp() + CAST(:hold_s AS double precision) * interval '1 second'"
    " WHERE account_key = :key AND slot = :slot"
)
_PAUSE = sa.text(
    "UPDATE provider_rate_accounts"
    " SET paused_until = greatest(paused_until,"
    "                             clock_timestamp() + CAST(:pause_s AS double precision) * interval '1 second')"
    " WHERE account_key = :key"
)


def account_key(provider: str, account_id: str) -> str:
    """``"<provider>:<32 hex>"``: the provider (``ghl``/``calendly``) and the first 128 bits of the SHA-256 of
    the account id (GHL location id, Calendly user URI). Raises ValueError for another provider or a blank id."""
    name = provider.lower()
    if name not in PROVIDERS:
        raise ValueError(f"no shared rate budget for provider {provider!r}")
    if not (account_id or "").strip():
        raise ValueError("account id is blank")
    return f"{name}:{hashlib.sha256(account_id.strip().encode()).hexdigest()[:32]}"


def ensure_permits(conn: sa.Connection, key: str, max_requests: int) -> None:
    """Create the account row and permits ``0 … max_requests-1`` that do not exist yet (idempotent, set-based;
    commits). Raises ValueError when ``max_requests`` < 1."""
    if max_requests < 1:
        raise ValueError("max_requests must be ≥ 1")
    with conn.begin():
        conn.execute(_ENSURE_ACCOUNT, {"key": key})
        conn.execute(_ENSURE_PERMITS, {"key": key, "n": max_requests})


def take_permit(conn: sa.Connection, key: str, max_requests: int, lease_s: float) -> tuple[int | None, float, int]:
    """Try to take a free permit among slots ``0 … max_requests-1`` for ``lease_s`` seconds (commits).

    Returns ``(slot or None, wait_s, permits)``: the slot taken (``None`` when none is free or the account is
    paused), the seconds until the earliest permit frees or the pause ends (0 when one may be free now), and
    how many permit rows the account has below ``max_requests`` (0: call :func:`ensure_permits`).
    """
    with conn.begin():
        row = conn.execute(_TAKE, {"key": key, "n": max_requests, "lease_s": lease_s}).one()
    return row.slot, max(0.0, float(row.wait_s or 0.0)), int(row.permits)


def return_permit(conn: sa.Connection, key: str, slot: int, hold_s: float, *, pause_s: float = 0.0) -> None:
    """The request on ``slot`` was answered: the permit frees ``hold_s`` seconds from now (database clock). With
    ``pause_s`` > 0 the whole account also pauses that long (a 429 told it to wait). One transaction."""
    with conn.begin():
        conn.execute(_RETURN, {"key": key, "slot": slot, "hold_s": hold_s})
        if pause_s > 0:
            conn.execute(_PAUSE, {"key": key, "pause_s": pause_s})


def pause_account(conn: sa.Connection, key: str, pause_s: float) -> None:
    """Pause every request of the account for ``pause_s`` seconds from now (never shortens a pause; commits)."""
    with conn.begin():
        conn.execute(_PAUSE, {"key": key, "pause_s": pause_s})
