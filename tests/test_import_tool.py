"""The Data Import Tool: a CSV upload imported by a background job through the API's import
service: all or nothing, audited, at the user's own sites only, its problems listed by row."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from app.api.columns import import_columns
from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.auth.models import User
from app.extensions import db
from app.imports.services import IMPORT_JOBS
from app.records.models import FormInstance, Record
from app.study import current_study
from tests.browser_support import axe_violations, login, screenshot, submit
from tests.jobs_support import finished, job_id

#: The fixtures chromium, start_server and new_page, for the browser test at the end.
pytest_plugins = ["tests.browser_fixtures"]

NEW_RECORDS = "record_id,redcap_data_access_group,sex,ga_weeks,dob\nx1,,2,33,2019-07-14\nx2,,1,35,2020-01-02\n"


@pytest.fixture
def jobs(demo, tmp_path):
    demo.config["IMPORT_JOBS_DIR"] = str(tmp_path / "import-jobs")
    return tmp_path / "import-jobs"


def upload(client, text: str | bytes, *, filename: str = "records.csv", **options: str):
    data = {"file": (io.BytesIO(text.encode() if isinstance(text, str) else text), filename),
            "new_records": "existing", "overwrite": "normal", "date_format": "YMD", **options}
    return client.post("/imports", data=data, content_type="multipart/form-data")


def imported(client, text: str, **options: str) -> tuple[str, dict]:
    job = job_id(upload(client, text, **options))
    return job, finished(client, f"/imports/jobs/{job}/state")


def counts() -> tuple[int, int, int]:
    db.session.expire_all()
    return (db.session.scalar(select(func.count()).select_from(Record)),
            db.session.scalar(select(func.count()).select_from(FormInstance)),
            db.session.scalar(select(func.count()).select_from(AuditEvent)))


def test_new_records_are_created_audited_and_linked(as_user, jobs):
    client = as_user("coordinator")
    page = client.get("/imports").get_data(as_text=True)
    assert "Data Import Tool" in page and 'name="file"' in page
    before = counts()
    job, state = imported(client, NEW_RECORDS, new_records="new")
    assert state["phase"] == "done" and state["percent"] == 100
    assert state["done"] == state["total"] == 2
    assert state["message"] == "2 record(s) imported: 2 created, 0 updated."

    db.session.expire_all()
    created = db.session.scalars(select(Record).where(Record.label.in_(["KMU-0004", "KMU-0005"]))).all()
    assert len(created) == 2 and {r.site.code for r in created} == {"KMU"}
    enrolment = {f.record.label: f.data for f in db.session.scalars(
        select(FormInstance).where(FormInstance.instrument == "enrolment", FormInstance.record_id.in_(
            [r.id for r in created])))}
    assert enrolment["KMU-0004"]["ga_weeks"] == 33 and enrolment["KMU-0005"]["sex"] == "1"
    audit = db.session.scalars(select(AuditEvent).where(AuditEvent.record_label == "KMU-0004",
                                                        AuditEvent.field == "ga_weeks")).all()
    assert [(a.new_value, a.source, a.username) for a in audit] == [("33", "import", "coordinator")]
    assert counts()[0] == before[0] + 2
    assert verify_chain(db.session).ok

    outcome = client.get(f"/imports/jobs/{job}").get_data(as_text=True)
    assert 'id="job-outcome"' in outcome and "2 record(s) imported" in outcome
    assert 'href="/records/KMU-0004"' in outcome and 'href="/records/KMU-0005"' in outcome
    assert not list(jobs.glob("*/data.csv"))  # the upload is not kept once read


def test_existing_records_are_updated_and_blanks_erase_only_with_overwrite(as_user, jobs):
    client = as_user("admin")

    def ga_days() -> object:
        db.session.expire_all()
        return db.session.scalar(select(FormInstance).join(Record).where(
            Record.label == "KMU-0002", FormInstance.instrument == "enrolment")).data.get("ga_days")

    _, state = imported(client, "record_id,ga_days\nKMU-0002,3\n", reason="Chart re-read")
    assert state["phase"] == "done", state
    assert state["message"] == "1 record(s) imported: 0 created, 1 updated."
    assert ga_days() == 3
    assert imported(client, "record_id,ga_days\nKMU-0002,\n", reason="Chart re-read")[1]["phase"] == "done"
    assert ga_days() == 3  # normal: a blank leaves the stored value
    assert imported(client, "record_id,ga_days\nKMU-0002,\n", overwrite="overwrite",
                    reason="Chart re-read")[1]["phase"] == "done"
    assert ga_days() in (None, "")
    audit = db.session.scalars(select(AuditEvent).where(AuditEvent.record_label == "KMU-0002",
                                                        AuditEvent.field == "ga_days", AuditEvent.source != "demo")
                               .order_by(AuditEvent.id)).all()
    assert [(a.source, a.reason, a.username) for a in audit] == [("import", "Chart re-read", "admin")] * 2


def test_bad_values_list_row_record_field_and_write_nothing(as_user, jobs):
    client = as_user("coordinator")
    before = counts()
    text = ("record_id,redcap_repeat_instrument,redcap_repeat_instance,ga_weeks,sex,imaging_size_mm\n"
            "KMU-0001,,,33,2,\n"
            "KMU-0002,,,99,7,\n"
            "KMU-0003,imaging_followup,1,,,abc\n")
    job, state = imported(client, text, reason="Re-checked")
    assert state["phase"] == "failed"
    assert state["message"].startswith("3 problem(s) found; nothing was imported.")
    assert counts() == before  # KMU-0001's good row is not kept either

    page = client.get(f"/imports/jobs/{job}").get_data(as_text=True)
    table = page[page.index('id="import-problems"'):page.index("</table>")]
    rows = [[cell.split(">", 1)[1].split("<", 1)[0] for cell in row.split("<td")[1:]]
            for row in table.split("<tr>")[2:]]
    assert sorted(r[:4] for r in rows) == [["2", "KMU-0002", "", "7"], ["2", "KMU-0002", "", "99"],
                                           ["3", "KMU-0003", "", "abc"]]
    assert "<code>ga_weeks</code>" in table and "<code>imaging_size_mm</code>" in table
    assert "at most 45" in table


def test_a_coordinator_cannot_import_into_another_site(as_user, jobs):
    client = as_user("coordinator")  # KMU only
    before = counts()
    _, state = imported(client, "record_id,ga_weeks\nNTH-0001,30\n", reason="x")
    assert state["phase"] == "failed" and counts() == before
    job, state = imported(client, "record_id,redcap_data_access_group,sex\nx1,nth,1\n", new_records="new")
    assert state["phase"] == "failed" and counts() == before
    page = client.get(f"/imports/jobs/{job}").get_data(as_text=True)
    assert "You cannot create records in this data access group." in page
    assert "<td>x1</td><td><code>redcap_data_access_group</code></td><td>nth</td>" in page.replace("\n", "")


@pytest.mark.parametrize(("content", "filename", "message"), [
    ("", "records.csv", "The file is empty."),
    ("record_id,no_such_field\nKMU-0001,1\n", "records.csv", "not found in the project as real data fields: "
                                                             "no_such_field"),
    ("sex\n1\n", "records.csv", "The record ID field &#39;record_id&#39; is missing"),
    ("record_id\n", "records.csv", "The data contain no records"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "records.csv", "not CSV text in UTF-8"),
    ("record_id,sex\nKMU-0001,1\n", "records.xlsx", "The file must be a CSV file (.csv)"),
])
def test_a_wrong_file_is_a_message_next_to_the_upload_field(as_user, jobs, content, filename, message):
    client = as_user("coordinator")
    before = counts()
    response = upload(client, content, filename=filename)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    error = page[page.index('id="file-error"'):]
    assert message in error[:error.index("</div>")]
    assert 'aria-invalid="true"' in page
    assert counts() == before and not jobs.exists()


def test_no_file_and_too_large_a_file_are_messages_too(as_user, demo, jobs):
    client = as_user("coordinator")
    missing = client.post("/imports", data={"new_records": "existing"}, content_type="multipart/form-data")
    assert missing.status_code == 422 and "Choose a CSV file." in missing.get_data(as_text=True)
    demo.config["MAX_CONTENT_LENGTH"] = 2048
    large = upload(client, "record_id,sex\n" + "KMU-0001,1\n" * 400)
    assert large.status_code == 413
    page = large.get_data(as_text=True)
    assert 'id="file-error"' in page and "The file is larger than 2 KB" in page


def test_the_template_lists_the_import_columns(as_user):
    response = as_user("coordinator").get("/imports/template.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "ImportTemplate" in response.headers["Content-Disposition"]
    header = next(csv.reader(io.StringIO(response.get_data(as_text=True))))
    study = current_study()
    assert header[:4] == ["record_id", "redcap_repeat_instrument", "redcap_repeat_instance",
                          "redcap_data_access_group"]
    assert set(header) <= set(import_columns(study))
    assert "enrolment_complete" in header and "skin_findings___1" in header
    calculated = [f.name for i in study.instruments for f in i.fields if f.type == "calc"]
    assert calculated and not set(calculated) & set(header)


def test_progress_moves_record_by_record_and_is_shown_with_thousands(as_user, demo, jobs, monkeypatch):
    saved: list[tuple[str, int, int]] = []
    save = IMPORT_JOBS.save

    def spy(app, state):
        saved.append((state.phase, state.done, state.total))
        return save(app, state)

    monkeypatch.setattr("app.jobs.SAVE_EVERY_SECONDS", 0)
    monkeypatch.setattr(IMPORT_JOBS, "save", spy)
    client = as_user("coordinator")
    text = "record_id,sex\n" + "".join(f"n{n},1\n" for n in range(3))
    imported(client, text, new_records="new")
    assert saved == [("importing", 0, 3), ("importing", 1, 3), ("importing", 2, 3), ("finishing", 3, 3),
                     ("finishing", 3, 3), ("done", 3, 3)]

    user = db.session.scalar(select(User).where(User.username == "coordinator"))
    job = IMPORT_JOBS.start(demo, user, lambda job, user: None, phase="importing", total=3000)
    state = IMPORT_JOBS.load(demo, job)
    save(demo, replace(state, done=1200))
    page = client.get(f"/imports/jobs/{job}").get_data(as_text=True)
    assert "1,200 of 3,000 records" in page and 'value="39"' in page
    assert client.get(f"/imports/jobs/{job}/state").get_json()["percent"] == 39


def test_a_job_is_its_starters_only(as_user, jobs):
    owner = as_user("coordinator")
    job, _ = imported(owner, NEW_RECORDS, new_records="new")
    for other in ("admin", "coordinator_nth"):
        intruder = as_user(other)
        assert intruder.get(f"/imports/jobs/{job}").status_code == 404
        assert intruder.get(f"/imports/jobs/{job}/state").status_code == 404
    assert owner.get("/imports/jobs/not-a-job/state").status_code == 404
    assert owner.get(f"/imports/jobs/{job}/state").status_code == 200
    starter = db.session.scalar(select(User.id).where(User.username == "coordinator"))
    assert json.loads((jobs / job / "state.json").read_text())["user_id"] == starter


def test_the_navigation_links_the_tool_for_importers_only(as_user):
    for username, shown in (("coordinator", True), ("admin", True), ("investigator", False),
                            ("monitor", False), ("statistician", False)):
        home = as_user(username).get("/").get_data(as_text=True)
        assert ('href="/imports"' in home) is shown, username


@pytest.mark.browser
def test_an_import_in_the_browser_shows_progress_then_the_records(new_page, start_server, tmp_path):
    page = new_page(base_url=start_server(IMPORT_JOBS_DIR=str(tmp_path / "import-jobs")))
    login(page, "coordinator")
    page.get_by_role("link", name="Data Import Tool").click()
    field = page.get_by_label("CSV file")
    field.set_input_files({"name": "records.csv", "mimeType": "text/csv", "buffer": b"record_id,nope\nx,1\n"})
    submit(page, "Import")
    assert field.get_attribute("aria-invalid") == "true"
    assert "nope" in page.locator("#file-error").inner_text()
    assert axe_violations(page) == []

    field.set_input_files({"name": "records.csv", "mimeType": "text/csv", "buffer": NEW_RECORDS.encode()})
    page.get_by_label("New records: Casebook numbers them", exact=False).check()
    submit(page, "Import")
    assert page.get_by_role("progressbar").count() == 1
    summary = page.locator("#import-summary")
    summary.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "import-summary"
    assert page.locator("#import-progress").get_attribute("value") == "100"
    assert "Imported. 2 record(s) imported: 2 created, 0 updated." in page.get_by_role("status").inner_text()
    assert page.locator("#import-count").inner_text() == "2 of 2 records"
    assert axe_violations(page) == []
    screenshot(page, "import-done")
    page.get_by_role("link", name="KMU-0005").click()
    page.wait_for_url("**/records/KMU-0005")
