"""Per-workspace verification keys for the intake service, cached with a TTL (SPEC §1, §7, §11).

One query per cache miss reads the workspace row and its encrypted webhook secrets
(``calendly_webhook_signing_key``, ``ghl_webhook_public_key``, ``ghl_webhook_legacy_public_key``);
they are decrypted with ``APPT_SECRET_KEY`` and the public keys parsed once
(:func:`~appt_pipeline.domain.signatures.load_public_key`). Found workspaces stay cached
``cache_ttl_s`` (30 s), unknown ones ``negative_cache_ttl_s`` (5 s), so the hot path does no
database lookup; a workspace without any key yet is cached only ``negative_cache_ttl_s`` too (it is
probably being set up). A rotated key is therefore used at the latest ``cache_ttl_s`` after it is
stored (or at once after :meth:`WorkspaceDirectory.invalidate`). Concurrent misses for one workspace
share a single query.

Key material lives only in :class:`WorkspaceKeys` objects, whose ``repr`` hides it; it is never
logged or returned.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from cachetools import TLRUCache
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from appt_pipeline.domain.signatures import GhlKeys, load_public_key
from appt_pipeline.domain.vocab import Provider, SecretName
from appt_pipeline.service.db import Database

log = logging.getLogger(__name__)

CALENDLY_SIGNING_KEY = SecretName.CALENDLY_WEBHOOK_SIGNING_KEY
GHL_PUBLIC_KEY = SecretName.GHL_WEBHOOK_PUBLIC_KEY
GHL_LEGACY_PUBLIC_KEY = SecretName.GHL_WEBHOOK_LEGACY_PUBLIC_KEY
_SECRET_NAMES = [CALENDLY_SIGNING_KEY, GHL_PUBLIC_KEY, GHL_LEGACY_PUBLIC_KEY]
_PROVIDER_OF = {CALENDLY_SIGNING_KEY: Provider.CALENDLY, GHL_PUBLIC_KEY: Provider.GHL,
                GHL_LEGACY_PUBLIC_KEY: Provider.GHL}

#: Longest workspace id looked up; longer ids (and ids with NUL, which PostgreSQL text cannot hold) are
#: unknown without a query.
MAX_WORKSPACE_ID_CHARS = 200

_LOOKUP_SQL = """
SELECT w.ghl_location_id, s.name, s.ciphertext
FROM workspaces w
LEFT JOIN workspace_secrets s ON s.workspace_id = w.id AND s.name = ANY(%(names)s)
WHERE w.id = %(id)s
"""

#: Every workspace's stored webhook secrets, for :meth:`WorkspaceDirectory.key_health` (``/health``).
_ALL_KEYS_SQL = """
SELECT w.id, w.ghl_location_id, s.name, s.ciphertext
FROM workspace_secrets s JOIN workspaces w ON w.id = s.workspace_id
WHERE s.name = ANY(%(names)s)
ORDER BY w.id
"""

#: :meth:`WorkspaceDirectory.cached` result for "not in the cache".
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class WorkspaceKeys:
    """What the intake needs of one existing workspace.

    ``calendly_signing_key``: HMAC key (text) or ``None``; ``ghl``: Ed25519 and optional legacy RSA
    public keys; ``ghl_location_id``: the workspace's GHL location (``None`` when not set).
    ``config_errors``: per provider, why a stored webhook secret of that provider cannot be used
    (``secret_undecryptable`` — wrong ``APPT_SECRET_KEY`` — or ``invalid_public_key``). Only that provider's
    deliveries are refused (``webhook_key_invalid``, with the status that makes it retry while an operator
    fixes the key); the other provider's keep flowing.
    """

    workspace_id: str
    ghl_location_id: str | None
    calendly_signing_key: str | None = field(default=None, repr=False)
    ghl: GhlKeys = field(default_factory=lambda: GhlKeys(None, None), repr=False)
    config_errors: dict[Provider, str] = field(default_factory=dict)

    def config_error(self, provider: Provider) -> str | None:
        """Why ``provider``'s stored webhook key cannot be used, or ``None``."""
        return self.config_errors.get(provider)

    @property
    def has_keys(self) -> bool:
        """True when at least one verification key is configured."""
        return bool(self.calendly_signing_key or self.ghl.ed25519 or self.ghl.legacy_rsa)


@dataclass(frozen=True)
class KeyHealth:
    """Outcome of one scan of every workspace's stored webhook keys: per provider, how many workspaces hold a
    key that cannot be used (undecryptable with ``APPT_SECRET_KEY``, or not a valid public key). Counts only:
    ``/health`` is unauthenticated, so no workspace ids."""

    broken: dict[Provider, int]

    @property
    def ok(self) -> bool:
        return not any(self.broken.values())


def _key_health(rows: list[tuple[Any, ...]], fernet: Fernet) -> KeyHealth:
    by_workspace: dict[str, list[tuple[Any, ...]]] = {}
    for workspace_id, *rest in rows:
        by_workspace.setdefault(workspace_id, []).append(tuple(rest))
    broken = dict.fromkeys(Provider, 0)
    for workspace_id, ws_rows in by_workspace.items():
        for provider in _keys_from_rows(workspace_id, ws_rows, fernet, quiet=True).config_errors:
            broken[provider] += 1
    return KeyHealth(broken)


def _keys_from_rows(workspace_id: str, rows: list[tuple[Any, ...]], fernet: Fernet, *,
                    quiet: bool = False) -> WorkspaceKeys:
    location = rows[0][0]
    say = log.debug if quiet else log.error
    secrets: dict[str, str] = {}
    errors: dict[Provider, str] = {}
    for _, name, ciphertext in rows:
        if name is None:
            continue
        try:
            secrets[name] = fernet.decrypt(bytes(ciphertext)).decode().strip()
        except (InvalidToken, UnicodeDecodeError):
            say("workspace %r: stored secret %s cannot be decrypted with APPT_SECRET_KEY", workspace_id, name)
            errors[_PROVIDER_OF[name]] = "secret_undecryptable"
    ed25519: Ed25519PublicKey | None = None
    legacy: RSAPublicKey | None = None
    for name, expected in ((GHL_PUBLIC_KEY, Ed25519PublicKey), (GHL_LEGACY_PUBLIC_KEY, RSAPublicKey)):
        text = secrets.get(name)
        if not text:
            continue
        try:
            key = load_public_key(text)
        except ValueError:
            key = None
        if not isinstance(key, expected):
            say("workspace %r: stored %s is not a %s public key", workspace_id, name, expected.__name__)
            errors.setdefault(Provider.GHL, "invalid_public_key")
            continue
        if name == GHL_PUBLIC_KEY:
            ed25519 = key  # type: ignore[assignment]
        else:
            legacy = key  # type: ignore[assignment]
    return WorkspaceKeys(
        workspace_id=workspace_id,
        ghl_location_id=location.strip() if isinstance(location, str) and location.strip() else None,
        calendly_signing_key=secrets.get(CALENDLY_SIGNING_KEY) or None,
        ghl=GhlKeys(ed25519, legacy),
        config_errors=errors,
    )


class WorkspaceDirectory:
    """TTL cache of :class:`WorkspaceKeys` in front of the database (one event loop; not thread-safe).

    Args:
        db: the service's connection pool wrapper.
        secret_key: Fernet key (``APPT_SECRET_KEY``), already validated.
        ttl_s / negative_ttl_s: cache lifetimes (seconds) of found / unknown-or-unusable workspaces.
        max_entries: cache capacity (least recently used evicted).
    """

    def __init__(self, db: Database, secret_key: str, *, ttl_s: float, negative_ttl_s: float,
                 max_entries: int) -> None:
        self._db = db
        self.fernet = Fernet(secret_key.strip().encode())
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s

        def ttu(_key: str, value: WorkspaceKeys | None, now: float) -> float:
            # the short TTL also for workspaces without any key yet: they are likely being set up right now
            good = value is not None and not value.config_errors and value.has_keys
            return now + (ttl_s if good else negative_ttl_s)

        self._cache: TLRUCache[str, WorkspaceKeys | None] = TLRUCache(maxsize=max_entries, ttu=ttu)
        self._inflight: dict[str, asyncio.Future[WorkspaceKeys | None]] = {}
        self._health: tuple[float, KeyHealth] | None = None
        self._health_lock = asyncio.Lock()

    async def key_health(self) -> KeyHealth:
        """Which providers' stored webhook keys cannot be used, over every workspace: one query, decryption
        and parsing off the event loop, the result reused for the cache's ``ttl_s`` seconds (``/health``).

        Raises:
            DatabaseUnavailable: the scan could not reach the database.
        """
        loop = asyncio.get_running_loop()
        async with self._health_lock:
            if self._health is not None and loop.time() - self._health[0] < self._ttl_s:
                return self._health[1]

            async def query(conn: Any) -> list[tuple[Any, ...]]:
                cur = await conn.execute(_ALL_KEYS_SQL, {"names": _SECRET_NAMES})
                return await cur.fetchall()

            rows = await self._db.run(query)
            health = await asyncio.to_thread(_key_health, rows, self.fernet)
            self._health = (loop.time(), health)
            return health

    def cached(self, workspace_id: str) -> Any:
        """The cached answer for ``workspace_id`` (keys or ``None`` = unknown), or :data:`MISSING` when it
        is not cached (then call :meth:`get`). No I/O: the request hot path."""
        return self._cache.get(workspace_id, MISSING)

    async def get(self, workspace_id: str) -> WorkspaceKeys | None:
        """The workspace's keys, or ``None`` when no such workspace exists.

        Raises:
            DatabaseUnavailable: the lookup could not reach the database (not cached).
        """
        cached = self._cache.get(workspace_id, MISSING)
        if cached is not MISSING:
            return cached
        if not workspace_id or len(workspace_id) > MAX_WORKSPACE_ID_CHARS or "\x00" in workspace_id:
            return None
        pending = self._inflight.get(workspace_id)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    return await self.get(workspace_id)  # the loading request went away: load ourselves
                raise
        future: asyncio.Future[WorkspaceKeys | None] = asyncio.get_running_loop().create_future()
        self._inflight[workspace_id] = future
        try:
            keys = await self._load(workspace_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            self._cache[workspace_id] = keys
            future.set_result(keys)
            return keys
        finally:
            del self._inflight[workspace_id]

    async def _load(self, workspace_id: str) -> WorkspaceKeys | None:
        async def query(conn: Any) -> list[tuple[Any, ...]]:
            cur = await conn.execute(_LOOKUP_SQL, {"id": workspace_id, "names": _SECRET_NAMES})
            return await cur.fetchall()

        rows = await self._db.run(query)
        if not rows:
            log.debug("workspace %r unknown", workspace_id)
            return None
        keys = _keys_from_rows(workspace_id, rows, self.fernet)
        log.debug("workspace %r keys loaded (calendly=%s ghl=%s legacy=%s)", workspace_id,
                  keys.calendly_signing_key is not None, keys.ghl.ed25519 is not None, keys.ghl.legacy_rsa is not None)
        return keys

    def invalidate(self, workspace_id: str | None = None) -> None:
        """Forget one workspace (or all, and the last :meth:`key_health` scan) so the next request reads the
        database again."""
        if workspace_id is None:
            self._cache.clear()
            self._health = None
        else:
            self._cache.pop(workspace_id, None)
