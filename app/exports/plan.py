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
import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import repeat
from operator import attrgetter
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
#: SPSS's keywords, which no variable may be named (names are lower case here).
SPSS_RESERVED = frozenset({"all", "and", "by", "eq", "ge", "gt", "le", "lt", "ne", "not", "or", "to", "with"})
INTEGER_CODE_RE = re.compile(r"^-?\d{1,9}$")
CHECKBOX_LABELS = (("0", "Unchecked"), ("1", "Checked"))
STATUS_LABELS = (("0", "Incomplete"), ("1", "Unverified"), ("2", "Complete"))
EARLIEST_DATE = "earliest_date"
SECONDS_PER_DAY = 86400


class PlanError(Exception):
    """The profile yields columns no format can hold (name too long after shortening, clash, a
    Stata or SPSS keyword)."""


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
    #: The same forms by instrument, in instance order.
    instances: dict[str, list[FormRow]]
    day0: datetime | None = None
    day0_source: str | None = None
    #: Midnight of the date of birth.
    birth: datetime | None = None
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


def day_of(value: Any) -> datetime | None:
    """Midnight of a stored date ('YYYY-MM-DD') or date-time ('YYYY-MM-DD HH:MM'); None if it is none."""
    if value.__class__ is not str:
        return None
    if len(value) == DATE_LENGTH:  # a date is its own midnight
        return _parse_date(value)
    moment = _parse_moment(value)
    return None if moment is None else moment.replace(hour=0, minute=0, second=0, microsecond=0)


#: 'YYYY-MM-DD'.
DATE_LENGTH = 10


@functools.lru_cache(maxsize=8192)
def _parse_date(text: str) -> datetime | None:
    """Remembered: a registry's dates repeat (a few thousand days) and an export parses millions.
    Date-times are not: they rarely repeat (one a minute), and remembering them only churned
    the cache at 100,000 records."""
    return _parse_moment(text)


def _parse_moment(text: str) -> datetime | None:
    """A stored date or date-time as a datetime (None: blank or not one)."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


#: A column's cells for a batch of rows: the values, and apart the codes (None: no cell has one).
Values = tuple[list[Any], list[str | None] | None]


@dataclass(frozen=True, slots=True)
class Block:
    """A batch of one table's rows held column by column, as the writers consume them: computing
    a column at a time does each column's choices once per batch, not once per cell."""

    size: int
    values: list[list[Any]]
    codes: list[list[str | None] | None]

    def rows(self) -> list[list[Cell]]:
        """Row by row, each cell `(value, code)`."""
        blanks = [None] * self.size
        columns = [zip(values, blanks if codes is None else codes, strict=True)
                   for values, codes in zip(self.values, self.codes, strict=True)]
        return [list(row) for row in zip(*columns, strict=True)]


@dataclass(frozen=True, slots=True)
class _Rows:
    """Who each row of a batch is: its record, the form instance it stands for (repeat tables,
    long rows; else None) and whether it is the record's own row."""

    recs: Sequence[RecordView]
    forms: Sequence[FormRow | None]
    base: Sequence[bool]


@dataclass(frozen=True, slots=True)
class _Found:
    """The form instance some columns read in each row, and the rows where codes replace values."""

    forms: list[FormRow | None]
    #: Each found form's values (none where no form is found).
    datas: list[dict[str, Any]]
    #: By field: the rows whose form holds a missing-data code for it, and the code.
    coded: dict[str, list[tuple[int, str]]]
    #: Rows whose record's quasi-identifiers are suppressed (empty unless a column may be).
    suppressed: list[int]
    by_field: dict[str | None, list[Any]] = dataclasses.field(default_factory=dict)
    moments_by_field: dict[str | None, list[datetime | None]] = dataclasses.field(default_factory=dict)

    def values(self, name: str | None) -> list[Any]:
        """The field's stored value in each row (None: blank or no form); the list is shared by
        the field's columns (a date's day and age), which only read it."""
        found = self.by_field.get(name)
        if found is None:
            found = self.by_field[name] = list(map(dict.get, self.datas, repeat(name)))
        return found

    def moments(self, name: str | None) -> list[datetime | None]:
        """The field's value in each row as a datetime (None: no form, blank or not a date);
        parsed once for all of a date's columns (its day and its age), which only read it."""
        found = self.moments_by_field.get(name)
        if found is None:
            date, moment, short = _parse_date, _parse_moment, DATE_LENGTH
            found = self.moments_by_field[name] = [
                (date(v) if len(v) == short else moment(v)) if v.__class__ is str else None
                for v in self.values(name)]
        return found


_NO_DATA: dict[str, Any] = {}


#: Which form instance each row of a batch reads.
_Finder = Callable[[_Rows], list[FormRow | None]]
#: A column's cells for a batch: from the rows, and for form columns from the forms found.
_ColumnFn = Callable[[_Rows, "_Found | None"], Values]


@dataclass(slots=True)
class _Part:
    """Consecutive columns of a table that read the same form instance (finder None: record columns)."""

    key: tuple[Any, ...] | None
    find: _Finder | None
    columns: list[_ColumnFn] = dataclasses.field(default_factory=list)
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
        self._compiled: dict[Column, _ColumnFn] = {}
        self._compiled_parts: dict[tuple[Column, ...], list[_Part]] = {}

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
                elif column.name in SPSS_RESERVED:
                    problem = "is a reserved word in SPSS"
                if problem:
                    raise PlanError(f"{self.profile.name}: column '{column.name}' of table '{table.name}' {problem}")
                seen.add(column.name)

    def main_table(self) -> Table:
        return self.tables[0]

    # -- cells ---------------------------------------------------------------------------------

    def block(self, table: Table, views: Sequence[RecordView]) -> Block:
        """The table's rows for a batch of records, column by column."""
        return self._block(table.columns, self._rows(table, views))

    def form_block(self, columns: tuple[Column, ...], recs: Sequence[RecordView],
                   forms: Sequence[FormRow | None]) -> Block:
        """`columns` for rows that each stand for one form instance of a record (None: the record
        itself): what ODM's item groups hold, computed as a table's columns are."""
        return self._block(columns, _Rows(recs, forms, [True] * len(recs)))

    def _block(self, columns: tuple[Column, ...], rows: _Rows) -> Block:
        parts = self._compiled_parts.get(columns)
        if parts is None:
            parts = self._compiled_parts[columns] = self._compile_parts(columns)
        values: list[list[Any]] = []
        codes: list[list[str | None] | None] = []
        for part in parts:
            found = None if part.find is None else _found(part.find(rows), rows, part.suppressible)
            for column in part.columns:
                column_values, column_codes = column(rows, found)
                values.append(column_values)
                codes.append(column_codes)
        return Block(len(rows.recs), values, codes)

    def _rows(self, table: Table, views: Sequence[RecordView]) -> _Rows:
        if table.instrument is not None:
            recs: list[RecordView] = []
            forms: list[FormRow | None] = []
            for rec in views:
                for form in rec.instances.get(table.instrument, ()):
                    recs.append(rec)
                    forms.append(form)
            return _Rows(recs, forms, [True] * len(recs))
        if not table.long:
            return _Rows(views, [None] * len(views), [True] * len(views))
        recs, forms, base = [], [], []
        for rec in views:
            recs.append(rec)
            forms.append(None)
            base.append(True)
            for inst in self.instruments:
                if inst.repeatable:
                    for form in rec.instances.get(inst.name, ()):
                        recs.append(rec)
                        forms.append(form)
                        base.append(False)
        return _Rows(recs, forms, base)

    def _compile_parts(self, columns: tuple[Column, ...]) -> list[_Part]:
        """Columns grouped into parts: consecutive columns that read the same form instance find it
        once per row, not once per cell."""
        parts: list[_Part] = []
        for column in columns:
            key = self._finder_key(column) if self._reads_form(column) else None
            if key is None or not parts or parts[-1].key != key:
                parts.append(_Part(key, self._form_finder(column) if key is not None else None))
            part = parts[-1]
            part.columns.append(self._column(column))
            part.suppressible = part.suppressible or column.field in self.suppressible
        return parts

    @staticmethod
    def _reads_form(column: Column) -> bool:
        """False for the record's own columns (key, site, day 0, markers, the site's companion)."""
        return column.role not in _RECORD_CELLS and not (column.role == Role.MISSING and column.field is None)

    def _column(self, column: Column) -> _ColumnFn:
        fn = self._compiled.get(column)
        if fn is None:
            fn = self._compiled[column] = self._compile(column)
        return fn

    def _compile(self, column: Column) -> _ColumnFn:
        """The function computing `column`'s cells for a batch, with every choice that depends only
        on the column (its role, which form it reads, suppression) made once."""
        role = column.role
        if not self._reads_form(column):
            return self._record_column(column)
        plain = self._plain_values(column)
        if role == Role.STATUS:  # a form's status is never coded nor suppressed
            return lambda rows, found: plain(found, rows)  # type: ignore[arg-type]
        name = column.field
        companion = role == Role.MISSING
        suppressible = name in self.suppressible

        def values(rows: _Rows, found: _Found | None) -> Values:
            assert found is not None
            cells, codes = plain(found, rows)
            coded = found.coded.get(name, [])  # type: ignore[arg-type]
            if suppressible and found.suppressed:  # after the field's own codes: suppression wins
                coded = [*coded, *((i, SUPPRESSED.code) for i in found.suppressed)]
            for i, code in coded:
                if companion:  # the companion column's value is the code
                    cells[i] = code
                else:
                    cells[i] = None
                    codes = codes or [None] * len(cells)
                    codes[i] = code
            return cells, codes

        return values

    def _plain_values(self, column: Column) -> Callable[[_Found, _Rows], Values]:
        """A form column's cells where no code applies (the caller puts the codes in): a blank
        where the row has no such form, else what the form's value becomes in this column."""
        name = column.field
        role = column.role
        if role == Role.STATUS:
            return lambda found, rows: ([None if f is None else f.status for f in found.forms], None)
        if role == Role.MISSING:
            return lambda found, rows: ([None] * len(found.forms), None)
        if role == Role.CHOICE:
            choice = column.choice
            return lambda found, rows: ([
                None if f is None else 1 if isinstance(v, list) and choice in v else 0
                for f, v in zip(found.forms, found.values(name), strict=True)], None)
        convert = _CONVERTERS.get(column.kind) if role == Role.VALUE else None
        if convert is int and column.value_labels:
            codes = _ChoiceCodes({None: None, **{code: int(code) for code, _ in column.value_labels}})
            return lambda found, rows: (list(map(codes.__getitem__, found.values(name))), None)
        if convert is not None:
            return lambda found, rows: ([None if v is None else convert(v) for v in found.values(name)], None)
        return _date_column(column)

    def _record_column(self, column: Column) -> _ColumnFn:
        """The record's own columns: key, site, day 0, the long layout's markers, the suppression marker."""
        role = column.role
        if role == Role.MISSING:  # the record's suppression marker (the site's companion)
            return lambda rows, found: ([SUPPRESSED.code if rec.suppressed and base else None
                                         for rec, base in zip(rows.recs, rows.base, strict=True)], None)
        record_cell = _RECORD_CELLS[role]
        own_row_only = role in (Role.SITE, Role.DAY0)  # not on the long layout's instance rows
        return lambda rows, found: _split([
            record_cell(self, column, rec, form) if base or not own_row_only else BLANK
            for rec, form, base in zip(rows.recs, rows.forms, rows.base, strict=True)])

    def _finder_key(self, column: Column) -> tuple[Any, ...]:
        """Columns with equal keys read the same form instance of a row (see `_form_finder`)."""
        if column.instance is not None:
            return ("fixed", column.instrument, column.instance)
        if column.instrument in self._repeatable:
            return ("row", column.instrument)
        return ("single", column.instrument)

    def _form_finder(self, column: Column) -> _Finder:
        """Which form instance a column reads: a fixed instance (wide `_1`, `_2` columns), the row's
        own instance (repeat tables, long rows), or the record's single form (its own row only)."""
        instrument = column.instrument
        if column.instance is not None:
            key = (instrument, column.instance)
            return lambda rows: [rec.forms.get(key) for rec in rows.recs]
        if instrument in self._repeatable:
            return lambda rows: [f if f is not None and f.instrument == instrument else None for f in rows.forms]
        single = (instrument, 1)
        return lambda rows: [rec.forms.get(single) if base else None
                             for rec, base in zip(rows.recs, rows.base, strict=True)]


def _found(forms: list[FormRow | None], rows: _Rows, suppressible: bool) -> _Found:
    coded: dict[str, list[tuple[int, str]]] = {}
    for i, f in enumerate(forms):
        if f is not None and f.missing:
            for name, code in f.missing.items():
                coded.setdefault(name, []).append((i, code))
    suppressed = [i for i, f in enumerate(forms) if f is not None and rows.recs[i].suppressed] if suppressible else []
    return _Found(forms, [_NO_DATA if f is None else f.data for f in forms], coded, suppressed)


def _split(cells: list[Cell]) -> Values:
    """Cells into values and codes (None when no cell has a code)."""
    values = [value for value, _ in cells]
    return values, ([code for _, code in cells] if any(code for _, code in cells) else None)


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


class _ChoiceCodes(dict[str | None, int | None]):
    """A coded choice field's stored codes ('1') as the numbers they are exported as, looked up
    rather than parsed cell by cell (a third of the time of a study's many choice columns). A
    code the definition no longer lists (data entered under an earlier version) is parsed."""

    def __missing__(self, code: str) -> int:
        return int(code)


#: A stored value as a cell's value, by column kind (dates: `_date_column`).
_CONVERTERS: dict[Kind, Callable[[Any], Any]] = {Kind.INTEGER: int, Kind.NUMBER: float, Kind.STRING: _text}


def _span(whole: bool) -> Callable[[timedelta], int | float]:
    """Days in an interval: whole days for a date, a fraction of a day for a date-time."""
    return _WHOLE_DAYS if whole else lambda delta: delta.total_seconds() / SECONDS_PER_DAY


_WHOLE_DAYS: Callable[[timedelta], int] = attrgetter("days")


def _date_column(column: Column) -> Callable[[_Found, _Rows], Values]:
    """A column computed from a date or date-time field: the date itself (kept or shifted), its
    days from day 0, or the age in days at it (coded with the birth date's code when that is)."""
    name, role = column.field, column.role
    as_date = column.kind == Kind.DATE
    span = _span(column.kind == Kind.INTEGER)
    if role == Role.VALUE:
        return lambda found, rows: ([m.date() if as_date and m is not None else m
                                     for m in found.moments(name)], None)
    if role == Role.SHIFTED:
        def shifted(found: _Found, rows: _Rows) -> Values:
            moved = [None if m is None else m - timedelta(days=rec.shift)
                     for m, rec in zip(found.moments(name), rows.recs, strict=True)]
            return [None if m is None else m.date() for m in moved] if as_date else moved, None
        return shifted
    if role == Role.DAY:
        return lambda found, rows: ([
            None if m is None or rec.day0 is None else span(m - rec.day0)
            for m, rec in zip(found.moments(name), rows.recs, strict=True)], None)

    def age(found: _Found, rows: _Rows) -> Values:
        moments = found.moments(name)
        values = [None if m is None or rec.birth is None else span(m - rec.birth)
                  for m, rec in zip(moments, rows.recs, strict=True)]
        codes = [rec.birth_code if m is not None and rec.birth is None else None
                 for m, rec in zip(moments, rows.recs, strict=True)]
        return values, codes if any(codes) else None

    return age


_RECORD_CELLS: dict[Role, Callable[[Plan, Column, RecordView, FormRow | None], Cell]] = {
    Role.KEY: _key_cell,
    Role.SITE: _site_cell,
    Role.DAY0: _day0_cell,
    Role.REPEAT_INSTRUMENT: _repeat_instrument_cell,
    Role.INSTANCE: _instance_cell,
}
