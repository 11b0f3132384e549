"""Reading a REDCap data dictionary into a Casebook `forms/` definition.

Everything Casebook models is carried over: instruments in order, fields with labels,
sections, notes, types and validations, choices, min/max, identifier and required flags,
branching logic and calculations (parsed by the same logic parser the app uses), and
the units and ``@NOMISSING`` tags that `rows.py` writes. What Casebook does not model
(slider labels, matrix layout, survey settings, other action tags, file and SQL fields)
is listed in the report, field by field, rather than silently dropped. The result is
checked by loading it with the real study loader, so a definition written here always
starts the app.

REDCap's dictionary has no place for study settings (name, missing-data codes) or for
which instruments repeat; those come from a base definition (the running study) where
an instrument of the same name exists, and from the caller (`repeatable`).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from app.dictionary.rows import BOM, COLUMNS, NOMISSING_TAG, UNITS_TAG
from app.logic import LogicError, checkbox_refs, parse, referenced_fields
from app.study.definition import Study
from app.study.loader import CHOICE_CODE_RE, NAME_RE, StudyDefinitionError, load_study

HEADER_TO_KEY = {header.lower(): key for key, header in COLUMNS} | {key: key for key, _ in COLUMNS}
_INT_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_UNITS_RE = re.compile(re.escape(UNITS_TAG) + r"""=(?:"([^"]*)"|'([^']*)')""")
_TAG_RE = re.compile(r"@[A-Z][A-Z0-9_-]*")
RULES_FILE = "rules.yaml"

#: REDCap text validations that become a Casebook type, and what the mapping loses.
TEXT_VALIDATIONS: dict[str, tuple[str, str | None]] = {
    "": ("text", None),
    "integer": ("integer", None),
    "int": ("integer", None),
    "number": ("number", None),
    "float": ("number", None),
    "date_ymd": ("date", None),
    "date_mdy": ("date", "displayed as YYYY-MM-DD (REDCap showed M-D-Y; stored values are the same)"),
    "date_dmy": ("date", "displayed as YYYY-MM-DD (REDCap showed D-M-Y; stored values are the same)"),
    "datetime_ymd": ("datetime", None),
    "datetime_mdy": ("datetime", "displayed as YYYY-MM-DD HH:MM (REDCap showed M-D-Y)"),
    "datetime_dmy": ("datetime", "displayed as YYYY-MM-DD HH:MM (REDCap showed D-M-Y)"),
    "datetime_seconds_ymd": ("datetime", "seconds are not kept"),
    "datetime_seconds_mdy": ("datetime", "seconds are not kept"),
    "datetime_seconds_dmy": ("datetime", "seconds are not kept"),
    "email": ("email", None),
}
SAME_TYPES = {"notes", "radio", "dropdown", "checkbox", "yesno", "calc", "descriptive"}
UNSUPPORTED_TYPES = {
    "file": "file upload fields are not supported; field left out",
    "sql": "SQL (dynamic query) fields are not supported; field left out",
}
BOUNDED_TYPES = {"integer", "number", "date", "datetime"}


class DictionaryError(Exception):
    """The file is not a data dictionary at all (no header, unreadable); nothing was written."""


@dataclass(slots=True)
class ImportedDefinition:
    """A `forms/` definition as file texts, and what could not be carried over."""

    files: dict[str, str]
    notes: list[str]
    instruments: int
    fields: int

    def report(self) -> str:
        lines = [f"{self.instruments} instruments, {self.fields} fields imported."]
        if self.notes:
            lines.append("Not carried over (Casebook does not model it) or changed:")
            lines.extend(f"  - {note}" for note in self.notes)
        else:
            lines.append("Everything in the dictionary was carried over.")
        return "\n".join(lines)


@dataclass(slots=True)
class _Field:
    row: int
    name: str
    instrument: str
    spec: dict[str, Any] = field(default_factory=dict)
    branching: Any = None
    calculation: Any = None


class _Notes:
    """Report lines, one per problem, each naming the row and field."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, row: int, name: str, message: str) -> None:
        self.lines.append(f"row {row}, field '{name}': {message}")


def _read_rows(text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text.removeprefix(BOM)))
    try:
        header = next(reader)
    except StopIteration:
        raise DictionaryError("The file is empty.") from None
    except csv.Error as exc:
        raise DictionaryError(f"The file is not readable CSV ({exc}).") from None
    keys = [HEADER_TO_KEY.get(h.strip().lower()) for h in header]
    missing = [k for k in ("field_name", "form_name", "field_type", "field_label") if k not in keys]
    if missing:
        raise DictionaryError(
            "This is not a REDCap data dictionary: the header lacks " + ", ".join(missing)
            + " (expected REDCap's columns, e.g. 'Variable / Field Name', 'Form Name', 'Field Type', 'Field Label')."
        )
    rows = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            row = dict.fromkeys((k for k, _ in COLUMNS), "")
            for key, cell in zip(keys, cells, strict=False):
                if key:
                    row[key] = cell
            rows.append(row)
    except csv.Error as exc:
        raise DictionaryError(f"The file is not readable CSV ({exc}).") from None
    if not rows:
        raise DictionaryError("The dictionary has no fields.")
    return rows


def _choices(text: str) -> list[dict[str, str]]:
    choices = []
    for item in text.split("|"):
        item = item.strip()
        if not item:
            continue
        code, _, label = item.partition(",")
        choices.append({"code": code.strip(), "label": label.strip() or code.strip()})
    return choices


def _bound(ctype: str, text: str) -> Any:
    """A min/max as the definition stores it, or None if it is not a plain value of the type."""
    if ctype == "integer" and _INT_RE.match(text):
        return int(text)
    if ctype == "number" and _NUMBER_RE.match(text):
        return int(text) if _INT_RE.match(text) else float(text)
    if ctype == "date":
        try:
            return date.fromisoformat(text).isoformat() if len(text) == 10 else None
        except ValueError:
            return None
    if ctype == "datetime":
        for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
            try:
                return datetime.strptime(text, pattern).strftime("%Y-%m-%d %H:%M")
            except ValueError:
                continue
    return None


def _annotation(text: str, spec: dict[str, Any], note: Any) -> None:
    """Take the tags Casebook models out of the annotation; report everything else."""
    rest = text
    units = _UNITS_RE.search(rest)
    if units:
        spec["units"] = units.group(1) if units.group(1) is not None else units.group(2)
        rest = rest[: units.start()] + rest[units.end():]
    if re.search(re.escape(NOMISSING_TAG) + r"\b", rest):
        spec["missing_codes"] = False
        rest = re.sub(re.escape(NOMISSING_TAG) + r"\b", "", rest)
    rest = rest.strip()
    if not rest:
        return
    tags = sorted(set(_TAG_RE.findall(rest)))
    if tags:
        note(f"action tags not modelled, not kept: {', '.join(tags)}")
    else:
        note("field annotation not kept")


def _field_type(row: dict[str, str], spec: dict[str, Any], note: Any) -> str | None:
    """The Casebook type of a row (filling `spec` for sliders and true/false), or None to leave it out."""
    rtype = row["field_type"].strip().lower()
    validation = row["text_validation_type_or_show_slider_number"].strip().lower()
    if rtype == "text":
        if validation.startswith("number_"):
            note(f"validation '{validation}' imported as a plain number (decimal places and comma not kept)")
            return "number"
        if validation == "signature":
            note("signature fields are not supported; field left out")
            return None
        ctype, loss = TEXT_VALIDATIONS.get(validation, ("text", f"validation '{validation}' not modelled; free text"))
        if loss:
            note(loss)
        return ctype
    if rtype in SAME_TYPES:
        return rtype
    if rtype == "truefalse":
        spec["choices"] = [{"code": "1", "label": "True"}, {"code": "0", "label": "False"}]
        return "radio"
    if rtype == "slider":
        note("slider imported as a whole number from 0 to 100 (slider labels and display not kept)")
        spec.setdefault("min", 0)
        spec.setdefault("max", 100)
        return "integer"
    note(UNSUPPORTED_TYPES.get(rtype, f"unknown field type '{rtype}'; field left out"))
    return None


def _read_field(number: int, row: dict[str, str], notes: _Notes, missing_codes: set[str]) -> _Field | None:
    name = row["field_name"].strip()
    instrument = row["form_name"].strip()
    kept = True

    def note(message: str) -> None:
        notes.add(number, name, message)

    def refuse(message: str) -> None:
        nonlocal kept
        note(message)
        kept = False

    if not NAME_RE.match(name):
        note("not a valid variable name (lower-case letters, digits, _); field left out")
        return None
    if not NAME_RE.match(instrument):
        note(f"form name '{instrument}' is not valid (lower-case letters, digits, _); field left out")
        return None
    spec: dict[str, Any] = {}
    ctype = _field_type(row, spec, note)
    if ctype is None:
        return None
    label = row["field_label"].strip() or name
    result = _Field(number, name, instrument, {"name": name})
    out = result.spec
    if row["section_header"].strip():
        out["section"] = row["section_header"].strip()
    out["label"] = label
    out["type"] = ctype
    if row["field_note"].strip():
        out["note"] = row["field_note"].strip()
    _annotation(row["field_annotation"], spec, note)
    if spec.get("units"):
        out["units"] = spec["units"]
    if row["required_field"].strip().lower() == "y":
        out["required"] = True
    if row["identifier"].strip().lower() == "y":
        out["identifier"] = True
    _bounds(ctype, row, spec, out, note)
    choices_text = row["select_choices_or_calculations"].strip()
    if ctype in ("radio", "dropdown", "checkbox"):
        choices = spec.get("choices") or _choices(choices_text)
        bad = [c["code"] for c in choices if not CHOICE_CODE_RE.match(c["code"])]
        clash = sorted({c["code"] for c in choices} & missing_codes)
        if not choices:
            refuse("no choices given; field left out")
        elif bad:
            refuse(f"choice code(s) {', '.join(repr(b) for b in bad)} not allowed (letters, digits, . - _); "
                   "field left out")
        elif clash:
            refuse(f"choice code(s) {', '.join(clash)} are also missing-data codes; field left out")
        else:
            out["choices"] = choices
    elif ctype == "calc":
        result.calculation = _logic(choices_text, "calculation", refuse)
        if result.calculation is not None:
            out["calculation"] = choices_text
    branching = row["branching_logic"].strip()
    if branching:
        result.branching = _logic(branching, "branching logic", note)
        if result.branching is not None:
            out["branching"] = branching
    if spec.get("missing_codes") is False and ctype not in ("calc", "descriptive"):
        out["missing_codes"] = False
    for key, what in (("custom_alignment", "custom alignment"), ("question_number", "survey question number")):
        if row[key].strip():
            note(f"{what} '{row[key].strip()}' not modelled, not kept")
    if row["matrix_group_name"].strip():
        ranking = " with ranking" if row["matrix_ranking"].strip().lower() == "y" else ""
        note(f"matrix group '{row['matrix_group_name'].strip()}'{ranking}: imported as a separate field "
             "(matrix layout not modelled)")
    return result if kept else None


def _logic(text: str, what: str, fail: Any) -> Any:
    try:
        return parse(text)
    except LogicError as exc:
        fail(f"{what} not understood ({exc}); {'field left out' if what == 'calculation' else 'dropped'}")
        return None


def _bounds(ctype: str, row: dict[str, str], spec: dict[str, Any], out: dict[str, Any], note: Any) -> None:
    bounds = {"min": spec.get("min"), "max": spec.get("max")}
    for key, column in (("min", "text_validation_min"), ("max", "text_validation_max")):
        text = row[column].strip()
        if not text:
            continue
        value = _bound(ctype, text) if ctype in BOUNDED_TYPES else None
        if value is None:
            note(f"{key} '{text}' is not a fixed {ctype if ctype in BOUNDED_TYPES else 'bound'}; not kept")
        else:
            bounds[key] = value
    if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
        note("min is greater than max; both dropped")
        return
    for key in ("min", "max"):
        if bounds[key] is not None:
            out[key] = bounds[key]


def _check_logic(fields: dict[str, _Field], repeatable: set[str], notes: _Notes) -> None:
    """Drop logic that names fields left out, non-checkboxes as checkboxes, or other repeating forms.

    Leaving out a calc field can break logic that used it, so this repeats until stable.
    """
    changed = True
    while changed:
        changed = False
        for f in list(fields.values()):
            for kind in ("calculation", "branching"):
                tree = getattr(f, kind)
                if tree is None:
                    continue
                problem = _logic_problem(f, tree, fields, repeatable)
                if problem is None:
                    continue
                changed = True
                if kind == "calculation":
                    notes.add(f.row, f.name, f"calculation {problem}; field left out")
                    del fields[f.name]
                    break
                notes.add(f.row, f.name, f"branching logic {problem}; dropped")
                f.branching = None
                f.spec.pop("branching", None)


def _logic_problem(f: _Field, tree: Any, fields: Mapping[str, _Field], repeatable: set[str]) -> str | None:
    for ref in sorted(referenced_fields(tree)):
        target = fields.get(ref)
        if target is None:
            return f"names [{ref}], which is not an imported field"
        if ref == f.name:
            return "refers to the field itself"
        if target.instrument != f.instrument and target.instrument in repeatable:
            return f"names [{ref}] of repeating instrument '{target.instrument}'"
    for ref, code in sorted(checkbox_refs(tree)):
        choices = [c["code"] for c in fields[ref].spec.get("choices", [])]
        if fields[ref].spec["type"] != "checkbox" or code not in choices:
            return f"uses [{ref}({code})] but {ref} has no checkbox option '{code}'"
    return None


def _label(name: str) -> str:
    """REDCap's label for a form created by a dictionary upload: words, first letters capitalised."""
    return " ".join(word.capitalize() for word in name.split("_"))


def read_dictionary(text: str, base: Study | None = None, repeatable: Iterable[str] = ()) -> ImportedDefinition:
    """Turn dictionary CSV text into definition files; raise DictionaryError if it is not one."""
    rows = _read_rows(text)
    notes = _Notes()
    missing_codes = {m.code for m in base.missing_codes} if base else set()
    first = rows[0]
    record_id_field = first["field_name"].strip() or "record_id"
    record_id_label = first["field_label"].strip() or "Record ID"
    fields: dict[str, _Field] = {}
    for number, row in enumerate(rows[1:], start=2):  # row 1 is the record ID
        imported = _read_field(number, row, notes, missing_codes)
        if imported is None:
            continue
        if imported.name in fields or imported.name == record_id_field:
            notes.add(number, imported.name, "duplicate variable name; field left out")
            continue
        fields[imported.name] = imported
    order = list(dict.fromkeys([first["form_name"].strip()] + [f.instrument for f in fields.values()]))
    repeating = set(repeatable)
    if base:
        repeating |= {i.name for i in base.instruments if i.repeatable}
    _check_logic(fields, repeating, notes)

    files: dict[str, str] = {}
    instruments: list[str] = []
    for name in order:
        members = [f.spec for f in fields.values() if f.instrument == name]
        if not any(spec["type"] != "descriptive" for spec in members):
            if members:
                notes.lines.append(f"form '{name}': no field that holds data; form left out")
            continue
        known = base.instrument(name) if base and base.has_instrument(name) else None
        doc: dict[str, Any] = {"name": name, "label": known.label if known else _label(name)}
        if name in repeating:
            doc["repeatable"] = True
        if known and known.description:
            doc["description"] = known.description
        doc["fields"] = members
        files[f"instruments/{name}.yaml"] = _dump(doc)
        instruments.append(name)
    files["study.yaml"] = _dump(_study_doc(base, record_id_field, record_id_label, instruments))
    count = sum(1 for f in fields.values() if f.instrument in instruments)
    return ImportedDefinition(files, notes.lines, len(instruments), count)


def _study_doc(base: Study | None, record_id_field: str, record_id_label: str, instruments: list[str]) -> dict:
    return {
        "id": base.id if base else "imported",
        "name": base.name if base else "Imported REDCap project",
        "protocol": base.protocol if base else "imported",
        "version": base.version if base else "1",
        "description": base.description if base else "Imported from a REDCap data dictionary.",
        "record_id_field": record_id_field,
        "record_id_label": record_id_label,
        "missing_codes": [{"code": m.code, "label": m.label} for m in base.missing_codes] if base else [],
        "instruments": instruments,
    }


def _dump(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=100_000, default_flow_style=False)


def check_definition(definition: ImportedDefinition, keep_from: Path | None = None) -> Study:
    """Load the files with the real loader (in a scratch folder); raise StudyDefinitionError if refused.

    `keep_from` is the folder the definition will be written to: its data-quality rules
    (`rules.yaml`, which a dictionary does not carry) stay, so they are checked too.
    """
    with tempfile.TemporaryDirectory(prefix="casebook-dictionary-") as scratch:
        write_definition(definition, Path(scratch))
        rules = keep_from / RULES_FILE if keep_from else None
        if rules and rules.exists():
            shutil.copyfile(rules, Path(scratch) / RULES_FILE)
        return load_study(scratch)


def write_definition(definition: ImportedDefinition, directory: Path) -> None:
    """Write the files into `directory`, replacing any definition already there."""
    instruments = directory / "instruments"
    if instruments.exists():
        shutil.rmtree(instruments)
    instruments.mkdir(parents=True)
    for relative, text in definition.files.items():
        (directory / relative).write_text(text, encoding="utf-8")


__all__ = [
    "DictionaryError",
    "ImportedDefinition",
    "StudyDefinitionError",
    "check_definition",
    "read_dictionary",
    "write_definition",
]
