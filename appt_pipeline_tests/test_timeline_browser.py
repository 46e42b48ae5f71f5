"""The timeline page (SPEC §10) in a real headless Chromium (Debian's ``chromium``, driven by Playwright), served by
the real service on loopback against the real test database.

A person signs in through the login form, sees the rows newest first with a reschedule chain drawn between two
rows, and each checkbox ("Show canceled", "Active only") changes the visible rows as the history API's filters
would — without a reload, without a console error (the page's Content-Security-Policy would report one). A lead
without rows shows its rollup; a page of another workspace is refused. A screenshot is written to the test's
temporary folder.

One server and one browser for the module. Without ``/usr/bin/chromium`` the module is skipped, except in CI
(``CI=true``), where that is a failure (``.ci/run`` installs the package).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from appt_pipeline.domain.history import format_move
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.service import ServiceSettings, create_app
from appt_pipeline.store.tokens import create_token
from appt_pipeline_tests.conftest import APP_TABLES
from appt_pipeline_tests.helpers import SECRET_KEY, seed
from appt_pipeline_tests.helpers.browser import sign_in
from appt_pipeline_tests.helpers.history import LEAD_ZONE, Timeline, seed_timeline

WS, OTHER = "acme", "globex"
LEAD, ROLLUP_LEAD = "acme_lead0", "acme_lead1"


@dataclass(frozen=True)
class Site:
    base: str
    timeline: Timeline
    token: str
    other_token: str


@pytest.fixture(scope="module")
def site(engine: sa.Engine, database_url: str) -> Iterator[Site]:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {APP_TABLES} RESTART IDENTITY CASCADE")
    seed(engine, WS, 2, timezone="America/Chicago", lead_tz=LEAD_ZONE)
    seed(engine, OTHER, 1)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE leads SET timezone = NULL, ghl_appointment_id = 'legacy-77', appointment_status = 'confirmed', "
            "booked_slot = '2026-03-05T15:00:00.000Z', appointment_provider = 'GHL', appointment_source = 'manual' "
            "WHERE id = :id"), {"id": ROLLUP_LEAD})
    timeline = seed_timeline(engine, WS, LEAD, datetime.now(UTC))
    app = create_app(ServiceSettings(database_url=database_url, secret_key=SECRET_KEY))
    with SimulatorServer(app) as server:
        yield Site(server.base_url, timeline, create_token(engine, WS, "read").token,
                   create_token(engine, OTHER, "read").token)


def visible_ids(page: Page) -> list[str]:
    return page.locator(".tl-row:visible").evaluate_all("rows => rows.map(r => r.dataset.appointmentId)")


def test_sign_in_and_filter_the_timeline(page: Page, site: Site, tmp_path: Path) -> None:
    t = site.timeline
    path = f"/workspaces/{WS}/leads/{LEAD}/timeline"
    sign_in(page, site.base, path, site.token)
    rows = page.locator("[data-appointment-id]")
    expect(rows).to_have_count(len(Timeline.ORDER))
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.appointmentId)") == t.ordered_ids()
    statuses = rows.evaluate_all("rs => rs.map(r => r.dataset.status)")
    assert statuses == ["CONFIRMED", "RESCHEDULED", "CONFIRMED", "CANCELED", "CONFIRMED", "SHOWED"]
    assert visible_ids(page) == t.ordered_ids()

    # the reschedule chain: links in both rows and one connector drawn between them
    new_row = page.locator(f'[data-appointment-id="{t.ids["cal_new"]}"]')
    expect(new_row.locator(".chain-link")).to_be_visible()
    expect(new_row.locator(".chain-link")).to_have_attribute("href", f"#appt-{t.ids['cal_old']}")
    connector = page.locator("path.chain-path")
    expect(connector).to_have_count(1)
    assert connector.get_attribute("data-from") == str(t.ids["cal_old"])
    box = connector.bounding_box()
    assert box is not None and box["height"] > 50  # spans from one row to the other
    zone = ZoneInfo(LEAD_ZONE)
    move = format_move(t.times["ghl_moved_from"], t.times["ghl_moved"], zone)
    expect(page.locator(f'[data-appointment-id="{t.ids["ghl_moved"]}"] .tl-move')).to_contain_text(move)
    expect(new_row.locator(".tl-move")).to_contain_text(format_move(t.times["cal_old"], t.times["cal_new"], zone))
    expect(page.get_by_text(f"Times in {LEAD_ZONE}")).to_be_visible()

    page.evaluate("window.__notReloaded = true")
    show_canceled, active_only = page.get_by_label("Show canceled"), page.get_by_label("Active only")
    expect(show_canceled).to_be_checked()
    expect(active_only).not_to_be_checked()

    show_canceled.uncheck()
    assert visible_ids(page) == t.ordered_ids(tuple(n for n in Timeline.ORDER if n != "canceled"))
    expect(page.locator("[data-visible-count]")).to_have_text("5 of 6 shown")
    active_only.check()
    assert visible_ids(page) == t.ordered_ids(Timeline.ACTIVE)
    expect(connector).to_have_count(0)  # the RESCHEDULED end of the chain is hidden
    show_canceled.check()
    assert visible_ids(page) == t.ordered_ids(Timeline.ACTIVE)  # a canceled row is never active
    active_only.uncheck()
    assert visible_ids(page) == t.ordered_ids()
    expect(page.locator("path.chain-path")).to_have_count(1)
    assert page.evaluate("window.__notReloaded") is True  # filtered in place

    shot = tmp_path / "timeline.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_link_from_another_site_keeps_the_session(page: Page, site: Site) -> None:
    """The CRM (another site: ``localhost`` is not ``127.0.0.1``) links to the timeline. The browser does not send
    the SameSite=Strict cookie with that navigation; the page reloads itself once and the signed-in person sees
    the timeline, not the login form."""
    path = f"/workspaces/{WS}/leads/{LEAD}/timeline"
    sign_in(page, site.base, path, site.token)

    async def crm(scope: dict, receive: object, send: Any) -> None:
        body = f'<!doctype html><a id="open" href="{site.base}{path}">timeline</a>'.encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": body})

    with SimulatorServer(crm) as other:
        page.goto(f"http://localhost:{other.port}/")
        page.click("#open")
        page.wait_for_url(site.base + path)
        expect(page.locator("[data-appointment-id]")).to_have_count(len(Timeline.ORDER))
    expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)


def test_a_lead_without_rows_shows_its_rollup(page: Page, site: Site, tmp_path: Path) -> None:
    path = f"/workspaces/{WS}/leads/{ROLLUP_LEAD}/timeline"
    sign_in(page, site.base, path, site.token)
    row = page.locator("[data-appointment-id]")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-appointment-id", "")
    expect(row).to_have_attribute("data-status", "CONFIRMED")
    expect(row).to_contain_text("From the lead record")
    expect(row).to_contain_text("Appointment legacy-77")
    expect(page.get_by_text("No appointment history has been recorded for this lead yet")).to_be_visible()
    # the lead has no zone: the workspace's is used
    expect(page.get_by_text("Times in America/Chicago (the workspace's time zone)")).to_be_visible()
    page.screenshot(path=str(tmp_path / "rollup.png"), full_page=True)


def test_a_page_of_another_workspace_is_refused(page: Page, site: Site) -> None:
    sign_in(page, site.base, f"/workspaces/{OTHER}/leads/{OTHER}_lead0/timeline", site.other_token)
    response = page.goto(f"{site.base}/workspaces/{WS}/leads/{LEAD}/timeline")
    assert response is not None and response.status == 403
    expect(page.get_by_text("Your token belongs to another workspace.")).to_be_visible()
    expect(page.locator("[data-appointment-id]")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{site.base}/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
