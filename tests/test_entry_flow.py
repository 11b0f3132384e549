"""A coordinator enters a case through the web pages, as in the browser (test client)."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.records.models import FormInstance, Record
from tests.conftest import csrf_token, make_app


def _form(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_full_entry_flow(as_user):
    client = as_user("coordinator")
    created = client.post("/sites/KMU/records")
    assert created.status_code == 302
    assert created.headers["Location"].endswith("/records/KMU-0004/enrolment/1")
    page = _form(client, "/records/KMU-0004/enrolment/1")
    assert 'name="dob__missing"' in page and "Date of birth" in page

    # Bad values: messages next to the fields, status 422, nothing saved.
    bad = {
        "case_source": "1", "initials": "AB", "hospital_number": "H123", "dob": "2024-02-30",
        "sex": "2", "ga_weeks": "thirty", "birth_weight_g": "2450", "calcium_indication": "1",
        "serum_calcium_pre": "1,7", "form_status": "0", "version": "0",
    }
    response = client.post("/records/KMU-0004/enrolment/1", data=bad)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Enter a date as YYYY-MM-DD" in html and "2024-02-30" in html
    assert "Enter a whole number" in html and "thirty" in html
    assert "Use a point as the decimal mark: &#39;1.7&#39;" in html
    assert 'id="dob-error"' in html and 'aria-invalid="true"' in html
    rec = db.session.scalar(select(Record).where(Record.label == "KMU-0004"))
    assert db.session.scalar(select(FormInstance).where(FormInstance.record_id == rec.id)) is None

    # Fixed, with a missing-data code for the NICU date; the typed values come back.
    good = {**bad, "dob": "2024-03-01", "ga_weeks": "34", "ga_days": "2", "serum_calcium_pre": "1.7",
            "nicu_admission_date__missing": "UNK", "form_status": "2"}
    response = client.post("/records/KMU-0004/enrolment/1", data=good)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    form = db.session.scalar(select(FormInstance).where(FormInstance.record_id == rec.id))
    assert form.data["dob"] == "2024-03-01" and form.data["ga_weeks"] == 34 and form.data["serum_calcium_pre"] == 1.7
    assert form.missing == {"nicu_admission_date": "UNK"}
    assert form.status == 2 and form.version == 1

    # A repeatable exposure: new instance, then a second one.
    exposure = {"drug": "2", "route": "1", "concentration_pct": "10", "line_type": "1", "line_site": "1",
                "extravasation_recognised": "1", "extravasation_date": "2024-03-03", "form_status": "1",
                "version": "0"}
    assert client.post("/records/KMU-0004/calcium_exposure/new", data=exposure).status_code == 302
    assert client.post("/records/KMU-0004/calcium_exposure/new", data={**exposure, "drug": "1"}).status_code == 302
    instances = db.session.scalars(
        select(FormInstance.instance).where(FormInstance.record_id == rec.id,
                                            FormInstance.instrument == "calcium_exposure")
    ).all()
    assert sorted(instances) == [1, 2]

    # Branching on the server: a hidden field's value is cleared, with an audit row.
    lesion = {"lesion_date": "2024-03-10", "nodule_count": "2", "lesion_location": "1", "suspected_infection": "0",
              "initial_xray_done": "3", "skin_findings": ["1", "2"], "ulcer_size_mm": "5",
              "age_presentation_reported_days": "99", "form_status": "2", "version": "0"}
    assert client.post("/records/KMU-0004/lesion_presentation/1", data=lesion).status_code == 302
    lesion_form = db.session.scalar(select(FormInstance).where(
        FormInstance.record_id == rec.id, FormInstance.instrument == "lesion_presentation"))
    assert "ulcer_size_mm" not in lesion_form.data  # hidden: ulceration not ticked
    assert "age_presentation_reported_days" not in lesion_form.data  # hidden: both dates known
    assert lesion_form.data["age_presentation_days"] == 9  # calculated from the dates

    # The record page shows each form's status and the audit trail.
    record_page = _form(client, "/records/KMU-0004")
    assert record_page.count("cb-status-2") >= 2 and "cb-status-1" in record_page
    assert "Audit trail" in record_page and "create record" in record_page
    # The site grid shows the record with coloured statuses.
    grid = _form(client, "/sites/KMU/records?q=0004")
    row = re.search(r"KMU-0004</a></th>(.*?)</tr>", grid, re.S).group(1)
    assert row.count("cb-status-2") == 2 and "cb-status-1" in row and "\u00d72" in row and "No data" in row


def test_conflict_keeps_the_users_values(as_user):
    first = as_user("coordinator")
    second = as_user("admin")
    url = "/records/KMU-0001/treatment/1"
    base = {"treatment_type": "2", "conservative_measures": ["1"], "form_status": "1", "version": "1",
            "reason_choice": "New source document"}
    assert first.post(url, data=base).status_code == 302
    response = second.post(url, data={**base, "treatment_type": "3", "surgical_procedure": "Excision"})
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert "Someone else saved this form" in html
    assert "Excision" in html  # what the second user typed is still in the form
    assert 'name="version" type="hidden" value="2"' in html  # ready to save deliberately over
    updates = db.session.scalars(select(AuditEvent.new_value).where(
        AuditEvent.record_label == "KMU-0001", AuditEvent.field == "treatment_type",
        AuditEvent.action == "update").order_by(AuditEvent.id)).all()
    assert updates == ['"1"', '"2"']  # the demo's entry, then the first user's change; not the second's


def test_read_only_roles_see_disabled_form(as_user):
    page = as_user("monitor").get("/records/KMU-0001/outcome/1").get_data(as_text=True)
    assert "You can view this form but not change it." in page
    assert "<fieldset disabled>" in page and "Save and exit" not in page


def test_form_posts_need_a_csrf_token(demo, database_template, tmp_path):
    app = make_app(demo.config["SQLALCHEMY_DATABASE_URI"], WTF_CSRF_ENABLED=True)
    client = app.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    refused_login = client.post("/login", data={"username": "coordinator", "password": "demo-password-2026"})
    assert refused_login.status_code == 302
    assert "/login" in client.get("/").headers["Location"]  # the token-less log-in did not log in
    ok = client.post("/login", data={"username": "coordinator", "password": "demo-password-2026",
                                     "csrf_token": csrf_token(login_page)})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    refused = client.post("/sites/KMU/records")
    assert refused.status_code == 302  # back with a message, nothing created
    with app.app_context():
        assert db.session.scalar(select(Record).where(Record.label == "KMU-0004")) is None
