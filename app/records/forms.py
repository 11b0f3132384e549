"""WTForms classes built from the study definition, a fresh class per request.

Each field type makes its own widget (`FieldType.make_wtforms_field`); every field that
may take a missing-data code gets a companion `<name>__missing` picker. The classes only
carry input and CSRF: validation is the write path's, so the web and the API agree.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, SelectField, StringField
from wtforms.validators import Length

from app.records.models import FormInstance, FormStatus
from app.records.services import Submission
from app.study.definition import Instrument, Study
from app.study.fieldtypes import field_type, select_choices

MISSING_SUFFIX = "__missing"
STATUS_CHOICES = [(s.value, s.label) for s in FormStatus]
#: The usual reasons for changing recorded data (ICH E6), with free text beside them.
REASON_CHOICES = [("", "—"), ("Transcription error", "Transcription error"),
                  ("New source document", "New source document"), ("Query response", "Query response"),
                  ("Other", "Other (explain)")]


def build_form_class(study: Study, instrument: Instrument) -> type[FlaskForm]:
    attrs: dict[str, Any] = {}
    missing_choices = select_choices([("", "—"), *((m.code, f"{m.code}: {m.label}") for m in study.missing_codes)])
    for f in instrument.data_fields:
        attrs[f.name] = field_type(f).make_wtforms_field(f, f.label)
        if f.allow_missing_codes:
            attrs[f.name + MISSING_SUFFIX] = SelectField(
                "Missing-data code", choices=missing_choices, validate_choice=False
            )
    attrs["form_status"] = SelectField("Form status", choices=select_choices(STATUS_CHOICES), coerce=int,
                                       default=FormStatus.INCOMPLETE.value)
    attrs["version"] = HiddenField(default="0")
    attrs["reason_choice"] = SelectField("Reason for change", choices=select_choices(REASON_CHOICES),
                                         validate_choice=False)
    attrs["reason"] = StringField("Details", validators=[Length(max=2000)])
    attrs["confirm_warnings"] = BooleanField("The values are correct (the warnings are recorded)")
    return type(f"{instrument.name.title().replace('_', '')}Form", (FlaskForm,), attrs)


def initial_data(instrument: Instrument, form: FormInstance | None) -> dict[str, Any]:
    """The stored instance as form data (for GET)."""
    if form is None:
        return {"version": "0", "form_status": FormStatus.INCOMPLETE.value}
    data: dict[str, Any] = {"version": str(form.version), "form_status": form.status}
    for f in instrument.data_fields:
        data[f.name] = field_type(f).to_form(form.data.get(f.name))
        if f.allow_missing_codes:
            data[f.name + MISSING_SUFFIX] = form.missing.get(f.name, "")
    return data


def submission_from(instrument: Instrument, form: FlaskForm) -> Submission:
    """What the user typed, as the write path takes it (calc fields are never user input)."""
    values: dict[str, Any] = {}
    missing: dict[str, str | None] = {}
    for f in instrument.data_fields:
        if not field_type(f).is_input:
            continue
        values[f.name] = form[f.name].data
        if f.allow_missing_codes:
            missing[f.name] = form[f.name + MISSING_SUFFIX].data or None
    return Submission(values=values, missing=missing, status=form.form_status.data)


def reason_from(form: FlaskForm) -> str | None:
    """'Transcription error: dob typed as 2021', or just one of the two parts."""
    parts = [p.strip() for p in (form.reason_choice.data or "", form.reason.data or "") if p and p.strip()]
    return ": ".join(parts) or None


def expected_version(form: FlaskForm) -> int:
    raw = (form.version.data or "0").strip()
    return int(raw) if raw.isdigit() else -1
