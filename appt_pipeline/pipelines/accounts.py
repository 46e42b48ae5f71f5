"""Provider accounts shared by the pipelines: where and as whom to call a workspace's provider.

Built from the ``workspaces`` row (SPEC §1 columns) and its decrypted token; reconciliation,
attribution backfill and the Dagster resources use the same functions.
"""

from dataclasses import dataclass, field

import sqlalchemy as sa

from appt_pipeline.domain.vocab import Provider, SecretName
from appt_pipeline.providers.calendly import CALENDLY_BASE_URL
from appt_pipeline.providers.ghl import GHL_BASE_URL
from appt_pipeline.store.workspaces import get_secret


class WorkspaceNotConfigured(LookupError):
    """The workspace lacks what its provider needs (location id, token, organization …); ``reason`` says what."""


@dataclass(frozen=True)
class ProviderAccount:
    """Where and as whom to call the workspace's provider. Tokens are never logged (``repr`` hides them)."""

    workspace_id: str
    provider: Provider
    base_url: str
    token: str = field(repr=False)
    account_key: str
    organization_uri: str | None = None
    event_type_uris: tuple[str, ...] = ()
    timezone: str | None = None


def workspace_row(engine: sa.Engine, workspace_id: str) -> sa.RowMapping:
    """The ``workspaces`` row. Raises :class:`WorkspaceNotConfigured` when it does not exist."""
    with engine.connect() as conn:
        ws = conn.execute(sa.text("SELECT * FROM workspaces WHERE id = :id"), {"id": workspace_id}).mappings().first()
    if ws is None:
        raise WorkspaceNotConfigured(f"workspace {workspace_id!r} does not exist")
    return ws


def provider_account(ws: sa.RowMapping, provider: Provider, token: str) -> ProviderAccount:
    """The connection to ``provider`` described by workspace row ``ws`` with its decrypted ``token``.

    The rate-limit account is the GHL location, or the Calendly user (else organization, else the
    workspace). Callers check first that the columns their use needs are set.
    """
    if provider is Provider.GHL:
        return ProviderAccount(ws["id"], provider, ws["ghl_api_base_url"] or GHL_BASE_URL, token,
                               ws["ghl_location_id"], timezone=ws["timezone"])
    types = tuple(t for t in (ws["calendly_event_type_uri"], ws["calendly_direct_book_event_type_uri"]) if t)
    return ProviderAccount(ws["id"], provider, ws["calendly_api_base_url"] or CALENDLY_BASE_URL, token,
                           ws["calendly_user_uri"] or ws["calendly_organization_uri"] or f"workspace:{ws['id']}",
                           organization_uri=ws["calendly_organization_uri"], event_type_uris=types,
                           timezone=ws["timezone"])


def load_provider_account(engine: sa.Engine, workspace_id: str, secret_key: str | None) -> ProviderAccount:
    """The workspace's booking-provider connection (SPEC §1 columns + encrypted secrets).

    Raises:
        WorkspaceNotConfigured: unknown workspace, or missing location id / organization / token.
        appt_pipeline.store.workspaces.SecretKeyError: the stored token cannot be decrypted.
    """
    ws = workspace_row(engine, workspace_id)
    provider = Provider(ws["meeting_booking_provider"])
    if provider is Provider.GHL:
        token = get_secret(engine, workspace_id, SecretName.GHL_PRIVATE_TOKEN, secret_key)
        if not ws["ghl_location_id"] or not token:
            raise WorkspaceNotConfigured(f"workspace {workspace_id!r}: GHL needs ghl_location_id and ghl_private_token")
        return provider_account(ws, provider, token)
    token = get_secret(engine, workspace_id, SecretName.CALENDLY_ACCESS_TOKEN, secret_key)
    if not ws["calendly_organization_uri"] or not token:
        raise WorkspaceNotConfigured(
            f"workspace {workspace_id!r}: Calendly needs calendly_organization_uri and calendly_access_token"
        )
    return provider_account(ws, provider, token)
