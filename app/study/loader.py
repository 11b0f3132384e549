"""Load and completely validate the study definition from the YAML files in `forms/`.

Every problem is collected and reported together, each naming the file, the line and
the field, so a data manager fixes a definition in one pass; the app refuses to start
with a broken definition rather than show forms that cannot be trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from app.logic import LogicError, checkbox_refs, parse, referenced_fields
from app.study.definition import Choice, Field, Instrument, MissingCode, Rule, Study
from app.study.fieldtypes import FIELD_TYPES, YESNO_CHOICES, FieldValueError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
CHOICE_CODE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")
MISSING_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$")

STUDY_KEYS = {"id", "name", "description", "protocol", "version", "record_id_field",
              "record_id_label", "missing_codes", "instruments"}
INSTRUMENT_KEYS = {"name", "label", "repeatable", "description", "fields"}
FIELD_KEYS = {"name", "label", "type", "section", "note", "units", "choices", "required",
              "identifier", "min", "max", "branching", "calculation", "missing_codes"}
LINE_KEY = "__line__"


class StudyDefinitionError(Exception):
    """The definition files are broken; `problems` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The study definition is invalid:\n  - " + "\n  - ".join(problems))


#: libyaml's parser when PyYAML was built with it (the wheels are): about ten times faster
#: than the pure-Python one, which is most of an app's start-up time.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(SafeLoader):  # type: ignore[misc, valid-type]
    """A safe YAML loader that remembers the line of every mapping, for error messages."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE_KEY] = node.start_mark.line + 1
        return mapping


class _Problems:
    """Collects problems with a location prefix: 'forms/x.yaml line 12, field 'y': ...'."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[str] = []
        #: Fields declared but refused; logic naming them is not reported a second time.
        self.broken_fields: set[str] = set()

    def add(self, path: Path, line: int | None, where: str, message: str) -> None:
        try:
            shown = path.relative_to(self.root.parent)
        except ValueError:
            shown = path
        location = f"{shown}" + (f" line {line}" if line else "")
        self.items.append(f"{location}, {where}: {message}" if where else f"{location}: {message}")


def _read_yaml(path: Path, problems: _Problems) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(path, None, "", "file not found")
        return None
    except UnicodeDecodeError:
        problems.add(path, None, "", "not UTF-8 text")
        return None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problems.add(path, line, "", f"not valid YAML ({getattr(exc, 'problem', exc)})")
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).strip() or None


def load_study(directory: str | Path) -> Study:
    """Read `study.yaml` and the instrument files it names; raise StudyDefinitionError on any problem."""
    root = Path(directory)
    problems = _Problems(root)
    study_path = root / "study.yaml"
    raw = _read_yaml(study_path, problems)
    if not isinstance(raw, dict):
        if not problems.items:
            problems.add(study_path, None, "", "must be a mapping with 'id', 'name' and 'instruments'")
        raise StudyDefinitionError(problems.items)
    digest = hashlib.sha256(study_path.read_bytes())

    for key in sorted(set(raw) - STUDY_KEYS - {LINE_KEY}):
        expected = ", ".join(sorted(STUDY_KEYS))
        problems.add(study_path, raw[LINE_KEY], f"key '{key}'", f"unknown key (expected one of {expected})")
    for key in ("id", "name", "instruments"):
        if not raw.get(key):
            problems.add(study_path, raw[LINE_KEY], f"key '{key}'", "is required")

    missing_codes = _load_missing_codes(raw.get("missing_codes") or [], study_path, problems)

    instruments: list[Instrument] = []
    seen_instruments: set[str] = set()
    for name in raw.get("instruments") or []:
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.add(study_path, raw[LINE_KEY], "instruments", f"{name!r} is not a valid instrument name")
            continue
        if name in seen_instruments:
            problems.add(study_path, raw[LINE_KEY], f"instrument '{name}'", "listed twice")
            continue
        seen_instruments.add(name)
        path = root / "instruments" / f"{name}.yaml"
        data = _read_yaml(path, problems)
        if data is None:
            continue
        digest.update(path.read_bytes())
        instrument = _load_instrument(name, data, path, missing_codes, problems)
        if instrument is not None:
            instruments.append(instrument)

    fields = _check_unique_fields(instruments, root, problems)
    record_id_field = str(raw.get("record_id_field") or "record_id")
    if record_id_field in fields:
        problems.add(study_path, raw[LINE_KEY], "record_id_field", f"'{record_id_field}' is also a field name")
    _check_logic(instruments, fields, root, problems)
    rules = _load_rules(root / "rules.yaml", instruments, fields, problems, digest)

    if problems.items:
        raise StudyDefinitionError(problems.items)
    return Study(
        id=str(raw["id"]),
        name=str(raw["name"]),
        description=_text(raw.get("description")) or "",
        protocol=_text(raw.get("protocol")) or str(raw["id"]),
        version=str(raw.get("version") or "1"),
        digest=digest.hexdigest(),
        record_id_field=record_id_field,
        record_id_label=_text(raw.get("record_id_label")) or "Record ID",
        missing_codes=tuple(missing_codes),
        instruments=tuple(instruments),
        rules=tuple(rules),
        _fields=MappingProxyType(fields),
    )


def _load_missing_codes(items: Any, path: Path, problems: _Problems) -> list[MissingCode]:
    codes: list[MissingCode] = []
    if not isinstance(items, list):
        problems.add(path, None, "missing_codes", "must be a list of {code, label}")
        return codes
    for item in items:
        line = item.get(LINE_KEY) if isinstance(item, dict) else None
        if not isinstance(item, dict) or not item.get("code") or not item.get("label"):
            problems.add(path, line, "missing_codes", f"{item!r} needs a code and a label")
            continue
        code = str(item["code"])
        if not MISSING_CODE_RE.match(code):
            problems.add(path, line, f"missing code '{code}'", "must be upper-case letters, digits or _ (e.g. NR)")
        elif any(m.code == code for m in codes):
            problems.add(path, line, f"missing code '{code}'", "listed twice")
        else:
            codes.append(MissingCode(code, str(item["label"])))
    return codes


def _load_instrument(
    name: str, data: Any, path: Path, missing_codes: list[MissingCode], problems: _Problems
) -> Instrument | None:
    if not isinstance(data, dict):
        problems.add(path, None, "", "must be a mapping with 'name', 'label' and 'fields'")
        return None
    line = data[LINE_KEY]
    for key in sorted(set(data) - INSTRUMENT_KEYS - {LINE_KEY}):
        expected = ", ".join(sorted(INSTRUMENT_KEYS))
        problems.add(path, line, f"key '{key}'", f"unknown key (expected one of {expected})")
    if data.get("name") != name:
        problems.add(path, line, "name", f"must be '{name}', the file's name")
    if not data.get("label"):
        problems.add(path, line, "label", "is required")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        problems.add(path, line, "fields", "must be a non-empty list")
        return None
    fields = [f for f in (_load_field(name, item, path, missing_codes, problems) for item in raw_fields) if f]
    if not any(f.stores_value for f in fields):
        problems.add(path, line, "fields", "an instrument needs at least one field that holds data")
    return Instrument(
        name=name,
        label=str(data.get("label") or name),
        repeatable=bool(data.get("repeatable", False)),
        fields=tuple(fields),
        description=_text(data.get("description")),
    )


def _load_field(
    instrument: str, item: Any, path: Path, missing_codes: list[MissingCode], problems: _Problems
) -> Field | None:
    if not isinstance(item, dict):
        problems.add(path, None, "fields", f"{item!r} is not a field mapping")
        return None
    line = item[LINE_KEY]
    name = str(item.get("name") or "")
    where = f"field '{name}'" if name else "field"
    before = len(problems.items)

    def bad(message: str) -> None:
        problems.add(path, line, where, message)

    if not NAME_RE.match(name):
        bad("needs a name of lower-case letters, digits and _ starting with a letter")
    for key in sorted(set(item) - FIELD_KEYS - {LINE_KEY}):
        bad(f"unknown key '{key}' (expected one of {', '.join(sorted(FIELD_KEYS))})")
    ftype = str(item.get("type") or "")
    if ftype not in FIELD_TYPES:
        bad(f"unknown type '{ftype}' (expected one of {', '.join(FIELD_TYPES)})")
        problems.broken_fields.add(name)
        return None
    kind = FIELD_TYPES[ftype]
    if not item.get("label"):
        bad("needs a label")

    choices = _load_choices(ftype, item.get("choices"), bad)
    taken = {m.code for m in missing_codes} & {c.code for c in choices}
    if taken:
        bad(f"choice code(s) {', '.join(sorted(taken))} clash with the study's missing-data codes")

    calculation = _text(item.get("calculation"))
    if ftype == "calc" and not calculation:
        bad("a calc field needs a calculation")
    if ftype != "calc" and calculation:
        bad("only calc fields take a calculation")

    field = Field(
        name=name,
        label=str(item.get("label") or name),
        type=ftype,
        instrument=instrument,
        section=_text(item.get("section")),
        note=_text(item.get("note")),
        units=_text(item.get("units")),
        choices=choices,
        required=bool(item.get("required", False)),
        identifier=bool(item.get("identifier", False)),
        branching=_text(item.get("branching")),
        calculation=calculation,
        allow_missing_codes=bool(item.get("missing_codes", True)) and kind.is_input,
        line=line,
    )
    bounds: dict[str, Any] = {}
    for key in ("min", "max"):
        if item.get(key) is not None:
            try:
                bounds[key] = kind.parse_bound(field, item[key])
            except FieldValueError as exc:
                bad(f"{key}: {exc}")
    if bounds.get("min") is not None and bounds.get("max") is not None and bounds["min"] > bounds["max"]:
        bad("min is greater than max")
    trees: dict[str, Any] = {}
    for key, text in (("branching", field.branching), ("calculation", field.calculation)):
        if text:
            try:
                trees[key] = parse(text)
            except LogicError as exc:
                bad(f"{key}: {exc}")
    if len(problems.items) > before:
        problems.broken_fields.add(name)
        return None
    return dataclasses.replace(
        field,
        min=bounds.get("min"),
        max=bounds.get("max"),
        branching_tree=trees.get("branching"),
        calculation_tree=trees.get("calculation"),
    )


def _load_choices(ftype: str, raw: Any, bad: Any) -> tuple[Choice, ...]:
    if ftype == "yesno":
        if raw:
            bad("a yesno field has fixed choices (1 Yes, 0 No); remove 'choices'")
        return tuple(Choice(code, label) for code, label in YESNO_CHOICES)
    if not FIELD_TYPES[ftype].has_choices:
        if raw:
            bad(f"a {ftype} field takes no choices")
        return ()
    if not isinstance(raw, list) or not raw:
        bad(f"a {ftype} field needs a list of choices, each {{code, label}}")
        return ()
    choices: list[Choice] = []
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("code") is None or not entry.get("label"):
            bad(f"choice {entry!r} needs a code and a label")
            continue
        code = str(entry["code"])
        if not CHOICE_CODE_RE.match(code):
            bad(f"choice code '{code}' may hold only letters, digits, '.', '-' and '_'")
        elif any(c.code == code for c in choices):
            bad(f"choice code '{code}' is used twice")
        else:
            choices.append(Choice(code, str(entry["label"])))
    return tuple(choices)


def _check_unique_fields(instruments: list[Instrument], root: Path, problems: _Problems) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for instrument in instruments:
        for field in instrument.fields:
            if field.name in fields:
                first = fields[field.name]
                problems.add(
                    root / "instruments" / f"{instrument.name}.yaml", field.line, f"field '{field.name}'",
                    f"duplicate variable name (already in instrument '{first.instrument}')",
                )
            else:
                fields[field.name] = field
    return fields


def _check_refs(
    key: str, tree: Any, instrument: str, fields: dict[str, Field], repeatable: set[str],
    report: Any, self_name: str | None = None,
) -> None:
    """Every field that logic names must exist, be reachable, and be a checkbox where (code) is used."""
    for ref in sorted(referenced_fields(tree)):
        target = fields.get(ref)
        if target is None:
            report(f"{key} names [{ref}], which is not a field", ref)
        elif target.instrument != instrument and target.instrument in repeatable:
            report(
                f"{key} names [{ref}] of repeatable instrument '{target.instrument}'; "
                "logic can only use fields of its own instance or of non-repeatable instruments", None,
            )
        elif ref == self_name:
            report(f"{key} refers to the field itself", None)
    for ref, code in sorted(checkbox_refs(tree)):
        target = fields.get(ref)
        if target is None:
            continue
        if target.type != "checkbox":
            report(f"{key} uses [{ref}({code})] but {ref} is not a checkbox", None)
        elif code not in target.choice_codes:
            report(f"{key} uses [{ref}({code})] but {ref} has no choice '{code}'", None)


def _check_logic(instruments: list[Instrument], fields: dict[str, Field], root: Path, problems: _Problems) -> None:
    repeatable = {inst.name for inst in instruments if inst.repeatable}
    for instrument in instruments:
        path = root / "instruments" / f"{instrument.name}.yaml"
        for field in instrument.fields:
            for key, tree in (("branching", field.branching_tree), ("calculation", field.calculation_tree)):
                if tree is None:
                    continue

                def report(message: str, missing_ref: str | None, field: Field = field, path: Path = path) -> None:
                    if missing_ref is None or missing_ref not in problems.broken_fields:
                        problems.add(path, field.line, f"field '{field.name}'", message)

                _check_refs(key, tree, instrument.name, fields, repeatable, report, field.name)


RULE_KEYS = {"id", "label", "field", "logic"}


def _load_rules(
    path: Path, instruments: list[Instrument], fields: dict[str, Field], problems: _Problems, digest: Any
) -> list[Rule]:
    """Data-quality rules from `rules.yaml` (optional file): same logic language as branching."""
    if not path.exists():
        return []
    raw = _read_yaml(path, problems)
    if raw is None:
        return []
    digest.update(path.read_bytes())
    items = raw.get("rules") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        problems.add(path, None, "rules", "must be a list of {id, label, field, logic}")
        return []
    repeatable = {inst.name for inst in instruments if inst.repeatable}
    rules: list[Rule] = []
    for item in items:
        line = item.get(LINE_KEY) if isinstance(item, dict) else None
        rule_id = str(item.get("id") or "") if isinstance(item, dict) else ""
        where = f"rule '{rule_id}'" if rule_id else "rule"
        before = len(problems.items)

        def report(message: str, missing_ref: str | None, line: int | None = line, where: str = where) -> None:
            problems.add(path, line, where, message)

        if not isinstance(item, dict):
            problems.add(path, None, "rules", f"{item!r} is not a rule mapping")
            continue
        for key in sorted(set(item) - RULE_KEYS - {LINE_KEY}):
            report(f"unknown key '{key}' (expected one of {', '.join(sorted(RULE_KEYS))})", None)
        if not NAME_RE.match(rule_id):
            report("needs an id of lower-case letters, digits and _", None)
        elif any(r.id == rule_id for r in rules):
            report("id used twice", None)
        if not item.get("label"):
            report("needs a label", None)
        target = fields.get(str(item.get("field") or ""))
        if target is None:
            report(f"field '{item.get('field')}' is not a field of the study", None)
        tree = None
        try:
            tree = parse(str(item.get("logic") or ""))
        except LogicError as exc:
            report(f"logic: {exc}", None)
        if tree is not None and target is not None:
            _check_refs("logic", tree, target.instrument, fields, repeatable, report)
        if len(problems.items) == before and tree is not None and target is not None:
            rules.append(Rule(rule_id, str(item["label"]), target.name, str(item["logic"]), tree))
    return rules
