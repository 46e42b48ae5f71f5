"""The one factory of provider clients: account → client with its account's limiter (SPEC §6, §9).

A run builds one :class:`ClientFactory` over one ``httpx.AsyncClient``; every client it hands out
draws on the factory's single :class:`~appt_pipeline.providers.http.LimiterRegistry`, so all
requests of the run to one provider account share that account's budget (GHL 100 requests / 10 s
per location, Calendly 500 / 60 s per user unless :class:`ClientOptions` says otherwise).
Reconciliation and the attribution backfill both get their clients here.

With an ``engine`` (every caller that has the deployment's database passes it) the budget is shared by
every process through PostgreSQL (:class:`~appt_pipeline.pipelines.shared_limiter.SharedAccountLimiter`,
docs/operations.md "Rate limits"); without one it is shared within this factory only (tests, scripts).
"""

from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from appt_pipeline.domain.vocab import Provider
from appt_pipeline.pipelines.accounts import ProviderAccount
from appt_pipeline.pipelines.shared_limiter import SharedBudgets
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import (
    CALENDLY_RATE_LIMIT,
    GHL_RATE_LIMIT,
    CallStats,
    LimiterRegistry,
    RateLimit,
    RetryPolicy,
    in_process_budget,
)

ProviderClient = GhlClient | CalendlyClient


@dataclass(frozen=True)
class ClientOptions:
    """How clients talk to the providers: per-account rate limits, request timeout (seconds), retries."""

    ghl_rate: RateLimit = GHL_RATE_LIMIT
    calendly_rate: RateLimit = CALENDLY_RATE_LIMIT
    timeout_s: float = 15.0
    retry: RetryPolicy | None = None


class ClientFactory:
    """Provider clients of one run over one shared ``http`` client and one limiter registry.

    Args:
        http: the ``httpx.AsyncClient`` every client sends through.
        options: rate limits, timeout, retries.
        engine: the deployment's database: when given, each account's budget is shared with every other
            process through ``provider_rate_permits``; when ``None``, within this factory only.
    """

    def __init__(self, http: httpx.AsyncClient, options: ClientOptions = ClientOptions(),
                 engine: sa.Engine | None = None) -> None:
        self.http = http
        self.options = options
        budgets = SharedBudgets(engine) if engine is not None else in_process_budget
        self.limiters = LimiterRegistry(ghl=options.ghl_rate, calendly=options.calendly_rate, budgets=budgets)

    def ghl(self, account: ProviderAccount, stats: CallStats | None = None) -> GhlClient:
        """A GHL client for ``account`` (its ``account_key`` is the location id). Raises ValueError for a
        Calendly account."""
        if account.provider is not Provider.GHL:
            raise ValueError(f"not a GHL account: {account.provider.value}")
        return GhlClient(base_url=account.base_url, token=account.token, location_id=account.account_key,
                         limiter=self.limiters.get("ghl", account.account_key), http=self.http,
                         timeout_s=self.options.timeout_s, stats=stats, retry=self.options.retry)

    def calendly(self, account: ProviderAccount, stats: CallStats | None = None) -> CalendlyClient:
        """A Calendly client for ``account`` (its ``account_key`` is the user, else organization, URI).
        Raises ValueError for a GHL account."""
        if account.provider is not Provider.CALENDLY:
            raise ValueError(f"not a Calendly account: {account.provider.value}")
        return CalendlyClient(base_url=account.base_url, token=account.token, user_uri=account.account_key,
                              organization_uri=account.organization_uri,
                              limiter=self.limiters.get("calendly", account.account_key), http=self.http,
                              timeout_s=self.options.timeout_s, stats=stats, retry=self.options.retry)

    def client(self, account: ProviderAccount, stats: CallStats | None = None) -> ProviderClient:
        """The client of ``account``'s provider."""
        return self.ghl(account, stats) if account.provider is Provider.GHL else self.calendly(account, stats)
