"""Pages in a real headless Chromium (Debian's ``chromium`` driven by Playwright with ``executable_path``; never
Playwright's own browser download): the module-scoped ``browser`` and per-test ``page`` fixtures, and the login
form. Without ``/usr/bin/chromium`` a module using them is skipped, except in CI (``CI=true``), where that is a
failure (``.ci/run`` installs the package)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian package `chromium`; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: the browser test cannot run in CI without it")
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    # a page answered 401 (the login form) or 403 is expected; every sub-resource (CSS, JS) must load, and no
    # script error or Content-Security-Policy violation may happen
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document" else None)
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        yield page
        assert not problems, f"console errors: {problems}"
    finally:
        context.close()


def sign_in(page: Page, base: str, path: str, token: str) -> None:
    """Open ``base + path`` (answered with the login form), paste the token, submit: back on ``path``."""
    page.goto(base + path)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Workspace token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + path)
