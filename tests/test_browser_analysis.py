"""The analysis page in a real browser: its plots display under the page's Content-Security-Policy
(no inline style is needed: each plot is an SVG image with a text alternative) and the page has no
serious WCAG 2.1 A/AA violation."""

from __future__ import annotations

from tests.browser_support import axe_violations, login, screenshot

#: The fixtures chromium, start_server and new_page.
pytest_plugins = ["tests.browser_fixtures"]


def test_analysis_page_shows_its_plots_accessibly(new_page):
    page = new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if "Content Security Policy" in message.text
            else None)
    login(page, "statistician")
    page.get_by_role("link", name="Analysis").click()
    page.wait_for_url("**/analysis")
    plots = page.locator("img.cb-chart")
    assert plots.count() == 4
    for index in range(4):
        plot = plots.nth(index)
        assert plot.evaluate("image => image.complete && image.naturalWidth > 0")
        assert plot.get_attribute("alt")
    assert page.locator("#key-figures").inner_text().split("\n")[:2] == ["Cases", "3"]
    assert problems == []
    assert axe_violations(page) == []
    screenshot(page, "analysis-statistician")


def test_study_dashboard_shows_the_case_series_summary_once_computed(new_page):
    page = new_page()
    failed: list[str] = []
    login(page, "statistician")
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto("/dashboard/study")
    summary = page.locator("[data-cb-summary]")
    summary.locator("#key-figures").wait_for()
    assert summary.get_attribute("aria-busy") is None
    assert page.locator("#key-figures").inner_text().split("\n")[:2] == ["Cases", "3"]
    assert failed == []
    assert axe_violations(page) == []
    screenshot(page, "study-dashboard-summary")
