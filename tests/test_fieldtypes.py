"""Every field type's parsing: what a user types becomes the stored value, or a clear refusal.

Fields come from the real study definition where one of that type exists, otherwise a
`Field` is built here; min/max are parsed through the type's own `parse_bound`, as the
loader does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from app.study import Choice, Field, load_study
from app.study.fieldtypes import FIELD_TYPES, FieldValueError, field_type

STUDY = load_study(Path(__file__).resolve().parent.parent / "forms")


def study_field(name: str) -> Field:
    return STUDY.field(name)


def made_field(ftype: str, name: str = "f", **kwargs) -> Field:
    """A Field not in the study, with min/max parsed the way the loader parses them."""
    field = Field(name=name, label=name.title(), type=ftype, instrument="test", **kwargs)
    bounds = {key: FIELD_TYPES[ftype].parse_bound(field, getattr(field, key))
              for key in ("min", "max") if getattr(field, key) is not None}
    return dataclasses.replace(field, **bounds)


def parse(field: Field, raw):
    return field_type(field).parse(field, raw)


def refused(field: Field, raw) -> str:
    with pytest.raises(FieldValueError) as info:
        parse(field, raw)
    return str(info.value)


EMAIL = made_field("email", "contact_email")
DROPDOWN = made_field(
    "dropdown", "unit", choices=(Choice("a", "NICU A"), Choice("b", "NICU B"), Choice("10", "Other unit"))
)
DESCRIPTIVE = made_field("descriptive", "intro")


def test_the_registry_holds_exactly_the_types_covered_here():
    assert set(FIELD_TYPES) == {
        "text", "notes", "integer", "number", "date", "datetime", "email", "yesno", "radio",
        "dropdown", "checkbox", "calc", "descriptive",
    }
    for name, kind in FIELD_TYPES.items():
        assert kind.name == name


def test_the_study_fields_used_here_have_the_expected_types():
    expected = {
        "initials": "text", "outcome_notes": "notes", "ga_weeks": "integer", "nodule_count": "integer",
        "concentration_pct": "number", "dob": "date", "infusion_start": "datetime", "diluted": "yesno", "sex": "radio",
        "skin_findings": "checkbox", "complications": "checkbox", "age_presentation_days": "calc",
    }
    assert {name: study_field(name).type for name in expected} == expected


def test_input_types_and_computed_types():
    assert {name for name, kind in FIELD_TYPES.items() if not kind.is_input} == {"calc", "descriptive"}
    assert {name for name, kind in FIELD_TYPES.items() if kind.has_choices} == {
        "yesno", "radio", "dropdown", "checkbox"}


# --- blank input: every type stores None -------------------------------------------------

BLANK_FIELDS = [
    study_field("initials"), study_field("outcome_notes"), study_field("ga_weeks"), study_field("concentration_pct"),
    study_field("dob"), study_field("infusion_start"), EMAIL, study_field("diluted"), study_field("sex"), DROPDOWN,
    study_field("skin_findings"), study_field("age_presentation_days"), DESCRIPTIVE,
]


def test_blank_fields_cover_every_type():
    assert {f.type for f in BLANK_FIELDS} == set(FIELD_TYPES)


@pytest.mark.parametrize("field", BLANK_FIELDS, ids=lambda f: f.type)
@pytest.mark.parametrize("raw", ["", "   ", None, []], ids=["empty", "spaces", "none", "empty-list"])
def test_blank_input_is_stored_as_none(field, raw):
    assert parse(field, raw) is None


# --- text and notes ----------------------------------------------------------------------

def test_text_is_stripped_and_kept():
    assert parse(study_field("initials"), "  K.S.  ") == "K.S."
    assert parse(study_field("initials"), ["A.B.", "ignored"]) == "A.B."


def test_text_length_limit():
    field = study_field("initials")
    assert parse(field, "x" * 500) == "x" * 500
    assert refused(field, "x" * 501) == "Too long: at most 500 characters."


def test_notes_take_long_multi_line_text():
    field = study_field("outcome_notes")
    text = "Line one\nLine two\n" + "y" * 5000
    assert parse(field, f"\n{text}\n") == text
    assert parse(field, "z" * 20000) == "z" * 20000
    assert refused(field, "z" * 20001) == "Too long: at most 20000 characters."


# --- integer -----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "stored"), [("007", 7), ("1", 1), (" 50 ", 50), ("+30", 30), ("010", 10)])
def test_integer_valid(raw, stored):
    value = parse(study_field("nodule_count"), raw)  # 1..50
    assert value == stored
    assert type(value) is int


@pytest.mark.parametrize("raw", ["12.5", "abc", "1e2", "3 weeks", "--3", "0x1F", "12,0"])
def test_integer_invalid_names_the_value(raw):
    message = refused(made_field("integer"), raw)
    assert message == f"Enter a whole number (for example 12); '{raw}' is not one."


def test_integer_min_and_max():
    field = study_field("ga_weeks")  # 20..45 weeks
    assert (field.min, field.max) == (20, 45)
    assert refused(field, "19") == "Must be at least 20; 19 is below it."
    assert refused(field, "46") == "Must be at most 45; 46 is above it."
    assert refused(field, "-1") == "Must be at least 20; -1 is below it."
    assert parse(field, "20") == 20
    assert parse(field, "45") == 45


def test_integer_digit_limit():
    unbounded = made_field("integer")
    assert parse(unbounded, "9" * 15) == 999_999_999_999_999
    assert parse(unbounded, "-" + "9" * 15) == -999_999_999_999_999
    assert parse(unbounded, "0" * 20 + "7") == 7  # leading zeros are not digits of the value
    too_large = "Too large: a whole number has at most 15 digits."
    assert refused(unbounded, "1" + "0" * 15) == too_large
    # Far beyond Python's own int-conversion limit (4300 digits): still a field error, not a crash.
    assert refused(study_field("ga_weeks"), "9" * 4301) == too_large


def test_integer_without_bounds_takes_negative_numbers():
    assert parse(made_field("integer"), "-12") == -12


# --- number ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "stored"),
    [(" 2.50 ", 2.5), ("10", 10.0), (".5", 0.5), ("5.", 5.0), ("1e1", 10.0), ("100", 100.0), ("0.1", 0.1)],
)
def test_number_valid(raw, stored):
    value = parse(study_field("concentration_pct"), raw)
    assert value == stored
    assert type(value) is float


@pytest.mark.parametrize("raw", ["abc", "2.5.1", "1,000.5", "nan", "inf", "10 %", "--1"])
def test_number_invalid_names_the_value(raw):
    assert refused(made_field("number"), raw) == f"Enter a number (for example 2.5); '{raw}' is not one."


def test_number_comma_decimal_mark_gets_its_own_message():
    field = study_field("concentration_pct")
    assert refused(field, "2,5") == "Use a point as the decimal mark: '2.5'."
    assert refused(field, " 10,25 ") == "Use a point as the decimal mark: '10.25'."


def test_number_overflow_is_refused():
    assert refused(made_field("number"), "1e999") == "'1e999' is not a finite number."


def test_number_min_and_max():
    field = study_field("concentration_pct")  # 0.1..100 % w/v
    assert (field.min, field.max) == (0.1, 100.0)
    low = refused(field, "0.05")
    assert low.startswith("Must be at least 0.1;")
    assert "0.05 is below it" in low
    high = refused(field, "150")
    assert high.startswith("Must be at most 100")
    assert "150 is above it" in high


# --- date --------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "stored"), [("2024-02-29", "2024-02-29"), (" 2024-03-01 ", "2024-03-01"),
                                             ("2000-02-29", "2000-02-29"), ("1999-12-31", "1999-12-31")])
def test_date_valid(raw, stored):
    assert parse(study_field("dob"), raw) == stored


@pytest.mark.parametrize(
    "raw", ["2023-02-29", "1900-02-29", "2024-13-01", "2024-04-31", "2024-3-1", "20240301", "01/03/2024",
            "2024-03-01T10:00", "yesterday"],
)
def test_date_invalid_names_the_value(raw):
    message = refused(study_field("dob"), raw)
    assert message == f"Enter a date as YYYY-MM-DD (for example 2024-03-01); '{raw}' is not one."


def test_date_min_and_max():
    field = made_field("date", min="2020-01-01", max="2024-12-31")
    assert (field.min, field.max) == ("2020-01-01", "2024-12-31")
    assert parse(field, "2020-01-01") == "2020-01-01"
    assert refused(field, "2019-12-31") == "Must be at least 2020-01-01; 2019-12-31 is below it."
    assert refused(field, "2025-01-01") == "Must be at most 2024-12-31; 2025-01-01 is above it."


# --- datetime ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "stored"),
    [("2024-03-01T14:30", "2024-03-01 14:30"), ("2024-03-01 14:30", "2024-03-01 14:30"),
     ("2024-03-01T14:30:59", "2024-03-01 14:30"), (" 2024-02-29 00:00 ", "2024-02-29 00:00")],
)
def test_datetime_valid(raw, stored):
    assert parse(study_field("infusion_start"), raw) == stored


@pytest.mark.parametrize("raw", ["2024-03-01", "2024-03-01 25:00", "2023-02-29 10:00", "14:30", "now"])
def test_datetime_invalid_names_the_value(raw):
    message = refused(study_field("infusion_start"), raw)
    assert message == (
        f"Enter a date and time as YYYY-MM-DD HH:MM (for example 2024-03-01 14:30); '{raw}' is not one."
    )


def test_datetime_min_and_max():
    field = made_field("datetime", min="2024-01-01T00:00", max="2024-12-31 23:59")
    assert (field.min, field.max) == ("2024-01-01 00:00", "2024-12-31 23:59")
    assert refused(field, "2023-12-31T23:59") == "Must be at least 2024-01-01 00:00; 2023-12-31 23:59 is below it."
    assert refused(field, "2025-01-01T00:00") == "Must be at most 2024-12-31 23:59; 2025-01-01 00:00 is above it."


# --- email -------------------------------------------------------------------------------

def test_email_valid_is_normalised():
    assert parse(EMAIL, " nurse@example.org ") == "nurse@example.org"
    assert parse(EMAIL, "Nurse.Kim@Example.ORG") == "Nurse.Kim@example.org"


@pytest.mark.parametrize("raw", ["not-an-email", "a@", "@example.org", "a b@example.org"])
def test_email_invalid_names_the_value(raw):
    assert refused(EMAIL, raw) == f"Enter an e-mail address such as name@example.org; '{raw}' is not one."


def test_email_has_no_bounds():
    with pytest.raises(FieldValueError, match="no minimum or maximum"):
        FIELD_TYPES["email"].parse_bound(EMAIL, 3)


# --- single choice: yesno, radio, dropdown ---------------------------------------------

def test_yesno_fields_have_the_fixed_choices():
    assert study_field("diluted").choice_codes == ("1", "0")


@pytest.mark.parametrize(("raw", "stored"), [("1", "1"), ("0", "0"), (" 1 ", "1"), (["0"], "0")])
def test_yesno_valid(raw, stored):
    assert parse(study_field("diluted"), raw) == stored


@pytest.mark.parametrize("raw", ["yes", "2", "Y", "true"])
def test_yesno_invalid_names_the_value_and_the_choices(raw):
    assert refused(study_field("diluted"), raw) == f"'{raw}' is not one of the choices: 1 (Yes), 0 (No)."


@pytest.mark.parametrize("raw", ["1", "2", "3"])
def test_radio_valid(raw):
    assert parse(study_field("sex"), raw) == raw


def test_radio_invalid_names_the_value_and_the_choices():
    assert refused(study_field("sex"), "4") == (
        "'4' is not one of the choices: 1 (Male), 2 (Female), 3 (Undetermined)."
    )
    assert refused(study_field("sex"), "Male").startswith("'Male' is not one of the choices")
    # A missing-data code is not a choice: it travels separately (Submission.missing).
    assert refused(study_field("sex"), "NR").startswith("'NR' is not one of the choices")


def test_dropdown_valid_and_invalid():
    assert parse(DROPDOWN, "a") == "a"
    assert parse(DROPDOWN, " 10 ") == "10"
    assert refused(DROPDOWN, "c") == "'c' is not one of the choices: a (NICU A), b (NICU B), 10 (Other unit)."
    assert refused(DROPDOWN, "A").startswith("'A' is not one of the choices")


# --- checkbox ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "stored"),
    [(["3", "1"], ["1", "3"]), (["1"], ["1"]), ("3,1", ["1", "3"]), (" 5 , 2 ", ["2", "5"]),
     (["2", "2", "2"], ["2"]), (["", "4"], ["4"]), ("", None), ([], None), ([""], None)],
)
def test_checkbox_valid_is_kept_in_choice_order(raw, stored):
    assert parse(study_field("skin_findings"), raw) == stored


def test_checkbox_order_is_the_definition_order_not_sorted():
    field = study_field("complications")  # choices 1, 2, 3, 4, 0 (None last)
    assert field.choice_codes == ("1", "2", "3", "4", "0")
    assert parse(field, ["0", "1"]) == ["1", "0"]
    assert parse(field, ["4", "0", "2"]) == ["2", "4", "0"]


def test_checkbox_invalid_names_every_bad_code():
    field = study_field("skin_findings")
    message = refused(field, ["1", "9", "7"])
    assert message.startswith("'7, 9' is not one of the choices: 1 (Erythema), 2 (Induration), 3 (Ulceration)")
    assert refused(field, "1,x").startswith("'x' is not one of the choices")


# --- calc and descriptive ----------------------------------------------------------------

def test_calc_field_is_not_typed_by_users_and_parses_as_a_number():
    field = study_field("age_presentation_days")
    kind = field_type(field)
    assert kind.is_input is False
    assert field.calculation_tree is not None
    assert parse(field, " 14 ") == 14.0
    assert refused(field, "fourteen") == "Enter a number (for example 2.5); 'fourteen' is not one."
    assert refused(field, "14,5") == "Use a point as the decimal mark: '14.5'."
    assert kind.to_form(28.0) == "28"
    assert kind.to_form(1 / 3) == "0.3333333333"


def test_descriptive_holds_no_data():
    kind = field_type(DESCRIPTIVE)
    assert kind.is_input is False
    assert DESCRIPTIVE.stores_value is False
    assert parse(DESCRIPTIVE, "anything at all") is None
    assert parse(DESCRIPTIVE, ["1", "2"]) is None


# --- display round trips -----------------------------------------------------------------

def test_stored_values_render_back_for_forms_and_pages():
    assert field_type(study_field("concentration_pct")).to_form(2.5) == "2.5"
    assert field_type(study_field("concentration_pct")).to_form(10.0) == "10"
    assert field_type(study_field("infusion_start")).to_form("2024-03-01 14:30") == "2024-03-01T14:30"
    assert field_type(study_field("skin_findings")).to_form(["1", "3"]) == ["1", "3"]
    assert field_type(study_field("skin_findings")).to_text(study_field("skin_findings"), ["1", "3"]) == (
        "Erythema, Ulceration"
    )
    assert field_type(study_field("sex")).to_text(study_field("sex"), "2") == "Female"
    assert field_type(study_field("ga_weeks")).to_form(None) == ""
