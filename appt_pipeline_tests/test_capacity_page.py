"""The capacity API and page (SPEC §9, §10 "Access"): ``GET /api/v1/workspaces/{ws}/capacity?days=N`` answers the
store's one-statement capacity (the numbers of ``appt-pipeline capacity --json``), the page shows the same numbers
in its table and draws the per-day chart — checked in a real headless Chromium after signing in through the login
form. Data relative to the real clock (the service computes for now): slots and bookings at whole hours well
inside the window, so the few milliseconds between the service's ``now`` and the test's do not matter."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.store.capacity import read_capacity
from appt_pipeline.store.tokens import create_token
from appt_pipeline_tests.conftest import APP_TABLES
from appt_pipeline_tests.helpers import SECRET_KEY
from appt_pipeline_tests.helpers.browser import sign_in
from appt_pipeline_tests.helpers.capacity import book, offer, workspace

WS, OTHER, EMPTY = "capws", "capother", "capempty"
CAL_A, CAL_B = "calA", "calB"


@dataclass(frozen=True)
class Site:
    base: str
    token: str
    other_token: str
    empty_token: str
    day0: datetime


@pytest.fixture(scope="module")
def site(engine: sa.Engine, database_url: str) -> Iterator[Site]:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
    now = datetime.now(UTC)
    day0 = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    workspace(engine, WS, default=CAL_A, direct=CAL_B)
    workspace(engine, OTHER, default="calO")
    workspace(engine, EMPTY)  # no configured calendar
    fetched, stale_at = now - timedelta(minutes=5), now + timedelta(hours=2)
    for d in range(6):  # 6 days: calA 10:00–13:00 (4 slots a day), calB 12:00–15:00 (shares 12:00, 13:00)
        day = day0 + timedelta(days=d)
        offer(engine, WS, CAL_A, [day + timedelta(hours=h) for h in (10, 11, 12, 13)], fetched_at=fetched,
              stale_at=stale_at) if d == 0 else _more_slots(engine, CAL_A, [day + timedelta(hours=h) for h in
                                                                           (10, 11, 12, 13)])
    offer(engine, WS, CAL_B, [day0 + timedelta(days=d, hours=h) for d in range(6) for h in (12, 13, 14, 15)],
          source="DIRECT_BOOK", fetched_at=fetched - timedelta(hours=5), stale_at=now - timedelta(hours=1),
          last_error="provider answered 503")
    for d, h, cal in ((0, 15, CAL_A), (0, 16, CAL_A), (1, 9, CAL_B), (2, 17, None), (3, 9, None), (3, 10, CAL_A)):
        book(engine, WS, day0 + timedelta(days=d, hours=h), calendar=cal)
    book(engine, WS, day0 + timedelta(days=1, hours=18), status="CANCELED", calendar=CAL_A)  # not counted
    book(engine, WS, day0 + timedelta(days=40), calendar=CAL_A)  # outside a 30-day window
    app = create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY, token_cache_ttl_s=0))
    with SimulatorServer(app) as server:
        yield Site(server.base_url, create_token(engine, WS, "read").token, create_token(engine, OTHER, "read").token,
                   create_token(engine, EMPTY, "read").token, day0)


def _more_slots(engine: sa.Engine, key: str, starts: list[datetime]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO calendar_availability (workspace_id, provider, calendar_key, availability_source, slot_start, "
            "slot_minutes, fetched_at, stale_at) SELECT workspace_id, provider, calendar_key, availability_source, "
            ":start, 30, fetched_at, stale_at FROM calendar_availability_status WHERE workspace_id = :ws "
            "AND calendar_key = :k"), [{"ws": WS, "k": key, "start": s} for s in starts])


def _get(site: Site, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(site.base + path, headers=headers, timeout=30)


def _numbers(report: dict[str, Any]) -> Any:
    return report["window_days"], report["workspaces"]


def test_the_api_answers_the_stores_capacity(site: Site, engine: sa.Engine) -> None:
    for days in (30, 2):
        got = _get(site, f"/api/v1/workspaces/{WS}/capacity?days={days}", site.token)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/json"
        body = got.json()
        assert _numbers(body) == _numbers(read_capacity(engine, [WS], days=days, now=datetime.now(UTC)).as_dict())
        assert set(body) == {"window_days", "window_start", "window_end", "workspaces"}
    body = _get(site, f"/api/v1/workspaces/{WS}/capacity", site.token).json()
    assert body["window_days"] == 30
    ws = body["workspaces"][0]
    by_key = {c["calendar_key"]: c for c in ws["calendars"]}
    # calA: 24 slots, 3 CONFIRMED attributed; calB: 24 slots, 1 booked, stale with its error; the total is the
    # union (36 distinct slots) and every CONFIRMED booking in the window (6, 2 unattributed)
    assert (by_key[CAL_A]["booked_slots"], by_key[CAL_A]["available_slots"], by_key[CAL_A]["stale"]) == (3, 24, False)
    assert (by_key[CAL_B]["booked_slots"], by_key[CAL_B]["available_slots"]) == (1, 24)
    assert by_key[CAL_B]["stale"] and by_key[CAL_B]["last_error"] == "provider answered 503"
    assert ws["total"] == {"booked_slots": 6, "available_slots": 36, "total_slots": 42,
                           "booked_pct": pytest.approx(6 / 42), "unattributed_booked_slots": 2}


def test_a_workspace_without_calendars_is_reported(site: Site) -> None:
    body = _get(site, f"/api/v1/workspaces/{EMPTY}/capacity", site.empty_token).json()
    ws = body["workspaces"][0]
    assert ws["calendars"] == [] and ws["total"]["available_slots"] == 0 and ws["total"]["booked_pct"] is None


@pytest.mark.parametrize("query", ["days=0", "days=91", "days=x", "window=3"])
def test_a_bad_query_is_a_422(site: Site, query: str) -> None:
    assert _get(site, f"/api/v1/workspaces/{WS}/capacity?{query}", site.token).status_code == 422


def test_access_of_the_capacity_routes(site: Site) -> None:
    for path in (f"/api/v1/workspaces/{WS}/capacity", f"/workspaces/{WS}/capacity"):
        assert _get(site, path, None).status_code == 401
        assert _get(site, path, "appt_" + "x" * 43).status_code == 401
        assert _get(site, path, site.other_token).status_code == 403  # a token of another workspace
    page = _get(site, f"/workspaces/{WS}/capacity", site.token)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_the_page_shows_the_numbers_of_the_api_and_draws_the_chart(page: Page, site: Site, tmp_path: Path) -> None:
    path = f"/workspaces/{WS}/capacity"
    sign_in(page, site.base, path, site.token)
    api = _get(site, f"/api/v1/workspaces/{WS}/capacity", site.token).json()["workspaces"][0]
    table = page.locator("[data-capacity-table]")
    expect(table).to_be_visible()
    for cal in [*api["calendars"], {"calendar_key": "*", **api["total"]}]:
        row = table.locator(f'tr[data-calendar-key="{cal["calendar_key"]}"]')
        for col in ("booked_slots", "available_slots", "total_slots"):
            expect(row.locator(f'[data-col="{col}"]')).to_have_text(str(cal[col]))
        pct = cal["booked_pct"]
        expect(row.locator('[data-col="booked_pct"]')).to_have_text("—" if pct is None else f"{pct * 100:.1f} %")
    expect(page.get_by_role("alert")).to_contain_text("calB failed: provider answered 503")
    # the chart: one bar per UTC day of the window, each drawn with the day's numbers of the API's total
    chart = page.locator("[data-capacity-chart]")
    expect(chart).to_be_visible()
    total_days = {d["date"]: d for d in api["days"] if d["calendar_key"] == "*"}
    bars = chart.locator("g.bar")
    assert bars.count() == len(total_days) >= 30
    first = site.day0.date().isoformat()
    bar = chart.locator(f'g.bar[data-day="{first}"]')
    assert (int(bar.get_attribute("data-booked") or -1), int(bar.get_attribute("data-available") or -1)) == \
        (total_days[first]["booked_slots"], total_days[first]["available_slots"]) == (2, 6)
    box = bar.locator("rect.available").bounding_box()
    assert box is not None and box["height"] > 10 and box["width"] > 2  # drawn, not just in the DOM
    assert bar.locator("rect.booked").bounding_box()["height"] > 2  # type: ignore[index]
    # the window picker reloads with another window
    page.get_by_role("link", name="7 days").click()
    page.wait_for_url(f"{site.base}{path}?days=7")
    assert page.locator("[data-capacity-chart] g.bar").count() in (7, 8)
    page.screenshot(path=str(tmp_path / "capacity.png"), full_page=True)
