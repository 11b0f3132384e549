"""The integrity workflow end to end through the web pages: reasons for change, sign-off
and locking, data queries, data-quality rules, soft delete, time zones, lock-out."""

from __future__ import annotations

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.records.models import FormInstance, Record
from app.review.models import DataQuery, QueryStatus, Signature
from tests.conftest import DEMO_PASSWORD

TREATMENT = "/records/KMU-0001/treatment/1"


def actions(label: str) -> list[str]:
    return db.session.scalars(
        select(AuditEvent.action).where(AuditEvent.record_label == label).order_by(AuditEvent.id)
    ).all()


def record(label: str) -> Record:
    db.session.expire_all()
    return db.session.scalar(select(Record).where(Record.label == label))


def test_change_to_complete_form_needs_a_reason(as_user):
    client = as_user("coordinator")
    change = {"treatment_type": "2", "conservative_measures": ["1", "2"], "form_status": "2", "version": "1"}
    refused = client.post(TREATMENT, data=change)
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert "This form was Complete: give a reason for the change." in html and 'id="reason-error"' in html
    assert db.session.scalar(select(FormInstance.version).where(FormInstance.instrument == "treatment",
                                                                FormInstance.record_id == 1)) == 1
    ok = client.post(TREATMENT, data={**change, "reason_choice": "New source document", "reason": "discharge letter"})
    assert ok.status_code == 302
    reasons = db.session.scalars(select(AuditEvent.reason).where(
        AuditEvent.record_label == "KMU-0001", AuditEvent.field == "treatment_type", AuditEvent.action == "update"
    ).order_by(AuditEvent.id)).all()
    assert reasons[-1] == "New source document: discharge letter"


def test_sign_lock_unlock_and_void(as_user):
    coordinator, investigator = as_user("coordinator"), as_user("investigator")
    assert coordinator.get("/records/KMU-0001/sign").status_code == 403
    review = investigator.get("/review").get_data(as_text=True)
    assert all(f"/records/KMU-000{n}/sign" in review for n in (1, 2, 3))

    wrong = investigator.post("/records/KMU-0001/sign", data={"meaning": "approved", "password": "not my password"})
    assert wrong.status_code == 422 and "That is not your password" in wrong.get_data(as_text=True)
    assert record("KMU-0001").locked_at is None
    assert actions("KMU-0001")[-1] == "signature_failed"

    signed = investigator.post("/records/KMU-0001/sign", data={"meaning": "approved", "password": DEMO_PASSWORD})
    assert signed.status_code == 302
    assert record("KMU-0001").locked_at is not None
    assert actions("KMU-0001")[-2:] == ["sign", "lock"]
    page = coordinator.get("/records/KMU-0001").get_data(as_text=True)
    assert "Signed by <strong>Ivan Investigator</strong>" in page and "I approve this record" in page
    assert "Locked" in page
    assert "/records/KMU-0001/sign" not in investigator.get("/review").get_data(as_text=True)

    # Nobody can change a locked record, not even an admin.
    data = {"treatment_type": "1", "form_status": "2", "version": "1", "reason_choice": "Other", "reason": "x"}
    for who in ("coordinator", "admin"):
        assert as_user(who).post(TREATMENT, data=data).status_code == 403
    assert "This record was signed and is locked" in coordinator.get(TREATMENT).get_data(as_text=True)

    # A coordinator cannot unlock; the investigator can, with a reason.
    assert coordinator.post("/records/KMU-0001/unlock", data={"reason": "fix"}).status_code == 403
    assert investigator.post("/records/KMU-0001/unlock", data={"reason": "Query 12 answered"}).status_code == 302
    assert record("KMU-0001").locked_at is None
    sig = db.session.scalar(select(Signature))
    assert sig.voided_at is None  # unlocking alone keeps the signature

    # A change voids the signature, shown and audited.
    change = {**data, "treatment_type": "2", "conservative_measures": ["6"]}
    assert coordinator.post(TREATMENT, data=change).status_code == 302
    db.session.expire_all()
    assert db.session.scalar(select(Signature)).voided_at is not None
    assert "signature_voided" in actions("KMU-0001")
    assert "Not signed." in coordinator.get("/records/KMU-0001").get_data(as_text=True)


def test_query_lifecycle(as_user):
    monitor, coordinator = as_user("monitor"), as_user("coordinator")
    raised = monitor.post("/records/KMU-0002/queries", data={
        "instrument": "lesion_presentation", "instance": "1", "field": "age_presentation_reported_days",
        "text": "Age 28 days: please check the publication's table"})
    assert raised.status_code == 302
    query = db.session.scalar(select(DataQuery))
    assert query.status == QueryStatus.OPEN and query.field == "age_presentation_reported_days"

    home = coordinator.get("/").get_data(as_text=True)
    assert "1 open</a>" in home
    grid = coordinator.get("/sites/KMU/records").get_data(as_text=True)
    assert 'href="/records/KMU-0002">1 open</a>' in grid and grid.count(" open</a>") == 1
    form_page = coordinator.get("/records/KMU-0002/lesion_presentation/1").get_data(as_text=True)
    assert f"Query #{query.id} (open)" in form_page and "please check the publication" in form_page
    assert "/records/KMU-0002" in coordinator.get("/sites/KMU/queries?status=open").get_data(as_text=True)
    assert "KMU-0002" not in as_user("coordinator_nth").get("/sites/NTH/queries?status=all").get_data(as_text=True)

    step = f"/records/KMU-0002/queries/{query.id}"
    assert coordinator.post(f"{step}/close", data={"text": "done"}).status_code == 403  # not the raiser
    assert coordinator.post(f"{step}/answer", data={"text": "Checked: 4 weeks = 28 days"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(DataQuery, query.id).status == QueryStatus.ANSWERED
    assert monitor.post(f"{step}/reopen", data={"text": "Which table?"}).status_code == 302
    assert coordinator.post(f"{step}/answer", data={"text": "Table 1"}).status_code == 302
    assert monitor.post(f"{step}/close", data={"text": "Thanks"}).status_code == 302
    db.session.expire_all()
    final = db.session.get(DataQuery, query.id)
    assert final.status == QueryStatus.CLOSED
    assert [m.action for m in final.messages] == ["raise", "answer", "reopen", "answer", "close"]
    assert [a for a in actions("KMU-0002") if a.startswith("query_")] == [
        "query_raise", "query_answer", "query_reopen", "query_answer", "query_close"]
    history = coordinator.get("/records/KMU-0002")  # the audit table shows each query step as text
    assert history.status_code == 200
    assert "<td>closed</td>" in history.get_data(as_text=True).replace(" ", "").replace("\n", "")


def test_quality_rule_warns_on_save_and_reports_site_wide(as_user):
    coordinator = as_user("coordinator")
    rec = "/records/KMU-0001"
    lesion = {"lesion_date": "2024-05-10", "nodule_count": "1", "nodule_size_mm": "120", "lesion_location": "1",
              "suspected_infection": "0", "initial_xray_done": "3", "form_status": "1", "version": "1",
              "reason_choice": "New source document"}
    warned = coordinator.post(f"{rec}/lesion_presentation/1", data=lesion)
    assert warned.status_code == 422
    html = warned.get_data(as_text=True)
    assert "Largest nodule is outside 1-100 mm" in html and 'name="confirm_warnings"' in html
    assert record("KMU-0001") and "dq_warning_confirmed" not in actions("KMU-0001")
    saved = coordinator.post(f"{rec}/lesion_presentation/1", data={**lesion, "confirm_warnings": "y"})
    assert saved.status_code == 302
    confirmed = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "dq_warning_confirmed"))
    assert confirmed.field == "nodule_size_mm" and confirmed.reason.startswith("nodule_size_range")
    page = coordinator.get(rec)  # the record's audit table shows the confirmed warning
    assert page.status_code == 200 and "nodule_size_range" in page.get_data(as_text=True)

    monitor = as_user("monitor")
    report = monitor.get("/sites/KMU/quality").get_data(as_text=True)
    assert "Largest nodule is outside 1-100 mm" in report and ">120<" in report
    one_click = monitor.post("/records/KMU-0001/queries", data={
        "instrument": "lesion_presentation", "instance": "1", "field": "nodule_size_mm",
        "text": "Largest nodule is outside 1-100 mm (value: 120). Please check the source.",
        "back": "/sites/KMU/quality"})
    assert one_click.status_code == 302 and one_click.headers["Location"] == "/sites/KMU/quality"
    assert db.session.scalar(select(DataQuery.field)) == "nodule_size_mm"


def test_soft_delete_and_restore(as_user):
    admin, coordinator = as_user("admin"), as_user("coordinator")
    assert coordinator.post("/records/KMU-0003/delete", data={"reason": "duplicate"}).status_code == 403
    assert admin.post("/records/KMU-0003/delete", data={"reason": "Duplicate of KMU-0002"}).status_code == 302
    assert coordinator.get("/records/KMU-0003").status_code == 404
    assert "/records/KMU-0003" not in coordinator.get("/sites/KMU/records").get_data(as_text=True)
    assert "Duplicate of KMU-0002" in admin.get("/records/deleted").get_data(as_text=True)
    assert db.session.scalar(select(FormInstance).join(Record).where(Record.label == "KMU-0003")) is not None
    assert admin.post("/records/KMU-0003/restore", data={"reason": "Not a duplicate after all"}).status_code == 302
    assert coordinator.get("/records/KMU-0003").status_code == 200
    assert actions("KMU-0003")[-2:] == ["delete_record", "restore_record"]


def test_times_are_shown_in_the_site_zone(as_user):
    page = as_user("coordinator").get("/records/KMU-0001").get_data(as_text=True)
    assert " KST" in page and "Asia/Seoul" in page


def test_admin_audit_view_filters_and_csv(as_user):
    admin = as_user("admin")
    page = admin.get("/audit?action=login&user=admin").get_data(as_text=True)
    assert "<td>login</td>" in page and "<td>create_record</td>" not in page
    response = admin.get("/audit.csv?site=KMU&action=create_record")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("id,occurred_at_utc,username,site,record,action")
    assert len(lines) == 4 and all(",create_record," in line for line in lines[1:])
    assert as_user("monitor").get("/audit").status_code == 403


def test_lockout_after_five_failures(demo):
    client = demo.test_client()
    for _ in range(5):
        response = client.post("/login", data={"username": "monitor", "password": "wrong password!"})
        assert response.status_code == 401 and "Unknown user name or wrong password." in response.get_data(as_text=True)
    locked = client.post("/login", data={"username": "monitor", "password": DEMO_PASSWORD})
    assert locked.status_code == 401 and "locked for 15 minutes" in locked.get_data(as_text=True)
    audit = db.session.scalars(select(AuditEvent.action).where(AuditEvent.username == "monitor")
                               .order_by(AuditEvent.id.desc()).limit(6)).all()
    assert audit == ["login_locked"] + ["login_failed"] * 5
