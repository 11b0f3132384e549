"""Synthetic data from the browser: admins only, only where SYNTHETIC_WEB is on (a 404
everywhere else), the same bulk generator as `flask seed-synthetic` run as a background job."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.auth.models import StudyRole
from app.auth.services import create_user
from app.extensions import db
from app.records.models import Record
from app.synthetic.bulk import SOURCE
from tests.browser_support import axe_violations, screenshot, submit
from tests.browser_support import login as browser_login
from tests.conftest import DEMO_PASSWORD, login
from tests.jobs_support import finished, job_id

#: The fixtures chromium, start_server and new_page, for the browser test at the end.
pytest_plugins = ["tests.browser_fixtures"]

ROUTES = [("GET", "/admin/synthetic", None), ("POST", "/admin/synthetic", {"sites": "1", "records": "1"}),
          ("GET", "/admin/synthetic/jobs/0123456789abcdefghijKLMN", None),
          ("GET", "/admin/synthetic/jobs/0123456789abcdefghijKLMN/state", None)]
#: Expected status per role of each route above, with the page on (anonymous users go to log in).
ON = {"admin": [200, 422, 404, 404], "coordinator": [403] * 4, "investigator": [403] * 4, "monitor": [403] * 4,
      "coordinator_nth": [403] * 4, "statistician": [403] * 4, None: [302] * 4}
BLUEPRINT_ENDPOINTS = {"synthetic.page", "synthetic.job", "synthetic.job_state"}


@pytest.fixture
def jobs(demo, tmp_path):
    demo.config["SYNTHETIC_JOBS_DIR"] = str(tmp_path / "synthetic-jobs")
    demo.config["SYNTHETIC_WEB"] = True
    return tmp_path / "synthetic-jobs"


def synthetic_records() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Record).where(Record.label.startswith("SYN")))


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("username", list(ON), ids=lambda u: u or "anonymous")
def test_who_may_open_the_synthetic_pages(demo, jobs, enabled, username):
    demo.config["SYNTHETIC_WEB"] = enabled
    client = demo.test_client()
    if username:
        login(client, username)
    got = [client.open(url, method=method, data=data).status_code for method, url, data in ROUTES]
    assert got == (ON[username] if enabled else [404] * 4)
    assert synthetic_records() == 0 and not jobs.exists()


def test_the_routes_are_the_ones_tested_here(demo):
    assert {r.endpoint for r in demo.url_map.iter_rules() if r.endpoint.startswith("synthetic.")} == \
        BLUEPRINT_ENDPOINTS


def test_an_admin_adds_synthetic_records_through_a_job(as_user, jobs):
    client = as_user("admin")
    page = client.get("/admin/synthetic").get_data(as_text=True)
    assert "CASEBOOK_SYNTHETIC_WEB" in page and "Never add synthetic records to a real study" in page
    response = client.post("/admin/synthetic", data={"sites": "2", "records": "12", "seed": "5", "confirm": "y"})
    job = job_id(response)
    state = finished(client, f"/admin/synthetic/jobs/{job}/state")
    assert state["phase"] == "done", state
    assert state["done"] == state["total"] == 12 and state["percent"] == 100
    assert state["message"] == "12 synthetic records added at 2 synthetic site(s)."
    assert synthetic_records() == 12
    by_site = [db.session.scalar(select(func.count()).select_from(Record).where(Record.label.startswith(code)))
               for code in ("SYN001-", "SYN002-")]
    assert by_site == [6, 6]
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.source == SOURCE)) > 12
    assert verify_chain(db.session).ok
    outcome = client.get(f"/admin/synthetic/jobs/{job}").get_data(as_text=True)
    assert 'href="/sites/SYN001/records"' in outcome and 'href="/sites/SYN002/records"' in outcome


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"sites": "0", "records": "10", "seed": "1"}, "sites", "A whole number from 1 to 999."),
    ({"sites": "1000", "records": "10", "seed": "1"}, "sites", "A whole number from 1 to 999."),
    ({"sites": "2", "records": "100001", "seed": "1"}, "records", "A whole number from 1 to 100,000."),
    ({"sites": "2", "records": "ten", "seed": "1"}, "records", "Not a valid integer value."),
    ({"sites": "2", "records": "", "seed": "1"}, "records", "Give the number of records."),
    ({"sites": "2", "records": "10", "seed": "-1"}, "seed", "A whole number from 0 to 2,147,483,647."),
    ({"sites": "2", "records": "10", "seed": "1"}, "confirm", "This database holds 3 real records"),
])
def test_inputs_are_checked_with_the_message_next_to_the_field(as_user, jobs, data, field, message):
    response = as_user("admin").post("/admin/synthetic", data={**data, **({} if field == "confirm" else
                                                                           {"confirm": "y"})})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert page.count('class="invalid-feedback"') == 1
    error = page[page.index(f'id="{field}-error"'):]
    assert message in error[:error.index("</div>")]
    assert synthetic_records() == 0 and not jobs.exists()


def test_a_job_is_its_starters_only(as_user, demo, jobs):
    create_user(db.session, "second_admin", "Second Admin", DEMO_PASSWORD, study_role=StudyRole.ADMIN)
    db.session.commit()
    owner = as_user("admin")
    job = job_id(owner.post("/admin/synthetic", data={"sites": "1", "records": "2", "seed": "0", "confirm": "y"}))
    finished(owner, f"/admin/synthetic/jobs/{job}/state")
    other = as_user("second_admin")
    assert other.get(f"/admin/synthetic/jobs/{job}").status_code == 404
    assert other.get(f"/admin/synthetic/jobs/{job}/state").status_code == 404
    assert owner.get(f"/admin/synthetic/jobs/{job}").status_code == 200


@pytest.mark.browser
def test_the_synthetic_page_in_the_browser(new_page, start_server, tmp_path):
    page = new_page(base_url=start_server(SYNTHETIC_WEB=True, SYNTHETIC_JOBS_DIR=str(tmp_path / "synthetic-jobs")))
    browser_login(page, "admin")
    page.goto("/imports")
    page.get_by_role("link", name="synthetic data").click()
    page.get_by_label("Records", exact=True).fill("100001")
    submit(page, "Add synthetic records")
    assert page.get_by_label("Records", exact=True).get_attribute("aria-invalid") == "true"
    assert "from 1 to 100,000" in page.locator("#records-error").inner_text()
    assert axe_violations(page) == []
    page.get_by_label("Records", exact=True).fill("8")
    page.get_by_label("Add them although this database holds real records", exact=False).check()
    submit(page, "Add synthetic records")
    summary = page.locator("#synthetic-summary")
    summary.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "synthetic-summary"
    assert summary.inner_text() == "8 synthetic records added at 2 synthetic site(s)."
    assert page.locator("#synthetic-count").inner_text() == "8 of 8 records written"
    assert axe_violations(page) == []
    screenshot(page, "synthetic-done")
