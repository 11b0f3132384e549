"""Arbitrary input into every field of every instrument, through the real form page.

Fields are enumerated from the study definition. Whatever is typed (any unicode, control
characters, NUL, huge numbers, megabyte-long text, lists where one value is expected), the
page answers a save or a refusal, never a 500; each value its field type refuses is named
next to that field; and a refusal writes nothing (the form's version and the audit trail
are unchanged).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flask_wtf import FlaskForm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from app.audit.models import AuditEvent
from app.extensions import db
from app.records.forms import MISSING_SUFFIX
from app.records.models import FormInstance, Record
from app.study import Choice, Field, load_study
from app.study.fieldtypes import FIELD_TYPES, FieldValueError, field_type
from tests.conftest import make_app

STUDY = load_study(Path(__file__).resolve().parent.parent / "forms")
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def input_fields(instrument: str) -> list[Field]:
    return [f for f in STUDY.instrument(instrument).data_fields if field_type(f).is_input]


def raw_text() -> st.SearchStrategy[str]:
    """Text a user, a paste or an attacker might send: near-misses of every type and garbage."""
    return st.one_of(
        st.text(max_size=30),
        st.text(min_size=1, max_size=3).map(lambda s: s * 3000),  # long repeated text
        st.integers().map(str),
        st.integers(min_value=16, max_value=6000).map(lambda n: "9" * n),  # beyond int/float limits
        st.floats().map(str),  # includes nan, inf, 1e+300
        st.dates().map(str),
        st.datetimes().map(lambda d: d.isoformat()),
        st.sampled_from(["", " ", "\x00", "0\x00", "\u202e1", "\uff11\uff12", "\u0663", "2024-02-30", "1e999", "-0",
                         "<script>alert(1)</script>", "'; DROP TABLE record; --", "a@b", "@@", "NA", "-1"]),
    )


def value_for(field: Field) -> st.SearchStrategy[str | list[str]]:
    codes = [c.code for c in field.choices]
    one = st.one_of(raw_text(), st.sampled_from(codes)) if codes else raw_text()
    if field.type == "checkbox":
        return st.lists(one, max_size=4)
    return one


def refused(field: Field, raw: str | list[str]) -> bool:
    """Whether the field type itself refuses the value (the page must then say so next to it)."""
    try:
        field_type(field).parse(field, raw)
    except FieldValueError:
        return True
    return False


@pytest.fixture
def coordinator_record(as_user):
    client = as_user("coordinator")
    response = client.post("/sites/KMU/records")
    label = response.headers["Location"].split("/")[2]
    return client, db.session.scalar(select(Record).where(Record.label == label))


def snapshot(record: Record, instrument: str) -> tuple[int, int]:
    db.session.expire_all()
    version = db.session.scalar(select(FormInstance.version).where(
        FormInstance.record_id == record.id, FormInstance.instrument == instrument, FormInstance.instance == 1))
    return version or 0, db.session.scalar(select(func.count()).select_from(AuditEvent))


@pytest.mark.parametrize("instrument", [i.name for i in STUDY.instruments])
def test_any_input_on_every_field_is_saved_or_refused_next_to_the_field(coordinator_record, instrument):
    client, record = coordinator_record
    fields = {f.name: f for f in input_fields(instrument)}
    values = st.fixed_dictionaries({}, optional={name: value_for(f) for name, f in fields.items()})

    @FUZZ
    @given(values=values, missing=st.fixed_dictionaries({}, optional={
        name + MISSING_SUFFIX: st.one_of(st.sampled_from(sorted(STUDY.missing_code_values)), raw_text())
        for name, f in fields.items() if f.allow_missing_codes}))
    def check(values, missing):
        version, audit_rows = snapshot(record, instrument)
        data = {**values, **missing, "form_status": "0", "version": str(version),
                "reason_choice": "Other", "reason": "fuzzing"}
        response = client.post(f"/records/{record.label}/{instrument}/1", data=data)
        assert response.status_code in (302, 422), response.status_code
        bad = {name for name, raw in values.items() if refused(fields[name], raw)}
        if response.status_code == 302:
            assert not bad, f"saved values the field type refuses: {sorted(bad)}"
            return
        page = response.get_data(as_text=True)
        assert "problem" in page and "to fix before this form is saved" in page
        for name in bad:
            assert f'id="{name}-error"' in page, f"no message next to {name}"
        assert snapshot(record, instrument) == (version, audit_rows), "a refused save wrote something"

    check()


@given(status=st.one_of(st.text(max_size=20), st.integers().map(str)), version=raw_text(),
       reason=st.text(max_size=3000))
@FUZZ
def test_form_status_version_and_reason_are_fuzzed_too(coordinator_record, status, version, reason):
    client, record = coordinator_record
    instrument = STUDY.instruments[0].name
    before = snapshot(record, instrument)
    response = client.post(f"/records/{record.label}/{instrument}/1",
                           data={"form_status": status, "version": version, "reason": reason})
    assert response.status_code in (302, 409, 422), response.status_code
    if response.status_code != 302:
        assert snapshot(record, instrument) == before
        page = response.get_data(as_text=True)
        assert 'role="alert"' in page or "alert-danger" in page


def field_of_type(name: str) -> Field:
    """The study's first field of that type, or one made here for types the study does not use."""
    for f in STUDY.iter_fields():
        if f.type == name:
            return f
    choices = (Choice("1", "One"), Choice("b", "Bee")) if FIELD_TYPES[name].has_choices else ()
    return Field(name="probe", label="Probe", type=name, instrument="probe", choices=choices)


@pytest.fixture(scope="module")
def form_app():
    """An app for request contexts only: the widgets and the parser touch no database."""
    return make_app("sqlite://")


@pytest.mark.parametrize("type_name", sorted(FIELD_TYPES))
@given(raw=st.lists(raw_text(), max_size=3))
@FUZZ
def test_every_field_types_widget_and_parser_refuse_with_a_message(form_app, type_name, raw):
    """Each registered type's WTForms field takes any submission, and the parse the web form and
    the API share either stores a value or refuses with a message; nothing else is raised."""
    field = field_of_type(type_name)
    kind = field_type(field)
    form_class = type("ProbeForm", (FlaskForm,), {field.name: kind.make_wtforms_field(field, field.label)})
    with form_app.test_request_context(method="POST", data=MultiDict([(field.name, value) for value in raw])):
        form = form_class()
        form.validate()
        if not kind.is_input:
            return
        try:
            kind.parse(field, form[field.name].data)
        except FieldValueError as exc:
            assert str(exc).strip()
