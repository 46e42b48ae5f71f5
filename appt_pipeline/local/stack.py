"""The whole provider side, locally: both simulators seeded from the legacy export, the webhook intake
service, and the sample workspaces connected to them (used by ``appt-pipeline demo`` and ``dev``).

:func:`local_stack` starts the GoHighLevel and Calendly simulators (real rate limits, seeded from the
legacy export so the providers' truth starts equal to the legacy snapshot), and the intake service
(``appt_pipeline.service``) on loopback, then points each seeded workspace at its simulator
(``ghl_api_base_url`` / ``calendly_api_base_url``) and stores its API token encrypted. Webhooks are
connected on demand (:meth:`LocalStack.connect_webhooks`): GHL's app webhook target is set per location
and its public key stored as ``ghl_webhook_public_key``; a Calendly organization subscription is created
through the simulator's ``POST /webhook_subscriptions`` equivalent and its signing key stored as
``calendly_webhook_signing_key`` — exactly what an operator does with the real providers. From then on
every change made in a simulator (admin action or API write) reaches the service as a signed delivery.

On exit the workspaces are disconnected again (tokens and webhook secrets deleted, base URLs back to the
providers'), so a stopped simulator is never called with a token an ephemeral key can no longer decrypt.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from appt_pipeline.domain.vocab import Provider, SecretName
from appt_pipeline.providers.calendly import CALENDLY_BASE_URL
from appt_pipeline.providers.ghl import GHL_BASE_URL
from appt_pipeline.sandbox import CalendlySimulator, GhlSimulator, SimulatorServer
from appt_pipeline.sandbox.legacy_seed import LegacySeed
from appt_pipeline.service.app import create_app
from appt_pipeline.service.settings import ServiceSettings
from appt_pipeline.settings import SECRET_KEY_ENV, provider_hosts_allowed
from appt_pipeline.store.workspaces import set_secret, set_workspace

TOKEN_SECRET = {Provider.GHL: SecretName.GHL_PRIVATE_TOKEN, Provider.CALENDLY: SecretName.CALENDLY_ACCESS_TOKEN}
WEBHOOK_SECRETS = (SecretName.CALENDLY_WEBHOOK_SIGNING_KEY, SecretName.GHL_WEBHOOK_PUBLIC_KEY,
                   SecretName.GHL_WEBHOOK_LEGACY_PUBLIC_KEY)
_BASE_URL_COLUMN = {Provider.GHL: "ghl_api_base_url", Provider.CALENDLY: "calendly_api_base_url"}
_PROVIDER_URL = {Provider.GHL: GHL_BASE_URL, Provider.CALENDLY: CALENDLY_BASE_URL}


@dataclass
class LocalStack:
    """Handles of a running :func:`local_stack`: simulators, their URLs, the service URL, connected workspaces."""

    engine: sa.Engine
    legacy: LegacySeed
    secret_key: str
    ghl: GhlSimulator
    calendly: CalendlySimulator
    ghl_url: str
    calendly_url: str
    service_url: str
    providers: dict[str, Provider] = field(default_factory=dict)
    webhooks_connected: bool = False

    def connect_webhooks(self) -> None:
        """Subscribe every connected workspace's provider account to the intake service and store the
        webhook secrets (see the module doc). Idempotent."""
        if self.webhooks_connected:
            return
        ghl_urls: dict[str, str] = {}
        for ws, provider in self.providers.items():
            account = self.legacy.accounts[ws]
            url = f"{self.service_url}/webhooks/{provider.value.lower()}/{ws}"
            if provider is Provider.GHL and account.ghl_location_id:
                ghl_urls[account.ghl_location_id] = url
                set_workspace(self.engine, ws, {"ghl_location_id": account.ghl_location_id})
            elif provider is Provider.CALENDLY:
                # user scope: the workspace's Calendly user (an organization may hold several workspaces)
                sub = (self.calendly.create_webhook_subscription(url, user=account.calendly_user_uri)
                       if account.calendly_user_uri else
                       self.calendly.create_webhook_subscription(url, organization=account.calendly_organization_uri))
                set_secret(self.engine, ws, SecretName.CALENDLY_WEBHOOK_SIGNING_KEY, sub["signing_key"],
                           self.secret_key)
        if ghl_urls:
            self.ghl.set_webhooks(urls=ghl_urls)
            public = self.ghl.webhook_public_keys()["ghl_webhook_public_key"]
            for ws, provider in self.providers.items():
                if provider is Provider.GHL:
                    set_secret(self.engine, ws, SecretName.GHL_WEBHOOK_PUBLIC_KEY, public, self.secret_key)
        self.webhooks_connected = True

    def flush_webhooks(self, timeout: float = 30.0) -> bool:
        """Wait until both simulators delivered (or gave up on) every webhook emitted so far."""
        return self.ghl.flush_webhooks(timeout) and self.calendly.flush_webhooks(timeout)

    def delivery_counts(self) -> dict[str, dict[str, Any]]:
        """Per simulator: deliveries by state (``delivered``, ``failed``, …) from its delivery records."""
        return {"GHL": self.ghl.webhooks.counts(), "CALENDLY": self.calendly.webhooks.counts()}


@contextlib.contextmanager
def session_secret_key() -> Iterator[tuple[str, bool]]:
    """``(key, ephemeral)``: ``APPT_SECRET_KEY``, or a new Fernet key set in this process's environment only
    (in-process runs and child processes such as ``dagster dev`` decrypt with it), removed again on exit and
    never shown. Secrets stored under an ephemeral key are unreadable afterwards: the stack disconnects the
    workspaces on exit either way."""
    key = os.environ.get(SECRET_KEY_ENV)
    if key:
        yield key, False
        return
    os.environ[SECRET_KEY_ENV] = key = Fernet.generate_key().decode()
    try:
        yield key, True
    finally:
        os.environ.pop(SECRET_KEY_ENV, None)


@contextlib.contextmanager
def local_stack(
    engine: sa.Engine,
    database_url: str,
    legacy: LegacySeed,
    workspace_ids: list[str],
    *,
    secret_key: str,
    id_seed: str,
    host: str = "127.0.0.1",
    ghl_port: int = 0,
    calendly_port: int = 0,
    service_port: int = 0,
) -> Iterator[LocalStack]:
    """Start the simulators and the intake service and connect ``workspace_ids`` (those with a seeded account).

    Ports 0 pick free ones. ``id_seed`` fixes the simulators' generated ids (and GHL's webhook keys), so
    the same seed replays the same ids. Raises ``OSError`` when a fixed port is taken.
    """
    ghl_sim = GhlSimulator(legacy.ghl, id_seed=f"{id_seed}:ghl")
    calendly_sim = CalendlySimulator(legacy.calendly, id_seed=f"{id_seed}:calendly")
    service_app = create_app(ServiceSettings(database_url=database_url, secret_key=secret_key))
    with contextlib.ExitStack() as stack:
        ghl_server = stack.enter_context(SimulatorServer(ghl_sim, host, ghl_port))
        calendly_server = stack.enter_context(SimulatorServer(calendly_sim, host, calendly_port))
        service_server = stack.enter_context(SimulatorServer(service_app, host, service_port))
        # the simulators are this stack's provider hosts (README "Provider hosts")
        stack.enter_context(provider_hosts_allowed(ghl_server.base_url, calendly_server.base_url))
        lstack = LocalStack(engine=engine, legacy=legacy, secret_key=secret_key, ghl=ghl_sim, calendly=calendly_sim,
                            ghl_url=ghl_server.base_url, calendly_url=calendly_server.base_url,
                            service_url=service_server.base_url)
        base_urls = {Provider.GHL: ghl_server.base_url, Provider.CALENDLY: calendly_server.base_url}
        try:
            for ws in workspace_ids:
                account = legacy.accounts.get(ws)
                if account is None:
                    continue
                provider = lstack.providers[ws] = Provider(account.provider)
                set_workspace(engine, ws, {_BASE_URL_COLUMN[provider]: base_urls[provider]})
                set_secret(engine, ws, TOKEN_SECRET[provider], account.token, secret_key)
            yield lstack
        finally:
            _disconnect(engine, lstack.providers)


def _disconnect(engine: sa.Engine, providers: dict[str, Provider]) -> None:
    for ws, provider in providers.items():
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM workspace_secrets WHERE workspace_id = :ws AND name = ANY(:names)"),
                         {"ws": ws, "names": [TOKEN_SECRET[provider], *WEBHOOK_SECRETS]})
        set_workspace(engine, ws, {_BASE_URL_COLUMN[provider]: _PROVIDER_URL[provider]})
