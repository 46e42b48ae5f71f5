"""Dagster resources: the app database (``app_db``) and the provider clients (``providers``).

Configured in ``appt_pipeline.definitions`` from the environment (``APPT_DATABASE_URL`` as
``dg.EnvVar``; ``APPT_SECRET_KEY`` see :class:`ProviderClients`), resolved when a run starts, never in
run config, logs or metadata.
"""

import dagster as dg
import sqlalchemy as sa

from appt_pipeline.pipelines.accounts import ProviderAccount, load_provider_account
from appt_pipeline.pipelines.attribution import load_attribution_accounts
from appt_pipeline.pipelines.clients import ClientOptions
from appt_pipeline.providers.http import RateLimit
from appt_pipeline.settings import SECRET_KEY_ENV
from appt_pipeline.store.engine import get_engine


class AppDatabase(dg.ConfigurableResource):
    """The application PostgreSQL (SPEC §1 tables). ``url`` is a SQLAlchemy URL, normally ``EnvVar``."""

    url: str

    def engine(self) -> sa.Engine:
        """A pooled engine (psycopg 3), shared per process."""
        return get_engine(self.url)


class ProviderClients(dg.ConfigurableResource):
    """How runs reach the providers: the workspaces' accounts and the options of the client factory.

    ``secret_key`` is the Fernet key of the stored provider tokens (SPEC §1 ``workspace_secrets``),
    normally given as ``dg.EnvVar("APPT_SECRET_KEY")``. Left empty, the key is resolved when an account
    is loaded, through ``dg.EnvVar("APPT_SECRET_KEY").get_value()`` — the one place this happens, and
    why: Dagster's ``EnvVar`` has no default (dagster-io/dagster#16232), so an ``EnvVar`` field would
    make *every* run of the shared appointment op fail without the variable, also the migration that
    needs no token. Loading an account without any key raises ``SecretKeyError``. Limits default to
    the providers' documented ones (GHL 100 requests / 10 s per location, Calendly 500 / 60 s per
    user; docs/providers.md §1.4, §2.5); ``timeout_s`` is per request, in seconds.
    """

    secret_key: str = ""
    ghl_requests: int = 100
    ghl_period_s: float = 10.0
    calendly_requests: int = 500
    calendly_period_s: float = 60.0
    timeout_s: float = 15.0

    def client_options(self) -> ClientOptions:
        """The options of the runs' :class:`~appt_pipeline.pipelines.clients.ClientFactory` (the one place
        the configured rate limits are built)."""
        return ClientOptions(ghl_rate=RateLimit(self.ghl_requests, self.ghl_period_s),
                             calendly_rate=RateLimit(self.calendly_requests, self.calendly_period_s),
                             timeout_s=self.timeout_s)

    def key(self) -> str | None:
        """The configured ``secret_key``, else ``APPT_SECRET_KEY`` at call time, else None (see the class doc)."""
        return self.secret_key or dg.EnvVar(SECRET_KEY_ENV).get_value() or None

    def booking_account(self, engine: sa.Engine, workspace_id: str) -> ProviderAccount:
        """The workspace's booking-provider account (:func:`~appt_pipeline.pipelines.accounts.load_provider_account`).

        Raises:
            WorkspaceNotConfigured: unknown workspace, or missing columns / token.
            SecretKeyError: no or a wrong ``secret_key``.
        """
        return load_provider_account(engine, workspace_id, self.key())

    def attribution_accounts(self, engine: sa.Engine,
                             workspace_id: str) -> tuple[list[ProviderAccount], dict[str, str]]:
        """Every account attribution can ask, and why the others cannot
        (:func:`~appt_pipeline.pipelines.attribution.load_attribution_accounts`; same errors)."""
        return load_attribution_accounts(engine, workspace_id, self.key())
