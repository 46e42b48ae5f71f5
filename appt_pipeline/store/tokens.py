"""Workspace API tokens (SPEC §1 ``api_tokens``, §10 access; §12 ``tokens create`` / ``tokens revoke``).

A token is ``appt_`` followed by 43 URL-safe base64 characters (32 random bytes from :mod:`secrets`). Only its
SHA-256 digest is stored (``token_sha256``, unique); the token itself is returned once by :func:`create_token`
and never stored, logged or shown again. A token belongs to one workspace and carries scopes (``read``,
``book``; :class:`~appt_pipeline.domain.vocab.TokenScope`).

Verification (:data:`VERIFY_SQL`, one statement) finds the row by digest through the unique index — the
lookup key is a hash, so its timing tells nothing about any stored token — and stamps ``last_used_at`` at most
once per :data:`LAST_USED_RESOLUTION_S` seconds per token (a read otherwise: no row lock, no WAL per request).
The statement uses psycopg placeholders, so the async service runs it as is and :func:`verify_token` runs it
on a SQLAlchemy connection.
"""

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from appt_pipeline.domain.vocab import TokenScope

#: The token's visible prefix (lets secret scanners and people recognise one).
TOKEN_PREFIX = "appt_"
_TOKEN_RE = re.compile(r"^appt_[A-Za-z0-9_-]{43}$")
#: ``last_used_at`` is stamped at most once per this many seconds per token.
LAST_USED_RESOLUTION_S = 60


class TokenError(ValueError):
    """Bad input to :func:`create_token` / :func:`revoke_token`: unknown workspace, unknown or foreign token id,
    empty or unknown scope. The message names the problem (never a token)."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a verified token allows: its row id, its workspace and its scopes."""

    token_id: uuid.UUID
    workspace_id: str
    scopes: frozenset[TokenScope]

    def allows(self, scope: TokenScope) -> bool:
        """True when the token carries ``scope``."""
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """Outcome of :func:`check_token`: ``grant`` when valid, else ``reason`` (``invalid_token`` — malformed or
    unknown — or ``token_revoked``)."""

    grant: TokenGrant | None
    reason: str | None = None


@dataclass(frozen=True)
class CreatedToken:
    """A new token: ``token`` is the plain text, shown once (``repr`` hides it)."""

    id: uuid.UUID
    workspace_id: str
    scopes: tuple[TokenScope, ...]
    name: str | None
    token: str = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """``{"id", "token", "workspace_id", "scopes"}`` (SPEC §12 ``tokens create --json``)."""
        return {"id": str(self.id), "token": self.token, "workspace_id": self.workspace_id,
                "scopes": [s.value for s in self.scopes]}


def token_digest(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes (32 bytes): what ``api_tokens.token_sha256`` holds."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def well_formed(token: str) -> bool:
    """True when ``token`` has the shape :func:`create_token` makes (checked before any query)."""
    return bool(_TOKEN_RE.match(token))


def parse_scopes(raw: str | Iterable[str]) -> tuple[TokenScope, ...]:
    """Scopes from ``"read,book"`` (or an iterable of names), trimmed, lower-cased, deduplicated, in
    :class:`TokenScope` order.

    Raises:
        TokenError: no scope, or a name that is not a scope.
    """
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    wanted: set[TokenScope] = set()
    for name in names:
        key = name.strip().lower()
        if not key:
            continue
        try:
            wanted.add(TokenScope(key))
        except ValueError:
            valid = ", ".join(s.value for s in TokenScope)
            raise TokenError(f"unknown scope {name.strip()!r}; scopes: {valid}") from None
    if not wanted:
        raise TokenError("at least one scope is needed (read, book)")
    return tuple(s for s in TokenScope if s in wanted)


def create_token(engine: sa.Engine, workspace_id: str, scopes: str | Iterable[str], *,
                 name: str | None = None) -> CreatedToken:
    """Create a token for ``workspace_id`` with ``scopes``; return it with the plain text, shown once.

    Raises:
        TokenError: unknown workspace or bad scopes (nothing written).
    """
    wanted = parse_scopes(scopes)
    label = name.strip() if name and name.strip() else None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        row = conn.execute(sa.text(
            "INSERT INTO api_tokens (workspace_id, name, scopes, token_sha256) "
            "SELECT w.id, :name, :scopes, :digest FROM workspaces w WHERE w.id = :ws RETURNING id"
        ), {"ws": workspace_id, "name": label, "scopes": [s.value for s in wanted],
            "digest": token_digest(token)}).first()
    if row is None:
        raise TokenError(f"workspace {workspace_id!r} does not exist")
    return CreatedToken(id=row[0], workspace_id=workspace_id, scopes=wanted, name=label, token=token)


def revoke_token(engine: sa.Engine, workspace_id: str, token_id: str) -> bool:
    """Revoke token ``token_id`` of ``workspace_id`` (from then on every request with it answers 401).

    Returns True when this call revoked it, False when it was already revoked (idempotent; the first
    ``revoked_at`` is kept).

    Raises:
        TokenError: ``token_id`` is not a UUID, or no token of that workspace has it.
    """
    try:
        key = uuid.UUID(token_id.strip())
    except ValueError:
        raise TokenError(f"token id {token_id!r} is not a UUID") from None
    with engine.begin() as conn:
        row = conn.execute(sa.text(
            "WITH t AS (SELECT id, revoked_at FROM api_tokens WHERE id = :id AND workspace_id = :ws FOR UPDATE), "
            "u AS (UPDATE api_tokens a SET revoked_at = now() FROM t WHERE a.id = t.id AND t.revoked_at IS NULL "
            "RETURNING a.id) SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u)"
        ), {"id": key, "ws": workspace_id}).one()
    if not row[0]:
        raise TokenError(f"workspace {workspace_id!r} has no token {key}")
    return bool(row[1])


def revoke_named(engine: sa.Engine, workspace_ids: Iterable[str], name: str) -> int:
    """Revoke every unrevoked token called ``name`` of ``workspace_ids`` (one statement); returns how many.

    Used by ``appt-pipeline dev`` so that each start's freshly printed tokens replace the previous start's.
    """
    with engine.begin() as conn:
        return conn.execute(sa.text(
            "UPDATE api_tokens SET revoked_at = now() "
            "WHERE workspace_id = ANY(:ws) AND name = :name AND revoked_at IS NULL"
        ), {"ws": list(workspace_ids), "name": name}).rowcount


@dataclass(frozen=True)
class TokenInfo:
    """A stored token's metadata (never its hash)."""

    id: uuid.UUID
    workspace_id: str
    name: str | None
    scopes: tuple[TokenScope, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def list_tokens(engine: sa.Engine, workspace_id: str) -> list[TokenInfo]:
    """The workspace's tokens, oldest first, revoked ones included."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, workspace_id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens "
            "WHERE workspace_id = :ws ORDER BY created_at, id"
        ), {"ws": workspace_id}).all()
    return [TokenInfo(r.id, r.workspace_id, r.name, tuple(TokenScope(s) for s in r.scopes), r.created_at,
                      r.last_used_at, r.revoked_at) for r in rows]


#: Verify one token by digest (``%(digest)s``): returns ``id, workspace_id, scopes, token_sha256, revoked`` of the
#: row (nothing for an unknown digest) and stamps ``last_used_at`` when it is older than the resolution.
VERIFY_SQL = f"""
WITH t AS (
    SELECT id, workspace_id, scopes, token_sha256, revoked_at IS NOT NULL AS revoked, last_used_at
    FROM api_tokens WHERE token_sha256 = %(digest)s
), used AS (
    UPDATE api_tokens a SET last_used_at = now()
    FROM t
    WHERE a.id = t.id AND NOT t.revoked
      AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '{LAST_USED_RESOLUTION_S} seconds')
    RETURNING a.id
)
SELECT id, workspace_id, scopes, token_sha256, revoked FROM t
"""


def verify_params(token: str) -> dict[str, bytes]:
    """The parameters of :data:`VERIFY_SQL` for ``token``."""
    return {"digest": token_digest(token)}


def check_from_row(token: str, row: tuple[Any, ...] | None) -> TokenCheck:
    """The :class:`TokenCheck` of ``token`` from the row :data:`VERIFY_SQL` returned (``None``: no row)."""
    if row is None:
        return TokenCheck(None, "invalid_token")
    token_id, workspace_id, scopes, stored, revoked = row
    # the row was found by this digest; compared again in constant time as defence in depth
    if not hmac.compare_digest(bytes(stored), token_digest(token)):
        return TokenCheck(None, "invalid_token")
    if revoked:
        return TokenCheck(None, "token_revoked")
    return TokenCheck(TokenGrant(token_id, workspace_id, frozenset(TokenScope(s) for s in scopes)))


def check_token(conn: sa.Connection, token: str) -> TokenCheck:
    """Verify ``token`` on ``conn`` (in its transaction): a grant, or why not (see :class:`TokenCheck`)."""
    if not well_formed(token):
        return TokenCheck(None, "invalid_token")
    row = conn.exec_driver_sql(VERIFY_SQL, verify_params(token)).first()
    return check_from_row(token, tuple(row) if row is not None else None)


def verify_token(engine: sa.Engine, token: str) -> TokenGrant | None:
    """The grant of ``token``, or ``None`` when it is malformed, unknown or revoked."""
    with engine.begin() as conn:
        return check_token(conn, token).grant
