"""Workspace rows and their encrypted secrets (SPEC §1, §11, §12 ``workspace set`` / ``secrets set``)."""

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from appt_pipeline.domain.provider_hosts import check_provider_url
from appt_pipeline.domain.vocab import Provider, SecretName
from appt_pipeline.settings import provider_host_allowlist

#: Workspace columns an operator may set (every SPEC §1 column but the id and write clocks).
WORKSPACE_SETTABLE: tuple[str, ...] = (
    "name", "meeting_booking_provider", "ghl_location_id", "ghl_default_calendar_id", "ghl_direct_book_calendar_id",
    "calendly_organization_uri", "calendly_user_uri", "calendly_event_type_uri",
    "calendly_direct_book_event_type_uri", "meeting_duration_minutes", "timezone", "auto_book_meetings",
    "ghl_api_base_url", "calendly_api_base_url",
)

#: Secret names of SPEC §1 (stored encrypted in ``workspace_secrets``).
SECRET_NAMES: tuple[str, ...] = tuple(name.value for name in SecretName)


class SecretKeyError(ValueError):
    """``APPT_SECRET_KEY`` is missing or not a Fernet key, or a stored secret cannot be decrypted with it."""


def set_workspace(engine: sa.Engine, workspace_id: str, values: dict[str, Any]) -> bool:
    """Create or update workspace ``workspace_id`` with ``values`` (keys from :data:`WORKSPACE_SETTABLE`).

    Returns True when the row was created. Raises ``ValueError`` for an unknown column, an id the intake
    could not serve (:func:`validate_workspace_id`), a timezone that is not an IANA zone
    or an API base URL that is not http(s);
    database constraint violations (e.g. a provider outside GHL/CALENDLY) surface as
    ``sqlalchemy.exc.DBAPIError``.
    """
    workspace_id = workspace_id.strip()
    unknown = sorted(set(values) - set(WORKSPACE_SETTABLE))
    if unknown:
        raise ValueError(f"unknown workspace column(s): {unknown}")
    validate_workspace_values(workspace_id, values)
    cols = ["id", *values]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in values) or "id = EXCLUDED.id"
    sql = (
        f"INSERT INTO workspaces ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
        f"ON CONFLICT (id) DO UPDATE SET {sets}, updated_at = now() RETURNING (xmax = 0)"
    )
    with engine.begin() as conn:
        return bool(conn.execute(sa.text(sql), {"id": workspace_id, **values}).scalar_one())


#: Longest workspace id (characters); the id is a path segment of the intake URL (docs/operations.md §3).
MAX_WORKSPACE_ID_LENGTH = 64
#: Characters a workspace id never holds: each would break or change the meaning of the intake path
#: ``/webhooks/{provider}/{workspace_id}`` (segment separators, query, fragment, percent-escapes).
_ID_FORBIDDEN = frozenset("/\\?#%")


def validate_workspace_id(workspace_id: str) -> None:
    """Refuse an id the intake ``/webhooks/{provider}/{workspace_id}`` could never serve (docs/operations.md §3).

    The rule: 1 to :data:`MAX_WORKSPACE_ID_LENGTH` characters; no whitespace, no control or other
    non-printable character, none of ``/ \\ ? # %``, and not ``.`` or ``..``. Raises ``ValueError``
    saying which part of the rule the id breaks (the id is shown escaped).
    """
    if not workspace_id:
        raise ValueError("workspace id must not be empty")
    if len(workspace_id) > MAX_WORKSPACE_ID_LENGTH:
        raise ValueError(f"workspace id is {len(workspace_id)} characters long; at most {MAX_WORKSPACE_ID_LENGTH}")
    bad = next((c for c in workspace_id if not c.isprintable() or c.isspace() or c in _ID_FORBIDDEN), None)
    if bad is not None:
        raise ValueError(f"workspace id {workspace_id!r} contains {bad!r}; an id is one URL path segment "
                         "without whitespace, control characters or any of / \\ ? # %")
    if workspace_id in (".", ".."):
        raise ValueError(f"workspace id {workspace_id!r} is not a usable URL path segment")


def validate_workspace_values(workspace_id: str, values: dict[str, Any]) -> None:
    """The checks of ``workspace set`` and of every ``workspaces.csv`` row of ``import-legacy``: the id
    (:func:`validate_workspace_id`) and the values (IANA time zone, API base URLs). Raises ``ValueError``."""
    validate_workspace_id(workspace_id)
    _validate(values)


def _validate(values: dict[str, Any]) -> None:
    """Refuse values the database would accept but every later reader would trip over (SPEC §12: exit 2)."""
    zone = values.get("timezone")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {zone!r} is not an IANA time zone (e.g. America/New_York)") from None
    allowlist = provider_host_allowlist()
    for column in ("ghl_api_base_url", "calendly_api_base_url"):
        url = values.get(column)
        if url is not None:
            check_provider_url(url, allowlist, what=column)  # ProviderHostError is a ValueError: exit 2


def workspace_ids(engine: sa.Engine) -> list[str]:
    """All workspace ids, sorted."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT id FROM workspaces ORDER BY id"))]


#: Workspaces whose provider connection is configured: the settings and the encrypted token it needs.
_CONNECTED_WORKSPACES = sa.text("""
SELECT w.id, w.meeting_booking_provider FROM workspaces w
WHERE (w.meeting_booking_provider = :ghl AND w.ghl_location_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM workspace_secrets s WHERE s.workspace_id = w.id AND s.name = :ghl_token))
   OR (w.meeting_booking_provider = :calendly AND w.calendly_organization_uri IS NOT NULL
       AND EXISTS (SELECT 1 FROM workspace_secrets s WHERE s.workspace_id = w.id AND s.name = :calendly_token))
ORDER BY w.id
""")


def connected_workspaces(conn: sa.Connection) -> list[tuple[str, Provider]]:
    """``(workspace id, provider)`` of every workspace that can call its provider (location id or
    organization set, and the token stored), by id."""
    rows = conn.execute(_CONNECTED_WORKSPACES, {
        "ghl": Provider.GHL.value, "calendly": Provider.CALENDLY.value,
        "ghl_token": SecretName.GHL_PRIVATE_TOKEN.value, "calendly_token": SecretName.CALENDLY_ACCESS_TOKEN.value,
    })
    return [(ws, Provider(provider)) for ws, provider in rows]


def fernet(key: str | None) -> Fernet:
    """The Fernet cipher of ``key`` (``APPT_SECRET_KEY``). Raises :class:`SecretKeyError` when it is missing or
    not a Fernet key; the message never holds the key."""
    if not key:
        raise SecretKeyError(
            "APPT_SECRET_KEY is not set; generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        )
    try:
        return Fernet(key.strip().encode())
    except ValueError:
        raise SecretKeyError("APPT_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes)") from None


def set_secret(engine: sa.Engine, workspace_id: str, name: str, value: str, key: str | None) -> None:
    """Encrypt ``value`` (trimmed, SPEC §1) with ``key`` and store it as secret ``name`` of the workspace.

    Raises ``ValueError`` for an unknown name, empty value or unknown workspace, :class:`SecretKeyError`
    for a bad key. The value never appears in messages.
    """
    if name not in SECRET_NAMES:
        raise ValueError(f"unknown secret name {name!r}; expected one of {list(SECRET_NAMES)}")
    value = value.strip()
    if not value:
        raise ValueError("secret value is empty")
    token = fernet(key).encrypt(value.encode())
    with engine.begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id}).first():
            raise ValueError(f"workspace {workspace_id!r} does not exist")
        conn.execute(
            sa.text(
                "INSERT INTO workspace_secrets (workspace_id, name, ciphertext) VALUES (:ws, :name, :ct) "
                "ON CONFLICT (workspace_id, name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = now()"
            ),
            {"ws": workspace_id, "name": name, "ct": token},
        )


def get_secret(engine: sa.Engine, workspace_id: str, name: str, key: str | None) -> str | None:
    """The decrypted secret, or None when not set. Raises :class:`SecretKeyError` when ``key`` cannot decrypt it."""
    with engine.connect() as conn:
        token = conn.execute(
            sa.text("SELECT ciphertext FROM workspace_secrets WHERE workspace_id = :ws AND name = :name"),
            {"ws": workspace_id, "name": name},
        ).scalar_one_or_none()
    if token is None:
        return None
    try:
        return fernet(key).decrypt(bytes(token)).decode()
    except InvalidToken:
        raise SecretKeyError(
            f"secret {name!r} of workspace {workspace_id!r} cannot be decrypted with this key"
        ) from None
