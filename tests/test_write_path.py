"""The one write path (create_record, save_form) on the demo data, against the real database.

Every test starts from the demo: sites KMU/NTH/RVH, the demo users, and the three
published cases KMU-0001..0003 entered through save_form. Refusals are checked the way a
request would meet them: the service raises, the request boundary rolls back, and the
database must hold exactly what it held before.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.audit.services import decode_cell, verify_chain
from app.auth.models import Site, User
from app.errors import ConflictError, NotFoundError, PermissionDenied, ValidationFailed
from app.extensions import db
from app.records import services
from app.records.models import FormInstance, Record
from app.records.services import Actor, SaveOutcome, Submission, create_record, save_form
from app.study import current_study
from app.study.fieldtypes import field_type

CURRENT = object()  # expected_version: "the version stored now", as a user who just opened the form


# --- helpers -----------------------------------------------------------------------------

def user(username: str) -> User:
    return db.session.scalar(select(User).where(User.username == username))


def actor(username: str = "coordinator", source: str = "web") -> Actor:
    return Actor(user(username), source=source)


def site(code: str) -> Site:
    return db.session.scalar(select(Site).where(Site.code == code))


def record(label: str) -> Record:
    return db.session.scalar(select(Record).where(Record.label == label))


def get_form(rec: Record, instrument: str, instance: int = 1) -> FormInstance | None:
    return db.session.scalar(
        select(FormInstance).where(
            FormInstance.record_id == rec.id, FormInstance.instrument == instrument, FormInstance.instance == instance
        )
    )


def count(model: Any, *where: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def audit_rows(*where: Any) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(*where).order_by(AuditEvent.id)))


def save(
    rec: Record, instrument: str, values: dict[str, Any] | None = None, missing: dict[str, str] | None = None,
    *, status: int | None = None, instance: int | None = 1, username: str = "coordinator",
    expected: Any = CURRENT, reason: str | None = None,
) -> SaveOutcome:
    if expected is CURRENT:
        existing = get_form(rec, instrument, instance) if instance is not None else None
        expected = existing.version if existing else 0
    return save_form(
        db.session, current_study(), actor(username), rec, instrument, instance,
        Submission(values=values or {}, missing=missing or {}, status=status),
        expected_version=expected, reason=reason,
    )


def new_record(site_code: str = "KMU", username: str = "coordinator") -> Record:
    rec = create_record(db.session, actor(username), site(site_code))
    db.session.commit()
    return rec


def snapshot() -> dict[str, Any]:
    """Everything a refused save must leave untouched."""
    forms = db.session.scalars(select(FormInstance).order_by(FormInstance.id)).all()
    return {
        "forms": [(f.id, f.record_id, f.instrument, f.instance, f.version, f.status, dict(f.data), dict(f.missing))
                  for f in forms],
        "audit": count(AuditEvent),
        "records": count(Record),
        "last_numbers": dict(db.session.execute(select(Site.code, Site.last_record_number)).all()),
    }


def refused_without_writes(exc_type: type[Exception], call, *args, **kwargs) -> Exception:
    """Run a write that must be refused; roll back as the request would; prove nothing changed."""
    before = snapshot()
    with pytest.raises(exc_type) as info:
        call(*args, **kwargs)
    db.session.rollback()
    db.session.expire_all()
    assert snapshot() == before
    return info.value


ENROLMENT_REQUIRED = ["initials", "hospital_number", "dob", "sex", "ga_weeks", "birth_weight_g", "calcium_indication"]

CALCIUM_COMPLETE = {
    "drug": "1", "route": "1", "concentration_pct": "10", "line_type": "1", "line_site": "1",
    "extravasation_recognised": "0",
}


# --- create_record -----------------------------------------------------------------------

def test_create_record_numbers_per_site_and_is_audited(demo):
    before = datetime.now(UTC)
    kmu = create_record(db.session, actor("coordinator"), site("KMU"))
    kmu_next = create_record(db.session, actor("coordinator"), site("KMU"))
    nth = create_record(db.session, actor("coordinator_nth"), site("NTH"))
    db.session.commit()

    assert (kmu.label, kmu.number, kmu.site_id) == ("KMU-0004", 4, site("KMU").id)
    assert (kmu_next.label, kmu_next.number) == ("KMU-0005", 5)
    assert (nth.label, nth.number, nth.site_id) == ("NTH-0001", 1, site("NTH").id)
    assert site("KMU").last_record_number == 5
    assert site("NTH").last_record_number == 1
    assert site("RVH").last_record_number == 0
    assert kmu.created_by_id == user("coordinator").id

    rows = audit_rows(AuditEvent.action == "create_record", AuditEvent.occurred_at >= before)
    assert [(r.record_label, r.record_id, r.site_id, r.username, r.user_id) for r in rows] == [
        ("KMU-0004", kmu.id, kmu.site_id, "coordinator", user("coordinator").id),
        ("KMU-0005", kmu_next.id, kmu.site_id, "coordinator", user("coordinator").id),
        ("NTH-0001", nth.id, nth.site_id, "coordinator_nth", user("coordinator_nth").id),
    ]
    assert all(r.field is None and r.instrument is None for r in rows)
    # The demo's three cases were created the same way.
    demo_rows = audit_rows(AuditEvent.action == "create_record", AuditEvent.source == "demo")
    assert [r.record_label for r in demo_rows] == ["KMU-0001", "KMU-0002", "KMU-0003"]


def test_create_record_is_refused_outside_the_users_sites(demo):
    for username, code in [("coordinator", "NTH"), ("coordinator_nth", "KMU"), ("monitor", "KMU"),
                           ("investigator", "KMU"), ("statistician", "KMU")]:
        refused_without_writes(PermissionDenied, create_record, db.session, actor(username), site(code))
    rec = create_record(db.session, actor("admin"), site("RVH"))
    assert rec.label == "RVH-0001"


# --- save_form: typed values and the audit trail -----------------------------------------

def test_save_form_stores_typed_values_and_audits_each_field(demo):
    rec = new_record()
    values = {
        "case_source": "2", "enrolment_date": "2024-03-05", "initials": "  J.K. ", "hospital_number": "H-0042",
        "dob": "2024-02-29", "sex": "2", "ga_weeks": "032", "ga_days": "4", "birth_weight_g": "1650",
        "calcium_indication": "1", "serum_calcium_pre": " 1.80 ",
    }
    before = datetime.now(UTC)
    outcome = save(rec, "enrolment", values, status=0)
    db.session.commit()
    after = datetime.now(UTC)

    stored = {
        "case_source": "2", "enrolment_date": "2024-03-05", "initials": "J.K.", "hospital_number": "H-0042",
        "dob": "2024-02-29", "sex": "2", "ga_weeks": 32, "ga_days": 4, "birth_weight_g": 1650,
        "calcium_indication": "1", "serum_calcium_pre": 1.8,
    }
    form = get_form(rec, "enrolment")
    assert form.data == stored
    assert type(form.data["ga_weeks"]) is int
    assert type(form.data["serum_calcium_pre"]) is float
    assert form.missing == {}
    assert (form.version, form.status, form.updated_by_id) == (1, 0, user("coordinator").id)
    assert outcome.form.id == form.id
    assert outcome.changed == list(stored)  # definition order, which is also the order above

    rows = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.action != "create_record")
    field_rows = [r for r in rows if r.field]
    assert [r.field for r in field_rows] == list(stored)
    assert {r.action for r in field_rows} == {"update"}
    for r in field_rows:
        assert decode_cell(r.new_value) == (stored[r.field], None)
        assert r.old_value is None
        assert (r.user_id, r.username, r.site_id, r.record_id, r.record_label) == (
            user("coordinator").id, "coordinator", site("KMU").id, rec.id, "KMU-0004")
        assert (r.instrument, r.instance, r.source) == ("enrolment", 1, "web")
        assert r.occurred_at.utcoffset() == timedelta(0)
        assert before <= r.occurred_at <= after
    status_rows = [r for r in rows if r.action == "status"]
    assert [(r.old_value, r.new_value, r.field) for r in status_rows] == [(None, "0", None)]

    # Change two fields: one value to another value, one value to a missing-data code.
    mark = count(AuditEvent)
    outcome = save(rec, "enrolment", {"sex": "1"}, {"ga_weeks": "UNK"}, reason="Source document checked")
    db.session.commit()
    assert outcome.changed == ["sex", "ga_weeks"]
    form = get_form(rec, "enrolment")
    assert form.version == 2
    assert form.data["sex"] == "1"
    assert "ga_weeks" not in form.data
    assert form.missing == {"ga_weeks": "UNK"}
    rows = audit_rows(AuditEvent.id > 0)[mark:]
    assert [(r.action, r.field, r.old_value, r.new_value, r.reason) for r in rows] == [
        ("update", "sex", '"2"', '"1"', "Source document checked"),
        ("update", "ga_weeks", "32", '{"missing":"UNK"}', "Source document checked"),
    ]
    assert decode_cell(rows[0].old_value) == ("2", None)
    assert decode_cell(rows[1].old_value) == (32, None)
    assert decode_cell(rows[1].new_value) == (None, "UNK")


def test_checkbox_and_datetime_values_are_stored_normalised(demo):
    rec = new_record()
    save(rec, "lesion_presentation", {"skin_findings": ["3", "1"], "ulcer_size_mm": "4.5", "nodule_count": "02"})
    save(rec, "calcium_exposure", {"infusion_start": "2024-03-01T14:30", "volume_ml": "2.50"})
    db.session.commit()
    lesion = get_form(rec, "lesion_presentation")
    assert lesion.data == {"skin_findings": ["1", "3"], "ulcer_size_mm": 4.5, "nodule_count": 2}
    exposure = get_form(rec, "calcium_exposure")
    assert exposure.data == {"infusion_start": "2024-03-01 14:30", "volume_ml": 2.5}
    row = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == "skin_findings")[0]
    assert row.new_value == '["1","3"]'
    assert decode_cell(row.new_value) == (["1", "3"], None)


# --- refusals write nothing --------------------------------------------------------------

def test_invalid_values_are_refused_with_the_fields_messages_and_nothing_is_written(demo):
    rec = record("KMU-0001")
    error = refused_without_writes(
        ValidationFailed, save, rec, "enrolment", {"ga_weeks": "19", "sex": "x", "birth_weight_g": "1,5"},
    )
    assert error.errors == {
        "ga_weeks": "Must be at least 20; 19 is below it.",
        "sex": "'x' is not one of the choices: 1 (Male), 2 (Female), 3 (Undetermined).",
        "birth_weight_g": "Enter a whole number (for example 12); '1,5' is not one.",
    }
    assert error.message == "Nothing was saved: please correct the fields marked below."

    # One bad field among good ones: the good ones are not saved either.
    error = refused_without_writes(
        ValidationFailed, save, rec, "enrolment", {"sex": "1", "ga_weeks": "40", "serum_calcium_pre": "2,4"},
    )
    assert error.errors == {"serum_calcium_pre": "Use a point as the decimal mark: '2.4'."}
    assert get_form(rec, "enrolment").data["sex"] == "2"

    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"not_a_field": "1"})
    assert error.errors == {"not_a_field": "'not_a_field' is not a field of Enrolment and demographics."}
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"sex": "1"}, status=5)
    assert set(error.errors) == {"__status__"}


def test_an_absurdly_long_integer_is_a_validation_error(demo):
    error = refused_without_writes(ValidationFailed, save, record("KMU-0001"), "enrolment", {"ga_weeks": "9" * 5000},
                                   reason="x")
    assert error.errors == {"ga_weeks": "Too large: a whole number has at most 15 digits."}


def test_changing_a_complete_form_needs_a_reason(demo):
    rec = record("KMU-0001")
    assert get_form(rec, "enrolment").status == 2
    for reason in (None, "", "   "):
        error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"sex": "1"}, reason=reason)
        assert error.errors == {"reason": "This form was Complete: give a reason for the change."}
    save(rec, "enrolment", {"sex": "1"}, reason="  Source document verified  ")
    db.session.commit()
    row = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == "sex")[-1]
    assert (row.old_value, row.new_value, row.reason) == ('"2"', '"1"', "Source document verified")
    # An Incomplete form takes changes without one.
    save(rec, "enrolment", {}, status=0, reason="Reopened")
    save(rec, "enrolment", {"sex": "2"})
    db.session.commit()
    assert get_form(rec, "enrolment").data["sex"] == "2"


def test_a_refused_first_save_creates_no_form_row(demo):
    rec = new_record()
    error = refused_without_writes(
        ValidationFailed, save, rec, "calcium_exposure", {"drug": "1", "concentration_pct": "0"}, instance=None,
    )
    assert error.errors == {"concentration_pct": "Must be at least 0.1; 0 is below it."}
    assert get_form(rec, "calcium_exposure") is None
    assert count(FormInstance, FormInstance.record_id == rec.id) == 0
    assert [r.action for r in audit_rows(AuditEvent.record_id == rec.id)] == ["create_record"]


# --- missing-data codes ------------------------------------------------------------------

def test_missing_code_is_stored_apart_from_values(demo):
    rec = new_record()
    save(rec, "enrolment", {"sex": "1"}, {"dob": "NR", "ga_weeks": " UNK "})
    db.session.commit()
    form = get_form(rec, "enrolment")
    assert form.data == {"sex": "1"}
    assert form.missing == {"dob": "NR", "ga_weeks": "UNK"}
    row = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == "dob")[0]
    assert (row.old_value, row.new_value) == (None, '{"missing":"NR"}')

    # A value replaces the code; an empty code clears it.
    save(rec, "enrolment", {"dob": "2024-01-02"}, {"ga_weeks": ""})
    db.session.commit()
    form = get_form(rec, "enrolment")
    assert form.data == {"sex": "1", "dob": "2024-01-02"}
    assert form.missing == {}
    rows = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field.in_(["dob", "ga_weeks"]))
    assert [(r.field, decode_cell(r.old_value), decode_cell(r.new_value)) for r in rows] == [
        ("dob", (None, None), (None, "NR")),
        ("ga_weeks", (None, None), (None, "UNK")),
        ("dob", (None, "NR"), ("2024-01-02", None)),
        ("ga_weeks", (None, "UNK"), (None, None)),
    ]

    # A code replaces a stored value (the web form sends the blank input alongside it).
    save(rec, "enrolment", {"dob": ""}, {"dob": "NA"})
    db.session.commit()
    form = get_form(rec, "enrolment")
    assert "dob" not in form.data
    assert form.missing == {"dob": "NA"}


def test_unknown_missing_code_and_value_with_code_are_refused(demo):
    rec = record("KMU-0001")
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {}, {"ga_weeks": "XX"})
    assert error.errors == {
        "ga_weeks": "'XX' is not a missing-data code; use one of UNK (Unknown), NR (Not reported), "
                    "NA (Not applicable), NASK (Not asked).",
    }
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {}, {"ga_weeks": "nr"})
    assert set(error.errors) == {"ga_weeks"}
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"ga_weeks": "38"}, {"ga_weeks": "NR"})
    assert error.errors == {"ga_weeks": "Enter a value or choose a missing-data code, not both."}
    # Both, where the value itself is also invalid: the value's own message wins.
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"ga_weeks": "3"}, {"ga_weeks": "NR"})
    assert error.errors == {"ga_weeks": "Must be at least 20; 3 is below it."}


def test_field_without_missing_codes_refuses_one(demo):
    """No field of the study sets `missing_codes: false`, so one is switched off in a copy of the study."""
    study = current_study()
    assert all(f.allow_missing_codes for f in study.iter_fields() if field_type(f).is_input)
    enrolment = study.instrument("enrolment")
    strict = dataclasses.replace(enrolment.field("ga_weeks"), allow_missing_codes=False)
    fields = tuple(strict if f.name == "ga_weeks" else f for f in enrolment.fields)
    instruments = tuple(dataclasses.replace(i, fields=fields) if i.name == "enrolment" else i
                        for i in study.instruments)
    modified = dataclasses.replace(study, instruments=instruments)

    rec = record("KMU-0001")
    form = get_form(rec, "enrolment")

    def save_with_modified_study(missing: dict[str, str]) -> SaveOutcome:
        return save_form(db.session, modified, actor(), rec, "enrolment", 1, Submission(missing=missing),
                         expected_version=form.version, reason="Correction")

    error = refused_without_writes(ValidationFailed, save_with_modified_study, {"ga_weeks": "NR"})
    assert error.errors == {"ga_weeks": "This field does not take a missing-data code."}
    # Other fields of the same form still take codes.
    save_with_modified_study({"sex": "UNK"})
    db.session.commit()
    assert get_form(rec, "enrolment").missing["sex"] == "UNK"


# --- branching ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("instrument", "shown", "hidden", "field", "stored"),
    [
        ("calcium_exposure", {"drug": "3", "drug_other": "Calcium lactate"}, {"drug": "1"},
         "drug_other", "Calcium lactate"),
        ("lesion_presentation", {"skin_findings": ["1", "3"], "ulcer_size_mm": "6"}, {"skin_findings": ["1"]},
         "ulcer_size_mm", 6.0),
        ("calcium_exposure", {"extravasation_recognised": "1", "extravasation_date": "2024-01-03"},
         {"extravasation_recognised": "0"}, "extravasation_date", "2024-01-03"),
    ],
    ids=["drug_other", "ulcer_size_mm", "extravasation_date"],
)
def test_field_hidden_by_branching_is_cleared_with_an_audit_row(demo, instrument, shown, hidden, field, stored):
    rec = new_record()
    save(rec, instrument, shown)
    db.session.commit()
    assert get_form(rec, instrument).data[field] == stored

    outcome = save(rec, instrument, hidden)
    db.session.commit()
    form = get_form(rec, instrument)
    assert field not in form.data
    assert field not in form.missing
    assert field in outcome.changed
    rows = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == field)
    assert [(r.action, decode_cell(r.old_value), r.new_value, r.reason) for r in rows] == [
        ("update", (None, None), rows[0].new_value, None),
        ("clear_hidden", (stored, None), None, "Hidden by branching logic"),
    ]
    assert decode_cell(rows[0].new_value) == (stored, None)


def test_hidden_field_sent_with_its_controller_is_not_stored(demo):
    rec = new_record()
    save(rec, "calcium_exposure", {"drug": "1", "drug_other": "typed before switching"}, {"extravasation_date": "NR"})
    db.session.commit()
    form = get_form(rec, "calcium_exposure")
    assert form.data == {"drug": "1"}
    assert form.missing == {}  # extravasation_date is hidden (nothing recognised), so its code goes too
    assert audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field.in_(["drug_other", "extravasation_date"])) == []


def test_hidden_missing_code_is_cleared_too(demo):
    rec = new_record()
    save(rec, "calcium_exposure", {"extravasation_recognised": "1"}, {"extravasation_date": "UNK"})
    db.session.commit()
    assert get_form(rec, "calcium_exposure").missing == {"extravasation_date": "UNK"}
    save(rec, "calcium_exposure", {"extravasation_recognised": "0"})
    db.session.commit()
    assert get_form(rec, "calcium_exposure").missing == {}
    row = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.action == "clear_hidden")
    assert [(r.field, decode_cell(r.old_value)) for r in row] == [("extravasation_date", (None, "UNK"))]


def test_hidden_required_fields_do_not_block_complete(demo):
    rec = new_record()
    outcome = save(rec, "calcium_exposure", CALCIUM_COMPLETE, status=2)
    db.session.commit()
    assert outcome.incomplete_required == []
    form = get_form(rec, "calcium_exposure")
    assert form.status == 2
    # drug_other, line_type_other, line_site_other and extravasation_date are required but hidden.
    instrument = current_study().instrument("calcium_exposure")
    hidden_required = {f.name for f in instrument.data_fields if f.required and f.branching}
    assert hidden_required == {"drug_other", "line_type_other", "line_site_other", "extravasation_date"}
    assert hidden_required.isdisjoint(form.data)

    # Showing one of them makes it required again.
    error = refused_without_writes(ValidationFailed, save, rec, "calcium_exposure", {"drug": "3"}, status=2)
    assert list(error.errors) == ["drug_other"]


# --- required fields ---------------------------------------------------------------------

def test_complete_with_empty_required_fields_is_refused_naming_them(demo):
    rec = new_record()
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"case_source": "1"}, status=2)
    assert list(error.errors) == ENROLMENT_REQUIRED
    assert set(error.errors.values()) == {
        "Required to mark the form Complete: enter a value or a missing-data code."}
    assert error.message.startswith("Not saved: a Complete form needs every required field.")
    assert get_form(rec, "enrolment") is None

    # A published case (case_source 3) also needs the DOI, now shown.
    error = refused_without_writes(ValidationFailed, save, rec, "enrolment", {"case_source": "3"}, status=2)
    assert list(error.errors) == ["literature_doi", *ENROLMENT_REQUIRED]


def test_incomplete_with_empty_required_fields_is_saved_and_lists_them(demo):
    rec = new_record()
    outcome = save(rec, "enrolment", {"case_source": "1", "sex": "2"}, status=0)
    db.session.commit()
    expected = [name for name in ENROLMENT_REQUIRED if name != "sex"]
    assert outcome.incomplete_required == expected
    form = get_form(rec, "enrolment")
    assert (form.status, form.data) == (0, {"case_source": "1", "sex": "2"})

    # Unverified (1) is not Complete either.
    outcome = save(rec, "enrolment", {"ga_weeks": "39"}, status=1)
    db.session.commit()
    assert outcome.incomplete_required == [n for n in expected if n != "ga_weeks"]
    assert get_form(rec, "enrolment").status == 1

    # Missing-data codes satisfy "required": Complete now goes through.
    codes = dict.fromkeys(outcome.incomplete_required, "NR")
    outcome = save(rec, "enrolment", {}, codes, status=2)
    db.session.commit()
    assert outcome.incomplete_required == []
    form = get_form(rec, "enrolment")
    assert form.status == 2
    assert form.missing == codes


# --- calculations ------------------------------------------------------------------------

def test_age_at_presentation_is_calculated_from_dates_else_taken_as_reported(demo):
    dated = new_record()
    save(dated, "enrolment", {"dob": "2024-01-01"})
    outcome = save(dated, "lesion_presentation", {"lesion_date": "2024-01-15", "age_presentation_reported_days": "99"})
    db.session.commit()
    form = get_form(dated, "lesion_presentation")
    assert form.data["age_presentation_days"] == 14.0
    # Both dates known: the "as reported" field is hidden, so what was typed there is dropped.
    assert "age_presentation_reported_days" not in form.data
    assert "age_presentation_days" in outcome.changed
    row = audit_rows(AuditEvent.record_id == dated.id, AuditEvent.field == "age_presentation_days")[0]
    assert (row.action, decode_cell(row.new_value)) == ("calculate", (14.0, None))

    # Leap year: 2024-02-28 -> 2024-03-01 is two days.
    leap = new_record()
    save(leap, "enrolment", {"dob": "2024-02-28"})
    save(leap, "lesion_presentation", {"lesion_date": "2024-03-01"})
    assert get_form(leap, "lesion_presentation").data["age_presentation_days"] == 2.0

    reported = new_record()
    save(reported, "enrolment", {"dob": "2024-01-01"})
    save(reported, "lesion_presentation", {"age_presentation_reported_days": "28"}, {"lesion_date": "NR"})
    db.session.commit()
    form = get_form(reported, "lesion_presentation")
    assert form.data == {"age_presentation_reported_days": 28, "age_presentation_days": 28.0}
    assert form.missing == {"lesion_date": "NR"}

    neither = new_record()
    save(neither, "lesion_presentation", {"nodule_count": "1"})
    assert "age_presentation_days" not in get_form(neither, "lesion_presentation").data


def test_time_to_resolution_is_the_later_resolution_counted_from_the_lesion_date(demo):
    cases = [
        # clinical, radiographic, expected days from 2024-01-15
        ("2024-02-14", "2024-03-15", 60.0),
        ("2024-04-14", "2024-02-14", 90.0),
        ("2024-02-14", None, 30.0),
        (None, "2024-01-25", 10.0),
    ]
    for clinical, radiographic, expected in cases:
        rec = new_record()
        save(rec, "lesion_presentation", {"lesion_date": "2024-01-15"})
        values = {"complete_resolution": "1", "time_to_resolution_reported_days": "999"}
        if clinical:
            values["clinical_resolution_date"] = clinical
        if radiographic:
            values["radiographic_resolution_date"] = radiographic
        save(rec, "outcome", values)
        form = get_form(rec, "outcome")
        assert form.data["time_to_resolution_days"] == expected, (clinical, radiographic)
        assert "time_to_resolution_reported_days" not in form.data  # hidden: dates are known

    # Not resolved: no time to resolution, and the resolution dates are hidden and cleared.
    rec = new_record()
    save(rec, "lesion_presentation", {"lesion_date": "2024-01-15"})
    save(rec, "outcome", {"complete_resolution": "1", "clinical_resolution_date": "2024-02-14"})
    assert get_form(rec, "outcome").data["time_to_resolution_days"] == 30.0
    save(rec, "outcome", {"complete_resolution": "0"})
    db.session.commit()
    assert get_form(rec, "outcome").data == {"complete_resolution": "0"}
    cleared = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.instrument == "outcome",
                         AuditEvent.action.in_(["clear_hidden", "calculate"]))
    assert [(r.action, r.field, r.new_value) for r in cleared][-2:] == [
        ("clear_hidden", "clinical_resolution_date", None),
        ("calculate", "time_to_resolution_days", None),
    ]


def test_changing_an_earlier_form_recalculates_saved_calcs(demo):
    rec = new_record()
    save(rec, "enrolment", {"dob": "2024-01-01"})
    save(rec, "lesion_presentation", {"lesion_date": "2024-01-15"})
    save(rec, "outcome", {"complete_resolution": "1", "clinical_resolution_date": "2024-02-14"})
    db.session.commit()
    lesion_version = get_form(rec, "lesion_presentation").version
    outcome_version = get_form(rec, "outcome").version
    assert get_form(rec, "lesion_presentation").data["age_presentation_days"] == 14.0
    assert get_form(rec, "outcome").data["time_to_resolution_days"] == 30.0

    mark = count(AuditEvent)
    save(rec, "enrolment", {"dob": "2023-12-25"})
    db.session.commit()
    lesion = get_form(rec, "lesion_presentation")
    assert lesion.data["age_presentation_days"] == 21.0
    assert lesion.version == lesion_version + 1
    assert get_form(rec, "outcome").version == outcome_version  # uses no enrolment field
    rows = audit_rows(AuditEvent.id > 0)[mark:]
    assert [(r.action, r.instrument, r.field, r.old_value, r.new_value) for r in rows] == [
        ("update", "enrolment", "dob", '"2024-01-01"', '"2023-12-25"'),
        ("calculate", "lesion_presentation", "age_presentation_days", "14.0", "21.0"),
    ]
    assert rows[1].reason == "Recalculated after Enrolment and demographics changed"
    assert rows[1].username == "coordinator"

    # Moving the lesion date moves both the age and the time to resolution.
    save(rec, "lesion_presentation", {"lesion_date": "2024-01-10"})
    db.session.commit()
    assert get_form(rec, "lesion_presentation").data["age_presentation_days"] == 16.0
    outcome = get_form(rec, "outcome")
    assert outcome.data["time_to_resolution_days"] == 35.0
    assert outcome.version == outcome_version + 1


# --- optimistic concurrency --------------------------------------------------------------

def test_second_save_from_the_same_version_is_a_conflict(demo):
    rec = record("KMU-0001")
    start = get_form(rec, "enrolment").version
    save(rec, "enrolment", {"ga_weeks": "38"}, expected=start, reason="Found in the chart")
    db.session.commit()
    assert get_form(rec, "enrolment").version == start + 1

    error = refused_without_writes(ConflictError, save, rec, "enrolment", {"ga_weeks": "40"}, expected=start,
                                   reason="Found in the chart")
    assert error.message.startswith("Someone else saved this form at ")
    assert error.current is not None
    form = get_form(rec, "enrolment")
    assert form.data["ga_weeks"] == 38
    assert form.version == start + 1
    assert len(audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == "ga_weeks",
                          AuditEvent.action == "update")) == 2  # the demo's NR, then 38


def test_expected_version_zero_on_an_existing_form_is_a_conflict(demo):
    rec = record("KMU-0002")
    refused_without_writes(ConflictError, save, rec, "treatment", {"treatment_type": "2"}, expected=0)
    assert get_form(rec, "treatment").data == {"treatment_type": "1"}
    # ...and a version for a form that was never saved.
    fresh = new_record()
    refused_without_writes(ConflictError, save, fresh, "treatment", {"treatment_type": "2"}, expected=1)
    assert get_form(fresh, "treatment") is None
    # None skips the check (an import that overwrites).
    save(rec, "treatment", {"treatment_type": "2", "conservative_measures": ["6", "1"]}, expected=None,
         reason="Import")
    db.session.commit()
    assert get_form(rec, "treatment").data == {"treatment_type": "2", "conservative_measures": ["1", "6"]}


def test_two_threads_saving_the_same_form_from_the_same_version(demo, monkeypatch):
    """Both pass the version check (a barrier holds them there), then race to write."""
    rec = new_record()
    save(rec, "calcium_exposure", {"drug": "1"})
    db.session.commit()
    record_id, start = rec.id, get_form(rec, "calcium_exposure").version
    audit_before = count(AuditEvent)
    db.session.commit()  # the main thread holds no transaction while the workers run

    barrier = threading.Barrier(2, timeout=20)
    original = services.record_context

    def after_version_check(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if threading.current_thread().name.startswith("saver-"):
            barrier.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "record_context", after_version_check)
    results: dict[str, str] = {}

    def worker(dose: str) -> None:
        with demo.app_context():
            try:
                coordinator = db.session.scalar(select(User).where(User.username == "coordinator"))
                save_form(db.session, current_study(), Actor(coordinator), db.session.get(Record, record_id),
                          "calcium_exposure", 1, Submission(values={"dose_mg_kg": dose}), expected_version=start)
                db.session.commit()
                results[dose] = "saved"
            except ConflictError:
                db.session.rollback()
                results[dose] = "conflict"
            except Exception as exc:  # reported by the assertion below
                db.session.rollback()
                results[dose] = repr(exc)

    threads = [threading.Thread(target=worker, args=(dose,), name=f"saver-{dose}") for dose in ("10", "20")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert sorted(results.values()) == ["conflict", "saved"], results
    winner = next(dose for dose, result in results.items() if result == "saved")

    db.session.expire_all()
    form = get_form(record(rec.label), "calcium_exposure")
    assert form.version == start + 1
    assert form.data == {"drug": "1", "dose_mg_kg": float(winner)}
    rows = audit_rows(AuditEvent.record_id == record_id, AuditEvent.field == "dose_mg_kg")
    assert [(r.action, r.old_value, decode_cell(r.new_value)) for r in rows] == [
        ("update", None, (float(winner), None))]
    assert count(AuditEvent) == audit_before + 1
    report = verify_chain(db.session)
    assert report.ok, report
    assert report.checked == audit_before + 1


def test_recalculating_a_form_someone_else_just_saved(demo, monkeypatch):
    """A changes the date of birth while B saves the lesion form that A's save will recalculate."""
    rec = new_record()
    save(rec, "enrolment", {"dob": "2024-01-01"})
    save(rec, "lesion_presentation", {"lesion_date": "2024-01-15"})
    db.session.commit()
    record_id, enrolment_version = rec.id, get_form(rec, "enrolment").version
    assert get_form(rec, "lesion_presentation").data["age_presentation_days"] == 14.0
    db.session.commit()

    a_has_read, b_has_saved = threading.Event(), threading.Event()
    original = services.record_context

    def pause_after_reading(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if threading.current_thread().name == "saver-A" and not a_has_read.is_set():
            a_has_read.set()
            assert b_has_saved.wait(20)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "record_context", pause_after_reading)
    result: list[str] = []

    def user_a() -> None:
        with demo.app_context():
            try:
                coordinator = db.session.scalar(select(User).where(User.username == "coordinator"))
                save_form(db.session, current_study(), Actor(coordinator), db.session.get(Record, record_id),
                          "enrolment", 1, Submission(values={"dob": "2023-12-25"}),
                          expected_version=enrolment_version)
                db.session.commit()
                result.append("saved")
            except ConflictError:
                db.session.rollback()
                result.append("conflict")
            except Exception as exc:
                db.session.rollback()
                result.append(repr(exc))

    thread = threading.Thread(target=user_a, name="saver-A")
    thread.start()
    try:
        assert a_has_read.wait(20)
        save(rec, "lesion_presentation", {"nodule_count": "2"})  # user B, in the main thread
        db.session.commit()
    finally:
        b_has_saved.set()
        thread.join(timeout=60)
    assert not thread.is_alive()

    db.session.expire_all()
    rec = record(rec.label)
    lesion = get_form(rec, "lesion_presentation")
    assert lesion.data["nodule_count"] == 2  # B's save stands either way
    assert result in (["conflict"], ["saved"]), result
    if result == ["conflict"]:
        assert get_form(rec, "enrolment").data["dob"] == "2024-01-01"
        assert lesion.data["age_presentation_days"] == 14.0
    else:
        assert get_form(rec, "enrolment").data["dob"] == "2023-12-25"
        assert lesion.data["age_presentation_days"] == 21.0
    assert verify_chain(db.session).ok


# --- permissions -------------------------------------------------------------------------

def test_only_editors_of_the_site_can_save(demo):
    rec = record("KMU-0001")
    for username in ("monitor", "investigator", "statistician", "coordinator_nth"):
        error = refused_without_writes(PermissionDenied, save, rec, "enrolment", {"sex": "1"}, username=username)
        assert error.message == "You cannot change data at this site."
        refused_without_writes(PermissionDenied, save, rec, "calcium_exposure", {"drug": "2"}, instance=None,
                               username=username)
    assert get_form(rec, "enrolment").data["sex"] == "2"

    save(rec, "enrolment", {"sex": "1"}, username="admin", reason="Typo")
    db.session.commit()
    assert get_form(rec, "enrolment").data["sex"] == "1"
    assert get_form(rec, "enrolment").updated_by_id == user("admin").id
    row = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == "sex")[-1]
    assert (row.username, row.old_value, row.new_value) == ("admin", '"2"', '"1"')

    # The NTH coordinator edits NTH records, and the KMU coordinator may not.
    nth = new_record("NTH", "coordinator_nth")
    save(nth, "enrolment", {"sex": "3"}, username="coordinator_nth")
    db.session.commit()
    refused_without_writes(PermissionDenied, save, nth, "enrolment", {"sex": "1"}, username="coordinator")


# --- repeatable instruments --------------------------------------------------------------

def test_repeatable_instrument_appends_instances(demo):
    rec = record("KMU-0001")
    second = save(rec, "calcium_exposure", {"drug": "2"}, instance=None, expected=0)
    third = save(rec, "calcium_exposure", {"drug": "1"}, instance=None, expected=0)
    db.session.commit()
    assert (second.form.instance, third.form.instance) == (2, 3)
    instances = db.session.execute(
        select(FormInstance.instance, FormInstance.version).where(
            FormInstance.record_id == rec.id, FormInstance.instrument == "calcium_exposure"
        ).order_by(FormInstance.instance)
    ).all()
    assert [tuple(row) for row in instances] == [(1, 1), (2, 1), (3, 1)]
    assert get_form(rec, "calcium_exposure", 2).data == {"drug": "2"}
    assert get_form(rec, "calcium_exposure", 1).data["drug"] == "1"
    rows = audit_rows(AuditEvent.record_id == rec.id, AuditEvent.field == "drug", AuditEvent.instance > 1)
    assert [(r.instance, r.new_value) for r in rows] == [(2, '"2"'), (3, '"1"')]

    # A given instance can be edited, and one beyond the last can be created explicitly.
    save(rec, "calcium_exposure", {"drug": "3", "drug_other": "Calcium lactate"}, instance=2)
    db.session.commit()
    assert get_form(rec, "calcium_exposure", 2).data == {"drug": "3", "drug_other": "Calcium lactate"}


def test_instances_that_cannot_exist_are_not_found(demo):
    rec = record("KMU-0001")
    refused_without_writes(NotFoundError, save, rec, "enrolment", {"sex": "1"}, instance=2, expected=0)
    refused_without_writes(NotFoundError, save, rec, "calcium_exposure", {"drug": "1"}, instance=0, expected=0)
    refused_without_writes(NotFoundError, save, rec, "no_such_form", {"x": "1"}, instance=1, expected=0)
    # instance=None on a non-repeatable instrument means its only instance.
    outcome = save(rec, "treatment", {"treatment_type": "2", "conservative_measures": ["1"]}, instance=None,
                   expected=get_form(rec, "treatment").version, reason="Correction")
    assert outcome.form.instance == 1


# --- no-op saves -------------------------------------------------------------------------

def test_saving_the_same_values_writes_nothing(demo):
    study = current_study()
    rec = record("KMU-0002")
    for instrument in study.instruments:
        form = get_form(rec, instrument.name)
        version, audit_before = form.version, count(AuditEvent)
        # What the web form sends back untouched: every input field, codes alongside blank values.
        values = {f.name: field_type(f).to_form(form.data.get(f.name))
                  for f in instrument.data_fields if field_type(f).is_input}
        outcome = save(rec, instrument.name, values, dict(form.missing), status=form.status)
        db.session.commit()
        assert outcome.changed == [], instrument.name
        form = get_form(rec, instrument.name)
        assert form.version == version, instrument.name
        assert count(AuditEvent) == audit_before, instrument.name

    # A partial no-op, and a change of status only (audited, version bumped).
    form = get_form(rec, "enrolment")
    version = form.version
    assert save(rec, "enrolment", {"sex": "1"}).changed == []
    save(rec, "enrolment", {}, status=1, reason="Needs checking")
    db.session.commit()
    form = get_form(rec, "enrolment")
    assert (form.status, form.version) == (1, version + 1)
    row = audit_rows(AuditEvent.record_id == rec.id)[-1]
    assert (row.action, row.field, row.old_value, row.new_value, row.reason) == (
        "status", None, "2", "1", "Needs checking")


# --- the audit chain ---------------------------------------------------------------------

def test_audit_chain_verifies_after_many_saves(demo):
    rec = new_record()
    save(rec, "enrolment", {"dob": "2024-01-01", "sex": "1"})
    save(rec, "lesion_presentation", {"lesion_date": "2024-01-20", "skin_findings": "1,3", "ulcer_size_mm": "3"})
    save(rec, "lesion_presentation", {"skin_findings": ""})
    save(rec, "calcium_exposure", {"drug": "2"}, instance=None)
    save(rec, "calcium_exposure", {"drug": "1"}, instance=None)
    save(rec, "enrolment", {"dob": "2024-01-05"}, {"sex": "UNK"}, reason="Correction")
    db.session.commit()
    total = count(AuditEvent)
    assert total > 60
    report = verify_chain(db.session)
    assert report.ok, report
    assert report.checked == total
    head_hash = db.session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    rows = audit_rows(AuditEvent.id > 0)
    assert rows[0].prev_hash == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(rows))
    assert rows[-1].hash == head_hash


# --- the published cases -----------------------------------------------------------------

def test_published_cases_hold_what_the_paper_reports(demo):
    study = current_study()
    expected = {  # label: (sex, reported age in days, time to resolution in days)
        "KMU-0001": ("2", 14.0, 21.0),
        "KMU-0002": ("1", 28.0, 28.0),
        "KMU-0003": ("2", 28.0, 182.0),
    }
    times = []
    for label, (sex, age, days) in expected.items():
        rec = record(label)
        forms = {(f.instrument, f.instance): f for f in db.session.scalars(
            select(FormInstance).where(FormInstance.record_id == rec.id))}
        assert set(forms) == {(i.name, 1) for i in study.instruments}, label
        assert {f.status for f in forms.values()} == {2}, label

        enrolment = forms[("enrolment", 1)]
        assert enrolment.data["sex"] == sex
        assert enrolment.data["case_source"] == "3"
        assert enrolment.data["literature_doi"] == "10.4055/jkoa.2019.54.2.192"
        assert enrolment.data["literature_case_number"] == int(label[-1])
        assert enrolment.missing["dob"] == "NR"
        assert "dob" not in enrolment.data

        exposure = forms[("calcium_exposure", 1)]
        assert exposure.data["drug"] == "1"
        assert study.field("drug").choice_label(exposure.data["drug"]) == "Calcium gluconate"

        assert forms[("lesion_presentation", 1)].data["age_presentation_days"] == age

        outcome = forms[("outcome", 1)]
        assert outcome.data["complete_resolution"] == "1"
        assert outcome.data["complications"] == ["0"]
        assert outcome.data["time_to_resolution_days"] == days
        times.append(outcome.data["time_to_resolution_days"])
    assert statistics.median(times) == 28.0
    assert record("KMU-0004") is None
