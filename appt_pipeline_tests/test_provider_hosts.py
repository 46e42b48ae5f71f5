"""Provider tokens only go to the provider (README "Provider hosts"; issue 10 item 1).

Real loopback listeners record every request that reaches them and its ``Authorization`` header: a
listener whose port is not in ``APPT_PROVIDER_HOST_ALLOWLIST``, a link-local URL, and an allowed server
that redirects to a host not in the list — no token ever arrives. Refused URLs exit 2 naming the rule.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from appt_pipeline.domain.provider_hosts import ProviderHostError, check_provider_url, parse_allowlist
from appt_pipeline.providers.http import AccountLimiter, ErrorKind, ProviderError, ProviderHttp
from appt_pipeline.store.legacy_import import LegacyImportError, import_legacy
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline_tests.helpers.cli import cli_env, run_cli

TOKEN = "tok-secret-123"
KEY = Fernet.generate_key().decode()


class Listener:
    """A loopback HTTP server that records the ``Authorization`` of every request; answers 200 ``{}``
    or, with ``redirect_to``, 302 to that URL."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.seen: list[str | None] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.seen.append(self.headers.get("Authorization"))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def target() -> Iterator[Listener]:
    """The host a token must never reach."""
    listener = Listener()
    yield listener
    listener.close()


def _http(base_url: str, allowlist: str, client: httpx.AsyncClient | None = None) -> ProviderHttp:
    return ProviderHttp(provider="ghl", base_url=base_url, token=TOKEN, limiter=AccountLimiter(10, 1.0),
                        http=client, allowed_hosts=parse_allowlist(allowlist))


# -- the rule ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://services.leadconnectorhq.com", "https://api.calendly.com/"])
def test_provider_own_https_hosts_are_allowed(url: str) -> None:
    check_provider_url(url, parse_allowlist(""))


@pytest.mark.parametrize(("url", "rule"), [
    ("http://services.leadconnectorhq.com", "not allowed"),
    ("https://api.calendly.com:8443", "not allowed"),
    ("https://evil.example", "APPT_PROVIDER_HOST_ALLOWLIST"),
    ("file:///etc/passwd", "http(s) URL"),
    ("http://169.254.169.254/", "link-local"),
    ("http://[fe80::1]:80/", "link-local"),
    ("http://metadata.google.internal/", "cloud-metadata"),
    ("http://100.100.100.200/", "cloud-metadata"),
    ("http://[fd00:ec2::254]/", "cloud-metadata"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("https://user:pw@api.calendly.com", "user info"),
])
def test_refused_urls_name_the_rule(url: str, rule: str) -> None:
    listed = "169.254.169.254:80,[fe80::1]:80,metadata.google.internal:80,100.100.100.200:80,[fd00:ec2::254]:80"
    with pytest.raises(ProviderHostError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        check_provider_url(url, parse_allowlist(listed))


def test_allowlist_entries_need_a_port() -> None:
    with pytest.raises(ProviderHostError, match="host:port"):
        parse_allowlist("localhost")
    assert parse_allowlist(" 127.0.0.1:8080 , ").allows("127.0.0.1", 8080)
    assert not parse_allowlist("127.0.0.1:8080").allows("127.0.0.1", 8081)


# -- no token ever arrives ----------------------------------------------------------------------------


def test_loopback_port_not_listed_gets_no_token(target: Listener) -> None:
    with pytest.raises(ProviderError) as caught:
        _http(target.url, "127.0.0.1:1")
    assert caught.value.kind is ErrorKind.REFUSED
    assert "APPT_PROVIDER_HOST_ALLOWLIST" in str(caught.value) and TOKEN not in str(caught.value)
    assert target.seen == []


def test_link_local_is_refused_even_when_listed() -> None:
    with pytest.raises(ProviderError, match="link-local"):
        _http("http://169.254.169.254", "169.254.169.254:80")


@pytest.mark.parametrize("follow", [False, True], ids=["own-client", "passed-in-client-following-redirects"])
def test_redirect_to_unlisted_host_is_not_followed(target: Listener, follow: bool) -> None:
    allowed = Listener(redirect_to=target.url)
    try:
        async def go() -> None:
            client = httpx.AsyncClient(follow_redirects=True) if follow else None
            http = _http(allowed.url, allowed.host_port, client)
            try:
                with pytest.raises(ProviderError, match="redirect not followed"):
                    await http.request("GET", "/users/me")
            finally:
                await http.aclose()
                if client is not None:
                    await client.aclose()

        asyncio.run(go())
        assert allowed.seen == [f"Bearer {TOKEN}"]  # the allowed host got it, once
        assert target.seen == []  # the redirect target got nothing
    finally:
        allowed.close()


def test_absolute_urls_are_routed_to_the_checked_base(target: Listener) -> None:
    allowed = Listener()
    try:
        async def go() -> None:
            http = _http(allowed.url, allowed.host_port)
            try:
                await http.request("GET", f"{target.url}/scheduled_events?page=2")
            finally:
                await http.aclose()

        asyncio.run(go())
        assert target.seen == [] and allowed.seen == [f"Bearer {TOKEN}"]
    finally:
        allowed.close()


# -- stored URLs: workspace set, import-legacy ---------------------------------------------------------


@pytest.fixture()
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return cli_env(tmp_path / "appt_home", database_url, APPT_PROVIDER_HOST_ALLOWLIST="127.0.0.1:8080")


@pytest.mark.parametrize(("url", "rule"), [
    ("http://169.254.169.254/", "link-local"),
    ("http://127.0.0.1:9", "APPT_PROVIDER_HOST_ALLOWLIST"),
    ("https://evil.example", "APPT_PROVIDER_HOST_ALLOWLIST"),
])
def test_workspace_set_refuses_url_with_exit_2(db: sa.Engine, env: dict[str, str], url: str, rule: str) -> None:
    proc = run_cli(env, "workspace", "set", "ws", "--ghl-api-base-url", url)
    assert proc.returncode == 2, proc.stderr
    assert rule in proc.stderr and "Traceback" not in proc.stderr
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workspaces")).scalar_one() == 0


def test_workspace_set_accepts_listed_host(db: sa.Engine, env: dict[str, str]) -> None:
    proc = run_cli(env, "workspace", "set", "ws", "--ghl-api-base-url", "http://127.0.0.1:8080")
    assert proc.returncode == 0, proc.stderr


def _write(folder: Path, base_url: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "workspaces.csv").write_text(f"id,name,ghl_api_base_url\nws,Acme,{base_url}\n")
    return folder


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://169.254.169.254/", "http://127.0.0.1:9"])
def test_import_legacy_refuses_url_with_exit_2(db: sa.Engine, env: dict[str, str], tmp_path: Path,
                                                url: str) -> None:
    proc = run_cli(env, "import-legacy", str(_write(tmp_path / "export", url)))
    assert proc.returncode == 2, proc.stderr
    assert "workspaces.csv:2:" in proc.stderr and "provider base URL" in proc.stderr
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workspaces")).scalar_one() == 0


def test_reimport_keeps_base_url_of_workspace_with_secrets(db: sa.Engine, env: dict[str, str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPT_PROVIDER_HOST_ALLOWLIST", "127.0.0.1:8080")
    set_workspace(db, "ws", {"ghl_api_base_url": "https://services.leadconnectorhq.com"})
    set_secret(db, "ws", "ghl_private_token", TOKEN, KEY)
    folder = _write(tmp_path / "export", "http://127.0.0.1:8080")
    with pytest.raises(LegacyImportError) as caught:
        import_legacy(db, folder)
    assert "--replace-base-urls" in str(caught.value.errors[0])
    proc = run_cli(env, "import-legacy", str(folder))
    assert proc.returncode == 2 and "--replace-base-urls" in proc.stderr, proc.stderr

    def stored() -> str:
        with db.connect() as conn:
            return conn.execute(sa.text("SELECT ghl_api_base_url FROM workspaces WHERE id = 'ws'")).scalar_one()

    assert stored() == "https://services.leadconnectorhq.com"
    proc = run_cli(env, "import-legacy", "--replace-base-urls", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert stored() == "http://127.0.0.1:8080"


def test_reimport_may_set_base_url_of_workspace_without_secrets(db: sa.Engine, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPT_PROVIDER_HOST_ALLOWLIST", "127.0.0.1:8080")
    set_workspace(db, "ws", {"ghl_api_base_url": "https://services.leadconnectorhq.com"})
    import_legacy(db, _write(tmp_path / "export", "http://127.0.0.1:8080"))
