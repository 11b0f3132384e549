"""The flat export/import columns of a study, named exactly as REDCap names them.

Exports, `exportFieldNames` and imports all use this one mapping, so a column a client
gets from an export is a column it can send back. The order is REDCap's: the record ID,
`redcap_repeat_instrument`, `redcap_repeat_instance`, `redcap_data_access_group` (when
asked), then each form's fields followed by `<form>_complete`. A checkbox is one column
per option (`field___code`, the code lower-cased, other characters as `_`), plus one per
missing-data code, so that "Not reported" is never confused with "not ticked".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.study.definition import Field, Study

REPEAT_INSTRUMENT = "redcap_repeat_instrument"
REPEAT_INSTANCE = "redcap_repeat_instance"
DAG = "redcap_data_access_group"
STATUS_SUFFIX = "_complete"
SPECIAL_HEADERS = {REPEAT_INSTRUMENT: "Repeat Instrument", REPEAT_INSTANCE: "Repeat Instance",
                   DAG: "Data Access Group"}


def checkbox_column(field_name: str, code: str) -> str:
    """`field___code` as REDCap spells it: code lower-cased, anything else than a-z0-9 as `_`."""
    return f"{field_name}___{re.sub(r'[^a-z0-9]', '_', code.lower())}"


@dataclass(frozen=True, slots=True)
class Column:
    """One flat column.

    `kind` is "id", "repeat_instrument", "repeat_instance", "dag", "value" (one field),
    "option" (a checkbox option `code`), "missing" (a checkbox's missing-data `code`) or
    "status" (`instrument`'s form status).
    """

    name: str
    header: str
    kind: str
    instrument: str | None = None
    field: Field | None = None
    code: str | None = None


def field_columns(study: Study, field: Field) -> list[Column]:
    """The columns one data field exports as (none for a descriptive field)."""
    if not field.stores_value:
        return []
    if field.type != "checkbox":
        return [Column(field.name, field.label, "value", field.instrument, field)]
    columns = [Column(checkbox_column(field.name, c.code), f"{field.label} (choice={c.label})", "option",
                      field.instrument, field, c.code) for c in field.choices]
    if field.allow_missing_codes:
        columns += [Column(checkbox_column(field.name, m.code), f"{field.label} (choice={m.label})", "missing",
                           field.instrument, field, m.code) for m in study.missing_codes]
    return columns


def status_column(study: Study, instrument: str) -> Column:
    return Column(f"{instrument}{STATUS_SUFFIX}", "Complete?", "status", instrument)


def all_columns(study: Study) -> list[Column]:
    """Every data column in REDCap's order (without the record ID and redcap_* columns)."""
    columns: list[Column] = []
    for instrument in study.instruments:
        for f in instrument.fields:
            columns += field_columns(study, f)
        columns.append(status_column(study, instrument.name))
    return columns


def leading_columns(study: Study, *, with_dag: bool) -> list[Column]:
    """The record ID and the redcap_* columns that start every row."""
    columns = [Column(study.record_id_field, study.record_id_label, "id")]
    if any(i.repeatable for i in study.instruments):
        columns += [Column(REPEAT_INSTRUMENT, SPECIAL_HEADERS[REPEAT_INSTRUMENT], "repeat_instrument"),
                    Column(REPEAT_INSTANCE, SPECIAL_HEADERS[REPEAT_INSTANCE], "repeat_instance")]
    if with_dag:
        columns.append(Column(DAG, SPECIAL_HEADERS[DAG], "dag"))
    return columns


def import_columns(study: Study) -> dict[str, Column]:
    """Every column name an import may send, with what it means (calc fields included, to be ignored)."""
    mapping = {c.name: c for c in leading_columns(study, with_dag=True)}
    mapping.update((c.name, c) for c in all_columns(study))
    return mapping


def select_columns(
    study: Study, fields: Sequence[str], forms: Sequence[str], hidden: Iterable[str] = ()
) -> tuple[list[Column], list[str], list[str]]:
    """The data columns for REDCap's `fields` and `forms` parameters, and the field and form names
    not recognised.

    Both empty means everything. A field name selects all of a checkbox's columns; the
    record ID and `<form>_complete` are accepted as field names (PyCap sends them);
    fields in `hidden` (removed for a de-identified export) are dropped silently, as REDCap does.
    """
    columns = all_columns(study)
    hidden_names = set(hidden)
    if not fields and not forms:
        return [c for c in columns if c.field is None or c.field.name not in hidden_names], [], []
    wanted_fields: set[str] = set()
    wanted_status: set[str] = set()
    unknown_fields: list[str] = []
    for name in fields:
        if study.has_field(name):
            wanted_fields.add(name)
        elif name.endswith(STATUS_SUFFIX) and study.has_instrument(name.removesuffix(STATUS_SUFFIX)):
            wanted_status.add(name.removesuffix(STATUS_SUFFIX))
        elif name != study.record_id_field:
            unknown_fields.append(name)
    wanted_forms = {name for name in forms if study.has_instrument(name)}
    unknown_forms = [name for name in forms if name not in wanted_forms]
    chosen = []
    for c in columns:
        if c.field is not None and c.field.name in hidden_names:
            continue
        in_form = c.instrument in wanted_forms
        if in_form or (c.field is not None and c.field.name in wanted_fields) or (
            c.kind == "status" and c.instrument in wanted_status
        ):
            chosen.append(c)
    return chosen, unknown_fields, unknown_forms
