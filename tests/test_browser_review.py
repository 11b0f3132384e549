"""Real headless Chromium against a live server: log-in, review, queries, exports, dashboards,
and an axe-core accessibility check of the main pages.

Each test keeps a screenshot of its final page under test-artifacts/.
"""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from tests.browser_support import axe_violations, login, screenshot, submit
from tests.conftest import DEMO_PASSWORD

pytestmark = pytest.mark.browser
#: The fixtures chromium, start_server and new_page.
pytest_plugins = ["tests.browser_fixtures"]


def test_login_and_the_lockout_message(new_page):
    page = new_page()
    page.goto("/records/KMU-0001")
    page.wait_for_url("**/login?next=*")  # not logged in: sent to the log-in page
    for _ in range(5):
        page.get_by_label("User name").fill("coordinator")
        page.get_by_label("Password").fill("not-the-password")
        submit(page, "Log in")
        password = page.get_by_label("Password")
        assert password.get_attribute("aria-invalid") == "true"
    # The sixth try, even with the right password, gets the lock-out message, linked to the field.
    page.get_by_label("User name").fill("coordinator")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    submit(page, "Log in")
    message = page.locator("#password-error")
    assert message.inner_text().startswith("Too many failed log-ins: this account is locked for 15 minutes.")
    assert page.get_by_label("Password").get_attribute("aria-describedby") == "password-error"
    assert "/login" in page.url
    # Another account is not affected.
    login(page, "investigator")
    assert page.get_by_role("heading", level=1).count() == 1
    screenshot(page, "login-lockout")


def test_investigator_signs_and_the_record_locks(new_page):
    page = new_page()
    login(page, "investigator")
    page.get_by_role("link", name="Review").click()
    row = page.get_by_role("row", name=re.compile("KMU-0002"))
    row.get_by_role("link", name="Review and sign").click()
    page.get_by_label("I approve this record").check()
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign and lock").click()
    page.wait_for_url("**/records/KMU-0002")
    signoff = page.get_by_role("region", name="Sign-off")
    assert "Signed by" in signoff.inner_text() and "I approve this record" in signoff.inner_text()
    assert signoff.get_by_text("Locked").is_visible()
    # The form is now read-only for everybody, the coordinator included.
    coordinator = new_page(base_url=page.url.split("/records")[0])
    login(coordinator, "coordinator")
    coordinator.goto("/records/KMU-0002/treatment/1")
    assert "locked" in coordinator.get_by_text(re.compile("signed and is locked")).inner_text()
    assert coordinator.get_by_role("button", name="Save and exit").count() == 0
    assert coordinator.locator("#treatment_type-0").is_disabled()
    assert page.get_by_role("link", name="Review and sign").count() == 0
    screenshot(coordinator, "signed-locked")


def test_monitor_raises_a_query_and_the_coordinator_answers(new_page):
    monitor = new_page()
    login(monitor, "monitor")
    monitor.goto("/records/KMU-0003/lesion_presentation/1")
    monitor.get_by_label("Raise a query on").select_option(label="Number of nodules")
    monitor.get_by_label("Query", exact=True).fill("The chart says three nodules: please check the source.")
    submit(monitor, "Raise query")
    raised = monitor.locator("#row-nodule_count .cb-query")
    assert "(open)" in raised.inner_text()

    coordinator = new_page(base_url=monitor.url.split("/records")[0])
    login(coordinator, "coordinator")
    coordinator.goto("/sites/KMU/records")
    coordinator.get_by_role("row", name=re.compile("KMU-0003")).get_by_role("link", name="1 open").click()
    coordinator.get_by_role("link", name=re.compile("Number of nodules")).click()
    query_id = re.search(r"#(\d+)", raised.inner_text()).group(1)
    coordinator.get_by_label(f"Answer query #{query_id}").fill("Checked: the clinic letter says two.")
    submit(coordinator, "Answer")
    assert "(answered)" in coordinator.locator("#row-nodule_count .cb-query").inner_text()

    monitor.reload()
    answered = monitor.locator("#row-nodule_count .cb-query")
    assert "(answered)" in answered.inner_text()
    assert "Checked: the clinic letter says two." in answered.inner_text()
    screenshot(monitor, "query-answered")


def test_statistician_downloads_the_pooled_bundle_with_progress(new_page):
    page = new_page()
    login(page, "statistician")
    page.get_by_role("link", name="Exports").click()
    page.locator("section", has_text="pooled").get_by_role("link", name="Preview").first.click()
    page.get_by_role("button", name=re.compile("Download the bundle")).click()
    page.wait_for_url(re.compile(r"/exports/jobs/[\w-]+$"))
    assert page.get_by_role("progressbar").count() == 1
    download_link = page.get_by_role("link", name="Download the bundle")
    download_link.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "export-download"
    assert page.locator("#export-progress").get_attribute("value") == "100"
    assert "Ready. 3 records exported." in page.get_by_role("status").inner_text()
    with page.expect_download() as info:
        download_link.click()
    download = info.value
    assert re.fullmatch(r"nicc-pooled_case_series-\d{8}T\d{6}Z\.zip", download.suggested_filename)
    archive = zipfile.ZipFile(download.path())
    names = set(archive.namelist())
    for expected in ("manifest.json", "datapackage.json", "codebook.csv", "codebook.html", "csv/cases.csv",
                     "csv_labels/cases.csv", "parquet/cases.parquet", "stata/cases.dta", "spss/cases.sav",
                     "odm/pooled_case_series.xml"):
        assert expected in names, expected
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["exported_by"]["username"] == "statistician"
    assert manifest["tables"]["cases"]["rows"] == 3
    header = archive.read("csv/cases.csv").decode("utf-8").splitlines()[0].split(",")
    assert "study_id" in header[0] and "initials" not in header and "hospital_number" not in header
    screenshot(page, "export-ready")


def test_main_pages_have_no_serious_accessibility_violations(new_page):
    page = new_page()
    page.goto("/login")
    problems = {"login": axe_violations(page)}
    login(page, "admin")
    pages = {
        "home": "/", "grid": "/sites/KMU/records", "record": "/records/KMU-0001",
        "form": "/records/KMU-0001/lesion_presentation/1", "review": "/review", "exports": "/exports",
        "export preview": "/exports/pooled_case_series", "print": "/records/KMU-0001/print",
        "queries": "/sites/KMU/queries", "quality": "/sites/KMU/quality",
    }
    for name, url in pages.items():
        page.goto(url)
        problems[name] = axe_violations(page)
    # A form with errors shown (the summary, invalid fields) and a live warning.
    page.goto("/records/KMU-0001/enrolment/1")
    page.locator("#ga_weeks__missing").select_option("")
    page.locator("#ga_weeks").fill("50")
    submit(page, "Save and stay")
    page.locator("#cb-error-summary").wait_for()
    problems["form with errors"] = axe_violations(page)
    assert {name: found for name, found in problems.items() if found} == {}
    screenshot(page, "accessibility-form-errors")


def test_site_dashboard_renders_its_plots(new_page):
    page = new_page()
    login(page, "investigator")
    page.goto("/sites/KMU/dashboard")
    plots = page.locator("svg[role='img']")
    assert plots.count() >= 1
    for i in range(plots.count()):
        plot = plots.nth(i)
        assert plot.is_visible()
        label = plot.get_attribute("aria-label") or plot.locator("title").first.text_content()
        assert label and label.strip()
        box = plot.bounding_box()
        assert box["width"] > 100 and box["height"] > 50
    assert axe_violations(page) == []
    screenshot(page, "site-dashboard")
