"""The audit trail is tamper-evident and complete: verify finds an altered row, and
replaying the trail from empty rebuilds every record's values exactly."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from app.audit.models import AuditEvent
from app.audit.services import replay, verify_chain
from app.auth.models import Site, User
from app.errors import ValidationFailed
from app.extensions import db
from app.records.models import FormInstance
from app.records.services import Actor, Submission, create_record, save_form
from app.study import current_study
from tests.conftest import ON_POSTGRES


def _tamper(event_id: int) -> None:
    """Change a row behind the application's back, as an attacker with database access would."""
    if ON_POSTGRES:
        db.session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update_delete"))
        db.session.execute(text("UPDATE audit_event SET new_value = '\"1\"' WHERE id = :id"), {"id": event_id})
        db.session.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_update_delete"))
    else:
        db.session.execute(text("DROP TRIGGER audit_event_no_update"))
        db.session.execute(text("UPDATE audit_event SET new_value = '\"1\"' WHERE id = :id"), {"id": event_id})
    db.session.commit()


def test_verify_finds_the_first_altered_row(demo):
    runner = demo.test_cli_runner()
    ok = runner.invoke(args=["audit", "verify"])
    total = db.session.scalar(select(db.func.count()).select_from(AuditEvent))
    assert ok.exit_code == 0 and f"Audit trail intact: {total} rows verified." in ok.output
    target = db.session.scalar(select(AuditEvent.id).where(AuditEvent.field == "sex").order_by(AuditEvent.id))
    _tamper(target)
    report = verify_chain(db.session)
    assert not report.ok and report.broken_at == target and "altered" in report.problem
    broken = runner.invoke(args=["audit", "verify"])
    assert broken.exit_code == 1 and f"BROKEN at audit row {target}" in broken.output


def test_verify_notices_rows_removed_from_the_end(demo):
    if ON_POSTGRES:
        db.session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update_delete"))
        db.session.execute(text("DELETE FROM audit_event WHERE id = (SELECT max(id) FROM audit_event)"))
        db.session.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_update_delete"))
    else:
        db.session.execute(text("DROP TRIGGER audit_event_no_delete"))
        db.session.execute(text("DELETE FROM audit_event WHERE id = (SELECT max(id) FROM audit_event)"))
    db.session.commit()
    report = verify_chain(db.session)
    assert not report.ok and "missing from the end" in report.problem


SEX = st.sampled_from(["1", "2", "3", ""])
GA = st.one_of(st.integers(20, 45).map(str), st.just(""))
DOB = st.one_of(st.dates().map(lambda d: d.isoformat()), st.just(""))
CODE = st.sampled_from([None, "", "NR", "UNK"])
EDIT = st.one_of(
    st.tuples(st.just("enrolment"), st.fixed_dictionaries({"sex": SEX, "ga_weeks": GA, "dob": DOB}),
              st.fixed_dictionaries({"nicu_admission_date": CODE, "dob": CODE})),
    st.tuples(st.just("outcome"), st.fixed_dictionaries({
        "complete_resolution": st.sampled_from(["1", "0", ""]),
        "time_to_resolution_reported_days": st.one_of(st.integers(0, 400).map(str), st.just("")),
        "clinical_resolution_date": DOB}), st.just({})),
    st.tuples(st.just("lesion_presentation"), st.fixed_dictionaries({
        "lesion_date": DOB, "age_presentation_reported_days": st.one_of(st.integers(0, 99).map(str), st.just(""))}),
        st.fixed_dictionaries({"nodule_count": CODE})),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(EDIT, st.sampled_from([0, 1])), min_size=1, max_size=8))
def test_replaying_the_trail_rebuilds_every_value(demo, edits):
    study = current_study()
    admin = Actor(db.session.scalar(select(User).where(User.username == "admin")))
    site = db.session.scalar(select(Site).where(Site.code == "NTH"))
    record = create_record(db.session, admin, site)
    for (instrument, values, missing), status in edits:
        missing = {k: v for k, v in missing.items() if k not in values or not values[k]}
        try:
            save_form(db.session, study, admin, record, instrument, 1,
                      Submission(values=values, missing=missing, status=status),
                      expected_version=None, reason="property test")
        except ValidationFailed:
            db.session.rollback()
            record = db.session.merge(record)
            continue
        db.session.commit()
    stored = {(f.instrument, f.instance): f for f in
              db.session.scalars(select(FormInstance).where(FormInstance.record_id == record.id))}
    rebuilt = replay(db.session, record.id)
    assert set(rebuilt) == set(stored)
    for key, form in stored.items():
        assert rebuilt[key].data == form.data, key
        assert rebuilt[key].missing == form.missing, key
        assert rebuilt[key].status == form.status, key
    assert verify_chain(db.session).ok


@pytest.mark.parametrize("username", ["coordinator", "investigator", "monitor", "statistician"])
def test_study_wide_audit_is_admin_only(as_user, username):
    assert as_user(username).get("/audit.csv").status_code == 403
