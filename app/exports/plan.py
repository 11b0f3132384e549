"""The export's tables and columns, derived from the study definition and the profile.

Nothing here lists a field by hand: every column comes from a field of the definition
(its type, choices, units, identifier and free-text flags) filtered and transformed by
the profile. Each column knows how to compute its cell from a prepared record, so every
format (CSV, Stata, SPSS, Parquet, ODM) writes the same values.

A cell is `(value, code)`: a value, or a missing-data code with no value, or neither
(blank). Codes stay apart from values all the way to the writers, which encode them in
each format's own way.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from app.exports.disclosure import SUPPRESSED
from app.exports.profiles import Profile
from app.exports.source import FormRow
from app.study.definition import Field, Instrument, Study
from app.study.fieldtypes import field_type

Cell = tuple[Any, str | None]
BLANK: Cell = (None, None)

#: Stata allows 32 characters in a variable name; every format gets the same names.
MAX_NAME_LENGTH = 32
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
STATA_RESERVED = frozenset({"byte", "double", "float", "if", "in", "int", "long", "strL", "using", "with"})
INTEGER_CODE_RE = re.compile(r"^-?\d{1,9}$")
CHECKBOX_LABELS = (("0", "Unchecked"), ("1", "Checked"))
STATUS_LABELS = (("0", "Incomplete"), ("1", "Unverified"), ("2", "Complete"))
EARLIEST_DATE = "earliest_date"
SECONDS_PER_DAY = 86400


class PlanError(Exception):
    """The profile yields columns no format can hold (name too long after shortening, clash)."""


class Kind(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    DATE = "date"
    DATETIME = "datetime"

    @property
    def numeric(self) -> bool:
        return self in (Kind.INTEGER, Kind.NUMBER)


class Role(enum.StrEnum):
    KEY = "key"  # study ID (pseudonym) or record ID
    SITE = "site"
    DAY0 = "day0_source"  # which date is day 0 of the record
    REPEAT_INSTRUMENT = "repeat_instrument"  # long layout: which repeatable form a row is
    INSTANCE = "instance"
    VALUE = "value"  # a field's stored value
    CHOICE = "choice"  # one checkbox option, 0/1
    DAY = "day"  # a date as days from day 0
    SHIFTED = "shifted"  # a date moved back by the record's secret offset
    AGE = "age"  # days from the date of birth
    STATUS = "status"  # the form's status
    MISSING = "missing"  # companion: the field's missing-data code


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    label: str
    kind: Kind
    role: Role
    instrument: str | None = None
    field: str | None = None
    #: Wide layout of a repeatable form: the instance this column reads (name suffix _1, _2...).
    instance: int | None = None
    choice: str | None = None
    value_labels: tuple[tuple[str, str], ...] = ()
    units: str | None = None
    derivation: str = ""
    #: The missing-data codes a cell of this column may carry instead of a value.
    codes: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return f"{self.instrument}.{self.field}" if self.field else ""

    def label_of(self, value: Any) -> str | None:
        text = str(value)
        for code, label in self.value_labels:
            if code == text:
                return label
        return None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    label: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: A repeatable instrument's own table (one row per instance); None for the main table.
    instrument: str | None = None
    #: Long layout: one row per record, then one per instance of each repeatable form.
    long: bool = False


@dataclass(slots=True)
class RecordView:
    """A record ready to be written: pseudonyms, day 0, date of birth and suppression resolved."""

    key: str
    site: str | None
    forms: dict[tuple[str, int], FormRow]
    day0: datetime | None = None
    day0_source: str | None = None
    birth: date | None = None
    birth_code: str | None = None
    shift: int = 0
    suppressed: bool = False


def fit_name(base: str, suffix: str = "") -> str:
    """`base + suffix` within Stata's 32 characters: a long base keeps its start and gains a
    short hash of itself (so shortened names stay distinct), and the suffix stays readable."""
    if len(base) + len(suffix) <= MAX_NAME_LENGTH:
        return base + suffix
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:4]
    return f"{base[:MAX_NAME_LENGTH - len(suffix) - 5]}_{digest}{suffix}"


def parse_moment(value: Any) -> datetime | None:
    """A stored date ('YYYY-MM-DD') or date-time ('YYYY-MM-DD HH:MM') as a datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _days(later: datetime, earlier: datetime, whole: bool) -> int | float:
    delta = later - earlier
    return delta.days if whole else delta.total_seconds() / SECONDS_PER_DAY


#: Computes one column's cell from (prepared record, the row's form instance, whether it is the record's own row).
CellWriter = Callable[["RecordView", FormRow | None, bool], Cell]
#: The same for a whole row.
RowWriter = Callable[["RecordView", FormRow | None, bool], list[Cell]]
#: A form column's cell from its form (the row, its values, its missing-data codes) and the record.
_FormCell = Callable[[FormRow, dict[str, Any], dict[str, str], "RecordView"], Cell]


@dataclass(slots=True)
class _Part:
    """Consecutive columns of a table that read the same form instance (key None: one record column)."""

    key: tuple[Any, ...] | None
    find: Callable[[RecordView, FormRow | None, bool], FormRow | None] | None
    cells: list[CellWriter] = dataclasses.field(default_factory=list)
    form_cells: list[_FormCell] = dataclasses.field(default_factory=list)
    suppressible: bool = False


class Plan:
    """The tables of one export of one profile (wide repeat columns sized by the data)."""

    def __init__(self, study: Study, profile: Profile, repeat_counts: dict[str, int] | None = None) -> None:
        self.study = study
        self.profile = profile
        self.instruments: tuple[Instrument, ...] = tuple(study.instrument(n) for n in profile.instruments)
        self._repeatable = frozenset(i.name for i in study.instruments if i.repeatable)
        rule = profile.disclosure if profile.disclosure and profile.disclosure.action == "suppress" else None
        #: Fields (and the site) whose cells the disclosure check may replace by SUPP.
        self.suppressible = rule.fields if rule else frozenset()
        self.suppress_site = rule is not None and rule.includes_site and profile.site != "drop"
        self.record_columns = self._record_columns()
        self.instrument_columns = {inst.name: self._instrument_columns(inst) for inst in self.instruments}
        self.tables = self._tables(repeat_counts or {})
        self._check_names()
        self._compiled: dict[Column, CellWriter] = {}
        self._compiled_tables: dict[str, RowWriter] = {}

    # -- columns -------------------------------------------------------------------------------

    def exported(self, f: Field) -> bool:
        p = self.profile
        if f.name in p.exclude_fields:
            return False
        if f.identifier and p.identifiers == "drop":
            return False
        return not (f.is_free_text and p.free_text == "drop" and f.name not in p.keep_free_text)

    @property
    def date_fields(self) -> tuple[Field, ...]:
        """Exported date and date-time fields: candidates for day 0 when no anchor has a value."""
        return tuple(f for inst in self.instruments for f in inst.data_fields
                     if f.type in ("date", "datetime") and self.exported(f))

    def _record_columns(self) -> tuple[Column, ...]:
        p = self.profile
        if p.record_id == "pseudonym":
            key = Column("study_id", "Study ID (pseudonymous)", Kind.STRING, Role.KEY, derivation=(
                "HMAC-SHA-256 of the record ID under the server's secret pseudonym key: the same record has "
                "the same study ID in every export; it cannot be traced back without the key."))
        else:
            key = Column(self.study.record_id_field, self.study.record_id_label, Kind.STRING, Role.KEY,
                         derivation="The record ID (site code and number).")
        columns = [key]
        site_codes = (SUPPRESSED.code,) if self.suppress_site else ()
        if p.site == "pseudonym":
            columns.append(Column("site", "Site (pseudonym)", Kind.STRING, Role.SITE, codes=site_codes,
                                  derivation="HMAC-SHA-256 of the site code under the secret pseudonym key."))
        elif p.site == "code":
            columns.append(Column("site", "Site", Kind.STRING, Role.SITE, codes=site_codes,
                                  derivation="The site code."))
        if self.suppress_site:
            # field None: the companion of the site, which is not a field of the study.
            columns.append(Column("site_miss", "Site: missing-data code", Kind.STRING, Role.MISSING,
                                  value_labels=((SUPPRESSED.code, SUPPRESSED.label),),
                                  derivation="SUPP when the site is suppressed by the disclosure check."))
        if p.dates.mode == "relative":
            anchors = ", then ".join(p.dates.anchor)
            columns.append(Column("day0_source", "Day 0 is the earliest date of this field", Kind.STRING, Role.DAY0,
                                  derivation=(f"Day 0 is the earliest value of the first of {anchors} that the "
                                              f"record has; '{EARLIEST_DATE}' when it has none of them, meaning the "
                                              "record's earliest exported date.")))
        return tuple(columns)

    def _instrument_columns(self, inst: Instrument) -> tuple[Column, ...]:
        columns: list[Column] = []
        for f in inst.data_fields:
            if self.exported(f):
                columns += self._field_columns(f)
            elif f.name == self.profile.dates.age_from and self._has_companion(f):
                # The date of birth never leaves, but why an age is blank does.
                columns.append(self._companion(f))
        columns.append(Column(fit_name(inst.name, "_complete"), f"{inst.label}: form status", Kind.INTEGER,
                              Role.STATUS, instrument=inst.name, value_labels=STATUS_LABELS,
                              derivation="0 Incomplete, 1 Unverified, 2 Complete; blank: never saved."))
        return tuple(columns)

    def _codes(self, f: Field) -> tuple[str, ...]:
        """The codes a cell of `f` may carry: the study's (if the field takes them) and SUPP."""
        takes_codes = f.allow_missing_codes and field_type(f).is_input
        codes = tuple(m.code for m in self.study.missing_codes) if takes_codes else ()
        return codes + ((SUPPRESSED.code,) if f.name in self.suppressible else ())

    def _has_companion(self, f: Field) -> bool:
        return bool(self._codes(f))

    def _companion(self, f: Field) -> Column:
        labels = {m.code: m.label for m in (*self.study.missing_codes, SUPPRESSED)}
        return Column(fit_name(f.name, "_miss"), f"{f.label}: missing-data code", Kind.STRING, Role.MISSING,
                      instrument=f.instrument, field=f.name, value_labels=tuple((c, labels[c]) for c in self._codes(f)),
                      derivation=f"The missing-data code of {f.name}; blank when it has a value or is blank.")

    def _field_columns(self, f: Field) -> list[Column]:
        base = {"instrument": f.instrument, "field": f.name, "units": f.units, "codes": self._codes(f)}
        mode = self.profile.dates.mode
        columns: list[Column] = []
        if f.type == "checkbox":
            for choice in f.choices:
                columns.append(Column(fit_name(f.name, f"___{choice.code}"), f"{f.label}: {choice.label}",
                                      Kind.INTEGER, Role.CHOICE, choice=choice.code, value_labels=CHECKBOX_LABELS,
                                      derivation=f"1 if '{choice.label}' is ticked, 0 if not.", **base))
        elif f.type in ("date", "datetime"):
            whole = f.type == "date"
            if mode == "relative":
                columns.append(Column(fit_name(f.name, "_day"), f"{f.label} (day)",
                                      Kind.INTEGER if whole else Kind.NUMBER, Role.DAY, derivation=(
                                          f"Days from day 0 (see day0_source) to {f.name}"
                                          + ("." if whole else ", the time of day as a fraction of a day.")),
                                      **{**base, "units": "days"}))
            else:
                shifted = mode == "shift"
                columns.append(Column(f.name, f.label, Kind.DATE if whole else Kind.DATETIME,
                                      Role.SHIFTED if shifted else Role.VALUE, derivation=(
                                          "Moved back by the record's secret offset (1-364 days, the same for every "
                                          "date of the record), so intervals are exact." if shifted else ""), **base))
            age_from = self.profile.dates.age_from
            if age_from and f.name != age_from:
                columns.append(Column(fit_name(f.name, "_age"), f"{f.label} (age in days)",
                                      Kind.INTEGER if whole else Kind.NUMBER, Role.AGE, derivation=(
                                          f"Days from the date of birth ({age_from}, never exported) to {f.name}."),
                                      **{**base, "units": "days", "codes": self._age_codes(f)}))
        else:
            columns.append(self._value_column(f, base))
        if self._has_companion(f):
            columns.append(self._companion(f))
        return columns

    def _age_codes(self, f: Field) -> tuple[str, ...]:
        """An age is coded with the event date's code, else with the date of birth's."""
        birth = self.study.field(self.profile.dates.age_from or "")
        return tuple(dict.fromkeys(self._codes(f) + self._codes(birth)))

    def _value_column(self, f: Field, base: dict[str, Any]) -> Column:
        labels = tuple((c.code, c.label) for c in f.choices)
        if f.choices:
            numeric = all(INTEGER_CODE_RE.match(code) for code, _ in labels)
            kind = Kind.INTEGER if numeric else Kind.STRING
        else:
            kind = {"integer": Kind.INTEGER, "number": Kind.NUMBER, "calc": Kind.NUMBER}.get(f.type, Kind.STRING)
        derivation = f"Calculated: {' '.join(f.calculation.split())}" if f.calculation else ""
        return Column(f.name, f.label, kind, Role.VALUE, value_labels=labels, derivation=derivation, **base)

    # -- tables --------------------------------------------------------------------------------

    def _tables(self, repeat_counts: dict[str, int]) -> tuple[Table, ...]:
        p = self.profile
        singles = [i for i in self.instruments if not i.repeatable]
        repeats = [i for i in self.instruments if i.repeatable]
        key = self.record_columns[0]
        if p.layout == "long":
            markers = (
                Column("repeat_instrument", "Repeatable form of this row (blank: the record's single forms)",
                       Kind.STRING, Role.REPEAT_INSTRUMENT, value_labels=tuple((i.name, i.label) for i in repeats)),
                Column("repeat_instance", "Instance of the repeatable form", Kind.INTEGER, Role.INSTANCE),
            )
            columns = (key, *markers, *self.record_columns[1:],
                       *(c for inst in self.instruments for c in self.instrument_columns[inst.name]))
            # No primary key: the record's own row has no repeat instrument or instance.
            return (Table(p.main_table, p.label, columns, (), long=True),)
        main = [*self.record_columns, *(c for inst in singles for c in self.instrument_columns[inst.name])]
        if p.repeatable == "columns":
            for inst in repeats:
                for number in range(1, repeat_counts.get(inst.name, 0) + 1):
                    main += [dataclasses.replace(c, name=fit_name(c.name, f"_{number}"), label=f"{c.label} [{number}]",
                                                 instance=number) for c in self.instrument_columns[inst.name]]
            return (Table(p.main_table, p.label, tuple(main), (key.name,)),)
        tables = [Table(p.main_table, p.label, tuple(main), (key.name,))]
        for inst in repeats:
            instance = Column("instance", f"{inst.label}: instance", Kind.INTEGER, Role.INSTANCE)
            tables.append(Table(inst.name, inst.label, (key, instance, *self.instrument_columns[inst.name]),
                                (key.name, "instance"), instrument=inst.name))
        return tuple(tables)

    def _check_names(self) -> None:
        for table in self.tables:
            seen: set[str] = set()
            for column in table.columns:
                problem = None
                if column.name in seen:
                    problem = "appears twice"
                elif not NAME_RE.match(column.name) or len(column.name) > MAX_NAME_LENGTH:
                    problem = "is not a valid variable name for Stata and SPSS"
                elif column.name in STATA_RESERVED:
                    problem = "is a reserved word in Stata"
                if problem:
                    raise PlanError(f"{self.profile.name}: column '{column.name}' of table '{table.name}' {problem}")
                seen.add(column.name)

    def main_table(self) -> Table:
        return self.tables[0]

    # -- cells ---------------------------------------------------------------------------------

    def rows(self, table: Table, rec: RecordView) -> Iterator[list[Cell]]:
        """The table's rows for one record."""
        row = self._table_row(table)
        if table.instrument is not None:
            for form in _instances(rec, table.instrument):
                yield row(rec, form, True)
            return
        yield row(rec, None, True)
        if table.long:
            for inst in self.instruments:
                if inst.repeatable:
                    for form in _instances(rec, inst.name):
                        yield row(rec, form, False)

    def cell(self, column: Column, rec: RecordView, row_form: FormRow | None, *, base_row: bool = True) -> Cell:
        """One cell; `row_form` is the form instance the row stands for (repeat tables, long rows)."""
        return self._cell_of(column)(rec, row_form, base_row)

    def _table_row(self, table: Table) -> RowWriter:
        row = self._compiled_tables.get(table.name)
        if row is None:
            row = self._compiled_tables[table.name] = self._compile_row(table)
        return row

    def _compile_row(self, table: Table) -> RowWriter:
        """The function computing a whole row of `table`. Consecutive columns that read the same
        form instance are one part: the form is found once per row, not once per cell, and a
        missing form is a run of blanks. A suppressed record's parts go cell by cell."""
        parts: list[_Part] = []
        for column in table.columns:
            key = self._finder_key(column) if self._reads_form(column) else None
            if key is None or not parts or parts[-1].key != key:
                parts.append(_Part(key, self._form_finder(column) if key is not None else None))
            part = parts[-1]
            part.cells.append(self._cell_of(column))
            if key is not None:
                part.form_cells.append(self._form_cell(column))
                part.suppressible = part.suppressible or column.field in self.suppressible
        compiled = [(p.find, p.cells, p.form_cells, (BLANK,) * len(p.cells), p.suppressible) for p in parts]

        def row(rec: RecordView, row_form: FormRow | None, base_row: bool) -> list[Cell]:
            out: list[Cell] = []
            for find, cells, form_cells, blanks, suppressible in compiled:
                if find is None:
                    out.append(cells[0](rec, row_form, base_row))
                    continue
                form = find(rec, row_form, base_row)
                if form is None:
                    out += blanks
                elif suppressible and rec.suppressed:
                    out += [cell(rec, row_form, base_row) for cell in cells]
                else:
                    data, missing = form.data, form.missing
                    out += [cell(form, data, missing, rec) for cell in form_cells]
            return out

        return row

    @staticmethod
    def _reads_form(column: Column) -> bool:
        """False for the record's own columns (key, site, day 0, markers, the site's companion)."""
        return column.role not in _RECORD_CELLS and not (column.role == Role.MISSING and column.field is None)

    def _form_cell(self, column: Column) -> _FormCell:
        """A form column's cell from its (found, unsuppressed) form: one call per cell, shared by
        the whole-row writer and the cell-by-cell one."""
        name = column.field
        if column.role == Role.STATUS:
            return lambda form, data, missing, rec: (form.status, None)
        if column.role == Role.MISSING:
            return lambda form, data, missing, rec: (missing.get(name), None) if missing else BLANK
        field_cell = _FIELD_CELLS[column.role]
        convert = _CONVERTERS.get(column.kind) if column.role == Role.VALUE else None

        def cell(form: FormRow, data: dict[str, Any], missing: dict[str, str], rec: RecordView) -> Cell:
            if missing:
                code = missing.get(name)
                if code:
                    return (None, code)
            value = data.get(name)
            if convert is not None:
                return BLANK if value is None else (convert(value), None)
            return field_cell(self, column, rec, value)

        return cell

    def _cell_of(self, column: Column) -> CellWriter:
        cell = self._compiled.get(column)
        if cell is None:
            cell = self._compiled[column] = self._compile(column)
        return cell

    def _compile(self, column: Column) -> CellWriter:
        """The function computing `column`'s cell, with every choice that depends only on the column
        (its role, which form it reads, suppression) made once: an export computes millions of cells."""
        role = column.role
        if role in _RECORD_CELLS:
            record_cell = _RECORD_CELLS[role]
            if role in (Role.SITE, Role.DAY0):  # the record's own row only, not its long instance rows
                return lambda rec, form, base_row: record_cell(self, column, rec, form) if base_row else BLANK
            return lambda rec, form, base_row: record_cell(self, column, rec, form)
        if role == Role.MISSING and column.field is None:  # the record's suppression marker
            return lambda rec, form, base_row: (SUPPRESSED.code, None) if rec.suppressed and base_row else BLANK
        find = self._form_finder(column)
        form_cell = self._form_cell(column)
        suppressible = column.field in self.suppressible
        suppressed: Cell = (SUPPRESSED.code, None) if role == Role.MISSING else (None, SUPPRESSED.code)

        def cell(rec: RecordView, row_form: FormRow | None, base_row: bool) -> Cell:
            form = find(rec, row_form, base_row)
            if form is None:
                return BLANK
            if suppressible and rec.suppressed:
                return suppressed
            return form_cell(form, form.data, form.missing, rec)

        return cell

    def _finder_key(self, column: Column) -> tuple[Any, ...]:
        """Columns with equal keys read the same form instance of a row (see `_form_finder`)."""
        if column.instance is not None:
            return ("fixed", column.instrument, column.instance)
        if column.instrument in self._repeatable:
            return ("row", column.instrument)
        return ("single", column.instrument)

    def _form_finder(self, column: Column) -> Callable[[RecordView, FormRow | None, bool], FormRow | None]:
        """Which form instance a column reads: a fixed instance (wide `_1`, `_2` columns), the row's
        own instance (repeat tables, long rows), or the record's single form (its own row only)."""
        instrument = column.instrument
        if column.instance is not None:
            key = (instrument, column.instance)
            return lambda rec, row_form, base_row: rec.forms.get(key)
        if instrument in self._repeatable:
            return lambda rec, row_form, base_row: (
                row_form if row_form is not None and row_form.instrument == instrument else None)
        single = (instrument, 1)
        return lambda rec, row_form, base_row: rec.forms.get(single) if base_row else None


def _instances(rec: RecordView, instrument: str) -> list[FormRow]:
    return sorted((f for (name, _), f in rec.forms.items() if name == instrument), key=lambda f: f.instance)


def _key_cell(plan: Plan, column: Column, rec: RecordView, form: FormRow | None) -> Cell:
    return (rec.key, None)


def _site_cell(plan: Plan, column: Column, rec: RecordView, form: FormRow | None) -> Cell:
    return (None, SUPPRESSED.code) if rec.suppressed and plan.suppress_site else (rec.site, None)


def _day0_cell(plan: Plan, column: Column, rec: RecordView, form: FormRow | None) -> Cell:
    return (rec.day0_source, None)


def _repeat_instrument_cell(plan: Plan, column: Column, rec: RecordView, form: FormRow | None) -> Cell:
    return (form.instrument if form else None, None)


def _instance_cell(plan: Plan, column: Column, rec: RecordView, form: FormRow | None) -> Cell:
    return (form.instance if form else None, None)


def _text(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


#: A stored value as a cell's value, by column kind (dates: `_value_cell`).
_CONVERTERS: dict[Kind, Callable[[Any], Any]] = {Kind.INTEGER: int, Kind.NUMBER: float, Kind.STRING: _text}


def _value_cell(plan: Plan, column: Column, rec: RecordView, value: Any) -> Cell:
    if value is None:
        return BLANK
    convert = _CONVERTERS.get(column.kind)
    if convert is not None:
        return (convert(value), None)
    moment = parse_moment(value)
    return (None if moment is None else (moment.date() if column.kind == Kind.DATE else moment), None)


def _choice_cell(plan: Plan, column: Column, rec: RecordView, value: Any) -> Cell:
    return (1 if isinstance(value, list) and column.choice in value else 0, None)


def _day_cell(plan: Plan, column: Column, rec: RecordView, value: Any) -> Cell:
    moment = parse_moment(value)
    if moment is None or rec.day0 is None:
        return BLANK
    return (_days(moment, rec.day0, column.kind == Kind.INTEGER), None)


def _shifted_cell(plan: Plan, column: Column, rec: RecordView, value: Any) -> Cell:
    moment = parse_moment(value)
    if moment is None:
        return BLANK
    moved = moment - timedelta(days=rec.shift)
    return (moved.date() if column.kind == Kind.DATE else moved, None)


def _age_cell(plan: Plan, column: Column, rec: RecordView, value: Any) -> Cell:
    moment = parse_moment(value)
    if moment is None:
        return BLANK
    if rec.birth is None:
        return (None, rec.birth_code)
    return (_days(moment, datetime.combine(rec.birth, time()), column.kind == Kind.INTEGER), None)


CellFn = Callable[[Plan, Column, RecordView, Any], Cell]
_RECORD_CELLS: dict[Role, Callable[[Plan, Column, RecordView, FormRow | None], Cell]] = {
    Role.KEY: _key_cell,
    Role.SITE: _site_cell,
    Role.DAY0: _day0_cell,
    Role.REPEAT_INSTRUMENT: _repeat_instrument_cell,
    Role.INSTANCE: _instance_cell,
}
_FIELD_CELLS: dict[Role, CellFn] = {
    Role.VALUE: _value_cell,
    Role.CHOICE: _choice_cell,
    Role.DAY: _day_cell,
    Role.SHIFTED: _shifted_cell,
    Role.AGE: _age_cell,
}
