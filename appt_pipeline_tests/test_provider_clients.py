"""The provider client factory and the ``providers`` resource (SPEC §6, §9): one limiter per account per run,
limits built in one place, the secret key taken from the resource's field; the CLI's Dagster environment."""

import asyncio
import os
from pathlib import Path

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from appt_pipeline.cli.runtime import dagster_environment
from appt_pipeline.defs.resources import ProviderClients
from appt_pipeline.domain.vocab import Provider
from appt_pipeline.pipelines.accounts import ProviderAccount
from appt_pipeline.pipelines.clients import ClientFactory, ClientOptions
from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import RateLimit
from appt_pipeline.store.embedded import DatabaseUrls
from appt_pipeline.store.workspaces import SecretKeyError, set_secret, set_workspace

GHL = ProviderAccount("ws1", Provider.GHL, "http://127.0.0.1:9", "tok", "loc-1")
GHL_OTHER = ProviderAccount("ws2", Provider.GHL, "http://127.0.0.1:9", "tok2", "loc-2")
CAL = ProviderAccount("ws1", Provider.CALENDLY, "http://127.0.0.1:9", "tok", "https://api.calendly.com/users/u1",
                      organization_uri="https://api.calendly.com/organizations/o1")


def test_factory_gives_each_account_one_limiter_for_the_run() -> None:
    async def build() -> None:
        async with httpx.AsyncClient() as http:
            factory = ClientFactory(http, ClientOptions(ghl_rate=RateLimit(7, 1.0), timeout_s=2.0))
            first, again, other = factory.client(GHL), factory.ghl(GHL), factory.ghl(GHL_OTHER)
            cal = factory.client(CAL)
            assert isinstance(first, GhlClient) and isinstance(cal, CalendlyClient)
            # two clients of one account draw on one budget; another account has its own
            assert first._http.limiter is again._http.limiter is factory.limiters.get("ghl", "loc-1")
            assert other._http.limiter is not first._http.limiter
            assert cal._http.limiter is factory.limiters.get("calendly", CAL.account_key)
            assert first._http.limiter.max_requests == 7 and cal._http.limiter.max_requests == 500
            with pytest.raises(ValueError):
                factory.calendly(GHL)
            with pytest.raises(ValueError):
                factory.ghl(CAL)

    asyncio.run(build())


def test_resource_builds_the_limits_and_loads_accounts_with_its_key(db: sa.Engine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    set_workspace(db, "ws1", {"meeting_booking_provider": "GHL", "ghl_location_id": "loc-1"})
    set_secret(db, "ws1", "ghl_private_token", "tok-ws1", key)
    monkeypatch.delenv("APPT_SECRET_KEY", raising=False)
    monkeypatch.setenv("APPT_TEST_PROVIDER_KEY", key)

    resource = ProviderClients(secret_key=dg.EnvVar("APPT_TEST_PROVIDER_KEY"), ghl_requests=5, ghl_period_s=2.0,
                               timeout_s=3.0)
    options = resource.client_options()
    assert (options.ghl_rate, options.calendly_rate, options.timeout_s) == (RateLimit(5, 2.0), RateLimit(500, 60.0),
                                                                            3.0)

    @dg.asset
    def probe(providers: ProviderClients) -> None:
        account = providers.booking_account(db, "ws1")
        assert (account.token, account.account_key) == ("tok-ws1", "loc-1")
        accounts, missing = providers.attribution_accounts(db, "ws1")
        assert [a.provider for a in accounts] == [Provider.GHL] and set(missing) == {"CALENDLY"}

    assert dg.materialize([probe], resources={"providers": resource}).success
    # without a configured key and without APPT_SECRET_KEY: the account cannot be loaded
    with pytest.raises(SecretKeyError):
        ProviderClients().booking_account(db, "ws1")
    monkeypatch.setenv("APPT_SECRET_KEY", key)  # the default deployment's key, read when the account is loaded
    assert ProviderClients().booking_account(db, "ws1").token == "tok-ws1"


def test_dagster_environment_is_set_inside_the_block_and_restored_after(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("APPT_DATABASE_URL", "postgresql://before/app")
    monkeypatch.delenv("APPT_DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    urls = DatabaseUrls(app_url="postgresql://x/app", dagster_url="postgresql://x/app_dagster", embedded=True)
    with dagster_environment(urls, tmp_path):
        assert (os.environ["APPT_DATABASE_URL"], os.environ["APPT_DAGSTER_PG_URL"], os.environ["DAGSTER_HOME"]) == (
            "postgresql://x/app", "postgresql://x/app_dagster", str(tmp_path))
    assert os.environ["APPT_DATABASE_URL"] == "postgresql://before/app"
    assert "APPT_DAGSTER_PG_URL" not in os.environ and "DAGSTER_HOME" not in os.environ
