"""Real headless Chromium against a live server: what the coordinator sees while typing."""

from __future__ import annotations

import pytest

from tests.browser_support import CHROMIUM_ARGS, chromium_path, live_server, screenshot
from tests.conftest import DEMO_PASSWORD, make_app

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page(demo):
    executable = chromium_path()
    if executable is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (make browser-deps)")
    from playwright.sync_api import sync_playwright

    server_app = make_app(demo.config["SQLALCHEMY_DATABASE_URI"])
    with live_server(server_app) as base_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
        context.close()
        browser.close()


def _login(page, username: str) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def test_branching_shows_and_hides_fields_live(browser_page):
    page = browser_page
    _login(page, "coordinator")
    page.goto("/records/KMU-0001/calcium_exposure/new")
    other_row = page.locator("#row-drug_other")
    assert other_row.is_hidden()
    page.get_by_role("radio", name="Other").first.check()
    assert other_row.is_visible()
    page.get_by_role("radio", name="Calcium gluconate").check()
    assert other_row.is_hidden()
    date_row = page.locator("#row-extravasation_date")
    assert date_row.is_hidden()
    page.locator("#row-extravasation_recognised").get_by_role("radio", name="Yes").check()
    assert date_row.is_visible()
    screenshot(page, "branching-exposure")


def test_checkbox_branching_calculation_and_missing_codes(browser_page):
    page = browser_page
    _login(page, "coordinator")
    page.goto("/records/KMU-0002/lesion_presentation/1")
    ulcer = page.locator("#row-ulcer_size_mm")
    assert ulcer.is_hidden()
    page.get_by_role("checkbox", name="Ulceration").check()
    assert ulcer.is_visible()
    page.get_by_role("checkbox", name="Ulceration").uncheck()
    assert ulcer.is_hidden()
    # The published case has no dates: the age is the reported one, and updates as typed.
    age = page.locator("#age_presentation_days")
    assert age.input_value() == "28"
    page.locator("#age_presentation_reported_days").fill("30")
    assert age.input_value() == "30"
    # Choosing a missing-data code disables the value input.
    page.locator("#nodule_count__missing").select_option("")
    assert page.locator("#nodule_count").is_enabled()
    page.locator("#nodule_count__missing").select_option("UNK")
    assert page.locator("#nodule_count").is_disabled()
    screenshot(page, "branching-lesion")
