"""Access to the API and the pages (SPEC §10) over real HTTP on loopback, against the real test database.

The matrix runs over EVERY ``/api/`` and page route the app has (found from the app itself, so a route added later
is covered without editing this file): no token, a malformed, an unknown and a revoked token → 401; a token of
workspace A on every route of workspace B and a token without the scope → 403; an unknown lead, or a lead of the
other workspace, → 404; a cookie never authorises an API route. Then the login form and its cookie, the history
API's answers and query rules, and what stays open (``/health``) or keeps its own auth (webhooks).
"""

import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from appt_pipeline.domain.history import HistoryFilters
from appt_pipeline.domain.vocab import TokenScope
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.service.access import SESSION_COOKIE
from appt_pipeline.store.history import read_history
from appt_pipeline.store.tokens import create_token, revoke_token
from appt_pipeline_tests.conftest import APP_TABLES
from appt_pipeline_tests.helpers import SECRET_KEY, seed
from appt_pipeline_tests.helpers.history import LEAD_ZONE, Timeline, seed_timeline

A, B = "ws-a", "ws-b"
LEAD_A, LEAD_B = "ws-a_lead0", "ws-b_lead0"


@dataclass(frozen=True)
class World:
    server: SimulatorServer
    timeline: Timeline
    tokens: dict[str, str]  # name → plain token
    routes: list[tuple[str, str, bool]]  # method, path template, is a page

    @property
    def base(self) -> str:
        return self.server.base_url


def _guarded_routes(app: Any) -> list[tuple[str, str, bool]]:
    """(method, path template, is a page) of every operation of the app's OpenAPI document under ``/api/`` or
    ``/workspaces/`` (the document is the public list of routes; a route left out of it is not an API)."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(("/api/", "/workspaces/")):
            out.extend((method.upper(), path, not path.startswith("/api/")) for method in sorted(operations))
    return out


@pytest.fixture(scope="module")
def world(engine: sa.Engine, database_url: str) -> Iterator[World]:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
    seed(engine, A, 2, lead_tz=LEAD_ZONE)
    seed(engine, B, 1)
    timeline = seed_timeline(engine, A, LEAD_A, datetime.now(UTC))
    seed_timeline(engine, B, LEAD_B, datetime.now(UTC))
    tokens = {
        "a_read": create_token(engine, A, "read").token,
        "a_book": create_token(engine, A, "book").token,
        "a_all": create_token(engine, A, "read,book").token,
        "b_read": create_token(engine, B, "read,book").token,
    }
    revoked = create_token(engine, A, "read,book")
    revoke_token(engine, A, str(revoked.id))
    tokens["revoked"] = revoked.token
    # every request checks its token (no cached grant) so revocations in the matrix take effect at once
    app = create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY, token_cache_ttl_s=0))
    routes = _guarded_routes(app)
    with SimulatorServer(app) as server:
        yield World(server, timeline, tokens, routes)  # type: ignore[arg-type]


def _url(world: World, path: str, ws: str, lead: str) -> str:
    filled = path.replace("{workspace_id}", ws).replace("{lead_id}", lead)
    return world.base + re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), filled)  # any other id: a fresh one


def _call(world: World, method: str, url: str, token: str | None = None, cookie: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    cookies = {SESSION_COOKIE: cookie} if cookie is not None else None
    with httpx.Client(cookies=cookies, timeout=10, follow_redirects=False) as client:
        return client.request(method, url, headers=headers, json={} if method != "GET" else None)


def _error(response: httpx.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json().get("error")
    return None


def test_the_matrix_covers_the_routes_and_they_document_the_token(world: World) -> None:
    paths = {p for _, p, _ in world.routes}
    documented = set(world.server.app.openapi()["paths"])
    assert set(OPEN_ROUTES) <= documented
    # every documented route is guarded, open on purpose, a webhook (signature auth) or the login form
    assert documented - paths - set(OPEN_ROUTES) <= {"/webhooks/calendly/{workspace_id}",
                                                     "/webhooks/ghl/{workspace_id}", "/login", "/logout"}
    assert {"/api/v1/workspaces/{workspace_id}/leads/{lead_id}/appointments",
            "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/booking-status",
            "/workspaces/{workspace_id}/leads/{lead_id}/timeline"} <= paths
    document = world.server.app.openapi()
    for method, path, page in world.routes:
        security = document["paths"][path][method.lower()].get("security")
        assert {"workspaceToken": []} in security, (method, path)
        assert ({"sessionCookie": []} in security) is page, (method, path)


@pytest.mark.parametrize(("token", "reason"), [(None, "missing_token"), ("garbage", "invalid_token"),
                                               ("appt_" + "x" * 43, "invalid_token"), ("revoked", "token_revoked")])
def test_no_bad_or_revoked_token_is_401_on_every_route(world: World, token: str | None, reason: str) -> None:
    problems = []
    for method, path, page in world.routes:
        sent = world.tokens.get(token, token) if token else None
        response = _call(world, method, _url(world, path, A, LEAD_A), sent)
        ok = response.status_code == 401 and response.headers.get("www-authenticate", "").startswith("Bearer")
        ok = ok and (('action="/login"' in response.text) if page else _error(response) == reason)
        if not ok:
            problems.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
    assert not problems, "\n".join(problems)


def test_a_token_of_workspace_a_is_403_on_every_route_of_workspace_b(world: World) -> None:
    problems = []
    for method, path, page in world.routes:
        for name in ("a_read", "a_book", "a_all"):
            for lead in (LEAD_B, LEAD_A, "no-such-lead"):
                response = _call(world, method, _url(world, path, B, lead), world.tokens[name])
                if response.status_code != 403 or (not page and _error(response) != "wrong_workspace"):
                    problems.append(f"{name} {method} {path} lead={lead}: {response.status_code}")
        page_answer = _call(world, method, _url(world, path, B, LEAD_B), world.tokens["a_read"])
        if page and "another workspace" not in page_answer.text:
            problems.append(f"{method} {path}: the 403 page does not say why")
    assert not problems, "\n".join(problems)


#: The scope each route needs; a route missing here fails the test below (say what it needs).
NEEDS = {"/api/v1/workspaces/{workspace_id}/leads/{lead_id}/appointments": TokenScope.READ,
         "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/booking-status": TokenScope.READ,
         "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/tasks": TokenScope.READ,
         "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/tasks/{task_id}/complete": TokenScope.BOOK,
         "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/tasks/{task_id}/skip": TokenScope.BOOK,
         "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/bookings": TokenScope.BOOK,
         "/api/v1/workspaces/{workspace_id}/capacity": TokenScope.READ,
         "/workspaces/{workspace_id}/leads/{lead_id}/timeline": TokenScope.READ,
         "/workspaces/{workspace_id}/capacity": TokenScope.READ}


def test_a_token_without_the_scope_is_403(world: World) -> None:
    problems = []
    for method, path, page in world.routes:
        scope = NEEDS.get(path)
        if scope is None:
            problems.append(f"{method} {path}: not in NEEDS")
            continue
        lacking = world.tokens["a_book" if scope is TokenScope.READ else "a_read"]
        response = _call(world, method, _url(world, path, A, LEAD_A), lacking)
        if response.status_code != 403 or (not page and _error(response) != "missing_scope"):
            problems.append(f"{method} {path}: {response.status_code}")
        for enough in ("a_all", "a_read" if scope is TokenScope.READ else "a_book"):
            if _call(world, method, _url(world, path, A, LEAD_A), world.tokens[enough]).status_code in (401, 403):
                problems.append(f"{method} {path}: refused with {enough}")
    assert not problems, "\n".join(problems)


def test_unknown_leads_and_leads_of_another_workspace_are_404(world: World) -> None:
    problems = []
    for method, path, page in world.routes:
        if method != "GET" or "{lead_id}" not in path:
            continue
        for lead in ("no-such-lead", LEAD_B, "bad%00id"):
            response = _call(world, method, _url(world, path, A, lead), world.tokens["a_all"])
            if response.status_code != 404 or (not page and _error(response) != "unknown_lead"):
                problems.append(f"{method} {path} lead={lead}: {response.status_code} {response.text[:80]}")
        if _call(world, method, _url(world, path, A, LEAD_A), world.tokens["a_all"]).status_code != 200:
            problems.append(f"{method} {path}: a known lead is not 200")
    assert not problems, "\n".join(problems)


def test_a_cookie_opens_pages_but_never_an_api_route(world: World) -> None:
    for method, path, page in world.routes:
        response = _call(world, method, _url(world, path, A, LEAD_A), cookie=world.tokens["a_all"])
        if page:
            assert response.status_code == 200, (method, path, response.status_code)
        else:
            assert response.status_code == 401 and _error(response) == "missing_token", (method, path)


# ------------------------------------------------------------------------------------------ login form


def test_login_sets_a_strict_http_only_cookie_and_goes_back_to_the_page(world: World) -> None:
    page = f"{world.base}/workspaces/{A}/leads/{LEAD_A}/timeline"
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        first = client.get(page)
        assert first.status_code == 401 and 'name="next"' in first.text
        assert f'value="/workspaces/{A}/leads/{LEAD_A}/timeline"' in first.text
        bad = client.post(f"{world.base}/login", data={"token": world.tokens["revoked"], "next": "/x"})
        assert bad.status_code == 401 and "revoked" in bad.text and "set-cookie" not in bad.headers
        ok = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"],
                                                      "next": f"/workspaces/{A}/leads/{LEAD_A}/timeline"})
        assert ok.status_code == 303 and ok.headers["location"] == f"/workspaces/{A}/leads/{LEAD_A}/timeline"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/" in cookie and "Secure" not in cookie  # plain http here
        shown = client.get(page)
        assert shown.status_code == 200 and "data-appointment-id" in shown.text
        assert shown.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in shown.headers["content-security-policy"]
        status = client.get(f"{world.base}/login")
        assert f"Signed in for workspace {A}" in status.text
        out = client.post(f"{world.base}/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        assert client.get(page).status_code == 401


def test_login_over_https_sets_a_secure_cookie_and_never_redirects_elsewhere(world: World) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        ok = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"], "next": "//evil.example/x"},
                         headers={"X-Forwarded-Proto": "https"})
        assert ok.status_code == 303 and ok.headers["location"] == "/login"
        assert "Secure" in ok.headers["set-cookie"]
        for bad_next in ("https://evil.example/", "/\\evil.example", "javascript:alert(1)", "/a\r\nSet-Cookie: x=1"):
            r = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"], "next": bad_next})
            assert r.status_code == 303 and r.headers["location"] == "/login", bad_next


def test_a_cross_site_login_is_refused(world: World) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            r = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"]}, headers=headers)
            assert r.status_code == 403 and "set-cookie" not in r.headers, headers
        same = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"]},
                           headers={"Origin": world.base, "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 303


def test_a_cross_site_navigation_without_credentials_reloads_once(world: World) -> None:
    """A link from another site arrives without the Strict cookie: the login form reloads the page once (from this
    site, so with the cookie); a same-site request without credentials just gets the form."""
    page = f"{world.base}/workspaces/{A}/leads/{LEAD_A}/timeline"
    cross = httpx.get(page, headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert cross.status_code == 401 and '<meta http-equiv="refresh" content="0">' in cross.text
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {}):
        same = httpx.get(page, headers=headers, timeout=10)
        assert same.status_code == 401 and "refresh" not in same.text
    bad = httpx.get(page, headers={"Sec-Fetch-Site": "cross-site"}, cookies={SESSION_COOKIE: "garbage"}, timeout=10)
    assert bad.status_code == 401 and "refresh" not in bad.text  # a bad cookie was sent: nothing to retry


def test_behind_a_proxy_the_origin_is_compared_with_the_forwarded_host(world: World) -> None:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        ok = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"]},
                         headers={"Origin": "https://crm-history.example", "X-Forwarded-Host": "crm-history.example"})
        assert ok.status_code == 303
        refused = client.post(f"{world.base}/login", data={"token": world.tokens["a_read"]},
                              headers={"Origin": "https://evil.example", "X-Forwarded-Host": "crm-history.example"})
        assert refused.status_code == 403


def test_a_revoked_session_cookie_is_cleared_and_the_login_form_shown(world: World, engine: sa.Engine) -> None:
    token = create_token(engine, A, "read")
    page = f"{world.base}/workspaces/{A}/leads/{LEAD_A}/timeline"
    assert _call(world, "GET", page, cookie=token.token).status_code == 200
    revoke_token(engine, A, str(token.id))
    response = _call(world, "GET", page, cookie=token.token)
    assert response.status_code == 401 and "has been revoked" in response.text
    assert "Max-Age=0" in response.headers["set-cookie"]


# ------------------------------------------------------------------------------------- the history API


def _get(world: World, path: str, token: str = "a_read", **params: str) -> httpx.Response:
    return httpx.get(f"{world.base}/api/v1/workspaces/{A}/leads/{LEAD_A}/{path}", params=params,
                     headers={"Authorization": f"Bearer {world.tokens[token]}"}, timeout=10)


def test_the_api_answers_what_the_store_reads(world: World, engine: sa.Engine) -> None:
    response = _get(world, "appointments")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    body = response.json()
    with engine.connect() as conn:
        stored = read_history(conn, A, LEAD_A, HistoryFilters(), datetime.now(UTC))
    assert stored is not None and body == stored.as_dict()
    assert [a["id"] for a in body["appointments"]] == world.timeline.ordered_ids()
    t = world.timeline
    kept = [n for n in Timeline.ORDER if n != "canceled"]
    for params, names in ((("include_canceled", "0"), kept), (("include_canceled", "false"), kept),
                          (("active_only", "1"), list(Timeline.ACTIVE)),
                          (("active_only", "true"), list(Timeline.ACTIVE)),
                          (("limit", "2"), list(Timeline.ORDER[:2]))):
        got = _get(world, "appointments", **dict([params])).json()
        assert [a["id"] for a in got["appointments"]] == t.ordered_ids(tuple(names)), params
    status = _get(world, "booking-status").json()
    assert status["primary"]["id"] == str(t.ids["ghl_moved"]) and status["appointment_count"] == 6


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"include_canceled": "yes"},
                                    {"active_only": "TRUE"}, {"active_only": ""}])
def test_malformed_queries_are_422(world: World, params: dict[str, str]) -> None:
    assert _get(world, "appointments", **params).status_code == 422


#: Routes that answer without a token (operations probes: counts and reason codes only, docs/operations.md §3).
OPEN_ROUTES = ("/health", "/metrics")


def test_health_stays_open_and_webhooks_keep_their_signature_auth(world: World) -> None:
    for route in OPEN_ROUTES:
        assert httpx.get(f"{world.base}{route}", timeout=10).status_code == 200, route
    for provider in ("ghl", "calendly"):
        r = httpx.post(f"{world.base}/webhooks/{provider}/{A}", content=b"{}", timeout=10,
                       headers={"Content-Type": "application/json", "Authorization": f"Bearer {world.tokens['a_all']}"})
        assert r.status_code == 401 and r.json()["error"] in ("no_key", "missing_signature"), r.text


def test_tokens_never_reach_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for token in world.tokens.values():
        _call(world, "GET", f"{world.base}/api/v1/workspaces/{A}/leads/{LEAD_A}/appointments", token)
        _call(world, "GET", f"{world.base}/workspaces/{B}/leads/{LEAD_B}/timeline", cookie=token)
        httpx.post(f"{world.base}/login", data={"token": token}, timeout=10)
    # everything the service, uvicorn and psycopg logged (the test's own HTTP client logs its headers: not ours)
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in records)
    for token in world.tokens.values():
        assert token not in text


def test_a_revoked_token_is_refused_once_its_cached_grant_expires(engine: sa.Engine, database_url: str,
                                                                 world: World) -> None:
    """Verified grants are reused for ``token_cache_ttl_s`` (one query less per request); a revocation takes effect
    at the latest that long after ``tokens revoke``."""
    token = create_token(engine, A, "read")
    app = create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY, token_cache_ttl_s=0.5))
    url = "/api/v1/workspaces/{workspace_id}/leads/{lead_id}/appointments"
    with SimulatorServer(app) as server:
        target = server.base_url + url.format(workspace_id=A, lead_id=LEAD_A)
        headers = {"Authorization": f"Bearer {token.token}"}
        assert httpx.get(target, headers=headers, timeout=10).status_code == 200
        revoke_token(engine, A, str(token.id))
        time.sleep(0.6)
        refused = httpx.get(target, headers=headers, timeout=10)
        assert (refused.status_code, refused.json()) == (401, {"error": "token_revoked"})
