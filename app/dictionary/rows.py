"""The study definition as REDCap data-dictionary rows: one source for the API and the CSV.

The API's `content=metadata` answers these rows under REDCap's API keys (`field_name`,
...); `flask dictionary export` and the admin page write the same rows under REDCap's
CSV headers ("Variable / Field Name", ...). The first row is the record-ID field, as
REDCap requires. What REDCap's dictionary has no column for is carried in the field
annotation as action tags, so that export -> import -> export is byte-identical:
``@NOMISSING`` (REDCap's own tag: no missing-data codes) and ``@CASEBOOK-UNITS="mg/kg"``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from app.study.definition import Field, Study
from app.study.fieldtypes import format_number

#: REDCap's metadata keys (API) and data-dictionary headers (CSV), in REDCap's order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("field_name", "Variable / Field Name"),
    ("form_name", "Form Name"),
    ("section_header", "Section Header"),
    ("field_type", "Field Type"),
    ("field_label", "Field Label"),
    ("select_choices_or_calculations", "Choices, Calculations, OR Slider Labels"),
    ("field_note", "Field Note"),
    ("text_validation_type_or_show_slider_number", "Text Validation Type OR Show Slider Number"),
    ("text_validation_min", "Text Validation Min"),
    ("text_validation_max", "Text Validation Max"),
    ("identifier", "Identifier?"),
    ("branching_logic", "Branching Logic (Show field only if...)"),
    ("required_field", "Required Field?"),
    ("custom_alignment", "Custom Alignment"),
    ("question_number", "Question Number (surveys only)"),
    ("matrix_group_name", "Matrix Group Name"),
    ("matrix_ranking", "Matrix Ranking?"),
    ("field_annotation", "Field Annotation"),
)
KEYS: tuple[str, ...] = tuple(key for key, _ in COLUMNS)
HEADERS: tuple[str, ...] = tuple(header for _, header in COLUMNS)

#: Casebook type -> (REDCap field type, REDCap text validation).
REDCAP_TYPES: dict[str, tuple[str, str]] = {
    "text": ("text", ""),
    "integer": ("text", "integer"),
    "number": ("text", "number"),
    "date": ("text", "date_ymd"),
    "datetime": ("text", "datetime_ymd"),
    "email": ("text", "email"),
    "notes": ("notes", ""),
    "radio": ("radio", ""),
    "dropdown": ("dropdown", ""),
    "checkbox": ("checkbox", ""),
    "yesno": ("yesno", ""),
    "calc": ("calc", ""),
    "descriptive": ("descriptive", ""),
}
NOMISSING_TAG = "@NOMISSING"
UNITS_TAG = "@CASEBOOK-UNITS"
#: REDCap writes a byte-order mark so spreadsheet programs read the file as UTF-8.
BOM = "\ufeff"


def format_choices(field: Field) -> str:
    """REDCap's choice list: ``1, Label | 2, Label``."""
    return " | ".join(f"{choice.code}, {choice.label}" for choice in field.choices)


def format_bound(field: Field, bound: Any) -> str:
    """A min/max as REDCap writes it; numbers without a trailing '.0'."""
    if bound is None:
        return ""
    if field.type == "number":
        return format_number(bound)
    return str(bound)


def units_tag(units: str) -> str:
    """``@CASEBOOK-UNITS="..."``, quoted with whichever quote the units do not contain."""
    quote = "'" if '"' in units else '"'
    return f"{UNITS_TAG}={quote}{units}{quote}"


def annotation(field: Field) -> str:
    tags = []
    if field.type not in ("calc", "descriptive") and not field.allow_missing_codes:
        tags.append(NOMISSING_TAG)
    if field.units:
        tags.append(units_tag(field.units))
    return " ".join(tags)


def field_row(field: Field) -> dict[str, str]:
    ftype, validation = REDCAP_TYPES[field.type]
    if field.type == "calc":
        choices = field.calculation or ""
    elif field.type in ("radio", "dropdown", "checkbox"):
        choices = format_choices(field)
    else:
        choices = ""
    return {
        "field_name": field.name,
        "form_name": field.instrument,
        "section_header": field.section or "",
        "field_type": ftype,
        "field_label": field.label,
        "select_choices_or_calculations": choices,
        "field_note": field.note or "",
        "text_validation_type_or_show_slider_number": validation,
        "text_validation_min": format_bound(field, field.min),
        "text_validation_max": format_bound(field, field.max),
        "identifier": "y" if field.identifier else "",
        "branching_logic": field.branching or "",
        "required_field": "y" if field.required else "",
        "custom_alignment": "",
        "question_number": "",
        "matrix_group_name": "",
        "matrix_ranking": "",
        "field_annotation": annotation(field),
    }


def record_id_row(study: Study) -> dict[str, str]:
    """REDCap's first field: the record ID, on the first instrument, as plain text."""
    row = dict.fromkeys(KEYS, "")
    row.update(field_name=study.record_id_field, form_name=study.instruments[0].name, field_type="text",
               field_label=study.record_id_label)
    return row


def dictionary_rows(study: Study) -> list[dict[str, str]]:
    """Every row of the dictionary, keyed by REDCap's API metadata keys."""
    return [record_id_row(study), *(field_row(f) for f in study.iter_fields())]


def dictionary_csv(study: Study) -> str:
    """The dictionary as REDCap's CSV file (headers, byte-order mark, one line per field)."""
    buffer = io.StringIO()
    buffer.write(BOM)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADERS)
    for row in dictionary_rows(study):
        writer.writerow([row[key] for key in KEYS])
    return buffer.getvalue()
