"""Record export (`content=record`): REDCap's flat rows, streamed in batches of records.

Records are read through the scoped repository, a batch of record ids at a time
(keyset pagination on the record id), and each batch's form instances in one more
query, so memory stays flat however many records are exported and clients need not
batch. Rows are REDCap's: one row per record for the non-repeating forms, then one row
per instance of each repeating form (`redcap_repeat_instrument`, `redcap_repeat_instance`).
Values are strings; a form never saved exports blank, status included, rather than a
`0` that would look like a real "no" (REDCap's exportBlankForGrayFormStatus).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session

from app.api.columns import Column, leading_columns, select_columns
from app.api.params import ApiError, Params
from app.auth.models import Site, User
from app.auth.permissions import Action
from app.exports.source import DATA_TEXT, MISSING_TEXT, stored_json
from app.logic import LogicError, evaluate, is_true, parse, referenced_fields
from app.records.models import FormInstance, FormStatus, Record
from app.records.repository import RecordRepository
from app.study.definition import Field, Study
from app.study.fieldtypes import format_number

BATCH_SIZE = 500


class StoredForm(NamedTuple):
    """A form instance as an export reads it (no ORM object: the identity map must not grow)."""

    record_id: int
    instrument: str
    instance: int
    data: dict[str, Any]
    missing: dict[str, str]
    status: int


def hidden_fields(study: Study, user: User) -> frozenset[str]:
    """Fields a de-identified export leaves out: identifiers and free text (as REDCap's
    de-identified right does), for a statistician; nothing for anyone else."""
    if not user.is_statistician or user.is_admin:
        return frozenset()
    return frozenset(f.name for f in study.iter_fields() if f.identifier or f.is_free_text)


class ExportReader(RecordRepository):
    """The repository's site scoping, plus batch reads for exports.

    A statistician works on the whole study but only ever de-identified: the repository
    grants them no site, so this reader widens their scope to every live record and the
    exporter removes the identifying fields.
    """

    def __init__(self, session: Session, user: User) -> None:
        super().__init__(session, user)
        self.whole_study = user.is_statistician and not user.is_admin

    def _scoped(self, stmt: Select, action: Action = Action.VIEW) -> Select:
        if self.whole_study and action == Action.VIEW:
            return stmt.where(Record.deleted_at.is_(None))
        return super()._scoped(stmt, action)

    def records_statement(self, begin: datetime | None, end: datetime | None) -> Select:
        """(id, label, site code, site name) of the visible records created or changed in the range.

        Built before the answer starts streaming: by then the request's session (and the
        user loaded in it) is gone, so the user's scope must already be in the statement.
        """
        stmt = self._scoped(
            select(Record.id, Record.label, Site.code, Site.name).join(Site, Site.id == Record.site_id)
        )
        if begin or end:
            stmt = stmt.where(or_(_between(Record.created_at, begin, end), exists(
                select(FormInstance.id).where(FormInstance.record_id == Record.id,
                                              _between(FormInstance.updated_at, begin, end))
            )))
        return stmt

    def record_batches(self, stmt: Select, labels: Sequence[str], size: int = BATCH_SIZE) -> Iterator[list[Any]]:
        """The rows of `stmt`, `size` records at a time, by record id (keyset pagination)."""
        if labels:
            for start in range(0, len(labels), size):
                chunk = labels[start:start + size]
                yield list(self.session.execute(stmt.where(Record.label.in_(chunk)).order_by(Record.id)))
            return
        last = 0
        while True:
            rows = list(self.session.execute(stmt.where(Record.id > last).order_by(Record.id).limit(size)))
            if not rows:
                return
            yield rows
            last = rows[-1].id

    def form_rows(self, record_ids: Sequence[int], instruments: Sequence[str]) -> list[StoredForm]:
        """The records' form instances, values decoded."""
        rows = self.session.execute(
            select(FormInstance.record_id, FormInstance.instrument, FormInstance.instance,
                   DATA_TEXT, MISSING_TEXT, FormInstance.status)
            .where(FormInstance.record_id.in_(record_ids), FormInstance.instrument.in_(instruments))
            .order_by(FormInstance.record_id, FormInstance.instrument, FormInstance.instance)
        )
        return [StoredForm(record_id, instrument, instance, stored_json(data), stored_json(missing), status)
                for record_id, instrument, instance, data, missing, status in rows]


def _between(column: Any, begin: datetime | None, end: datetime | None) -> Any:
    conditions = []
    if begin:
        conditions.append(column >= begin)
    if end:
        conditions.append(column <= end)
    return conditions[0] if len(conditions) == 1 else conditions[0] & conditions[1]


def parse_timestamp(params: Params, name: str) -> datetime | None:
    """REDCap's `YYYY-MM-DD HH:MM:SS` (seconds or time optional), read as UTC."""
    text = params.text(name)
    if not text:
        return None
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ApiError(f'The value of the parameter "{name}" must be a date and time as YYYY-MM-DD HH:MM:SS (UTC).')


@dataclass(slots=True)
class _Cells:
    """How one instrument's columns of a row are written from a saved form, in one pass.

    At 100,000 records there are tens of millions of cells: a loop over prepared tuples
    costs far less than a function call per cell, and a checkbox's options share one look-up.
    """

    labels: bool
    #: (position, field, value as text, missing-data code as text)
    values: list[tuple[int, str, Callable[[Any], str], Callable[[str], str]]] = field(default_factory=list)
    #: field -> [(position, option or missing code, text when held, text when not)]
    ticks: list[tuple[str, list[tuple[int, str, str, str]]]] = field(default_factory=list)
    codes: list[tuple[str, list[tuple[int, str, str, str]]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def fill(self, row: list[str], form: StoredForm) -> None:
        """Write the form into `row` (blank cells stay blank: a value never saved)."""
        data, missing = form.data, form.missing
        for index, name, text, missing_text in self.values:
            code = missing.get(name) if missing else None
            if code:
                row[index] = missing_text(code)
            else:
                value = data.get(name)
                if value is not None:
                    row[index] = text(value)
        for name, options in self.ticks:
            ticked = data.get(name) or ()
            for index, code, yes, no in options:
                row[index] = yes if code in ticked else no
        for name, options in self.codes:
            held = missing.get(name)
            for index, code, yes, no in options:
                row[index] = yes if held == code else no
        if self.statuses:
            status = FormStatus(form.status).label if self.labels else str(form.status)
            for index in self.statuses:
                row[index] = status


def _text_of(field: Field) -> Callable[[Any], str]:
    """How one field's stored values export: whole numbers without '.0', dates already ISO, as text.

    Chosen once per column, not once per cell."""
    if field.type in ("number", "calc"):
        return format_number  # stored as JSON numbers: 28.0 shows as 28
    if field.type == "integer":
        return lambda value: str(int(value))
    return str


class RecordExport:
    """One validated export request: its columns, and its rows as batches."""

    def __init__(self, session: Session, study: Study, user: User, params: Params) -> None:
        self.study = study
        self.reader = ExportReader(session, user)
        self.labels_wanted = params.choice("rawOrLabel", ("raw", "label"), "raw") == "label"
        self.label_headers = params.choice("rawOrLabelHeaders", ("raw", "label"), "raw") == "label"
        self.checkbox_labels = params.flag("exportCheckboxLabel")
        self.records = params.items("records")
        self.statement = self.reader.records_statement(
            parse_timestamp(params, "dateRangeBegin"), parse_timestamp(params, "dateRangeEnd"))
        hidden = hidden_fields(study, user)
        self.deidentified = bool(hidden)
        data_columns, bad_fields, bad_forms = select_columns(
            study, params.items("fields"), params.items("forms"), hidden
        )
        for name, bad in (("fields", bad_fields), ("forms", bad_forms)):
            if bad:
                shown = ", ".join(f"'{b}'" for b in bad)
                raise ApiError(f'The following values in the parameter "{name}" are not valid: {shown}')
        self.columns: list[Column] = leading_columns(study, with_dag=params.flag("exportDataAccessGroups"))
        self.columns += data_columns
        self.filter = self._filter(params.text("filterLogic"), hidden)
        chosen = {c.instrument for c in data_columns}
        repeating = [i.name for i in study.instruments if i.repeatable and i.name in chosen]
        #: The data columns of each row kind: the main row's, and each repeating instrument's.
        self.main_columns = [c for c in data_columns if not study.instrument(c.instrument or "").repeatable]
        self.instance_columns = {name: [c for c in data_columns if c.instrument == name] for name in repeating}
        needed = chosen | ({i.name for i in study.instruments if not i.repeatable} if self.filter else set())
        self.instruments = [i.name for i in study.instruments if i.name in needed]

    def _filter(self, text: str, hidden: frozenset[str]) -> Any:
        if not text:
            return None
        try:
            tree = parse(text)
        except LogicError as exc:
            raise ApiError(f"The filterLogic is not valid: {exc}") from None
        unknown = sorted(name for name in referenced_fields(tree) if not self.study.has_field(name))
        if unknown:
            raise ApiError(f"The filterLogic names fields that do not exist: {', '.join(unknown)}")
        refused = sorted(referenced_fields(tree) & hidden)
        if refused:
            raise ApiError(f"The filterLogic names fields left out of your de-identified data: {', '.join(refused)}",
                           403)
        return tree

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def headers(self) -> list[str] | None:
        return [c.header for c in self.columns] if self.label_headers else None

    def batches(self) -> Iterator[list[list[str]]]:
        """Rows as lists of text in `names` order, a batch of records at a time.

        Each column's writer is chosen once (`_writers`), so a cell costs a dictionary
        look-up and a conversion: at 100,000 records there are tens of millions of cells.
        """
        main, instances = self._writers()
        for records in self.reader.record_batches(self.statement, self.records):
            forms: dict[int, dict[str, list[StoredForm]]] = defaultdict(lambda: defaultdict(list))
            if self.instruments:
                for row in self.reader.form_rows([r.id for r in records], self.instruments):
                    forms[row.record_id][row.instrument].append(row)
            yield [row for record in records
                   for row in self._record_rows(record, forms.get(record.id, {}), main, instances)]

    def _writers(self) -> tuple[list[tuple[str, _Cells]], dict[str, _Cells]]:
        """(instrument, cells) of the main row, and the cells of each repeating instrument."""
        position = {name: index for index, name in enumerate(self.names)}
        main: dict[str, list[Column]] = defaultdict(list)
        for c in self.main_columns:
            main[c.instrument or ""].append(c)
        instances = {name: self._cells(columns, position) for name, columns in self.instance_columns.items()}
        return [(name, self._cells(columns, position)) for name, columns in main.items()], instances

    def _record_rows(self, record: Any, forms: dict[str, list[StoredForm]],
                     main_cells: list[tuple[str, _Cells]], instance_cells: dict[str, _Cells]) -> Iterator[list[str]]:
        context: dict[str, Any] = {}
        if self.filter is not None:
            for name, found in forms.items():
                if not self.study.instrument(name).repeatable:
                    context.update(found[0].data)
                    context.update(found[0].missing)
        dag = record.name if self.labels_wanted else record.code.lower()
        main = self._row(record.label, dag, "", "")
        for instrument, cells in main_cells:
            found = forms.get(instrument)
            if found:
                cells.fill(main, found[0])
        if self._keep(context):
            yield main
        for name, cells in instance_cells.items():
            shown = self.study.instrument(name).label if self.labels_wanted else name
            for form in forms.get(name, []):
                if not self._keep({**context, **form.data, **form.missing}):
                    continue
                row = self._row(record.label, dag, shown, str(form.instance))
                cells.fill(row, form)
                yield row

    def _keep(self, scope: dict[str, Any]) -> bool:
        if self.filter is None:
            return True
        return is_true(evaluate(self.filter, scope, self.study.missing_code_values))

    def _row(self, label: str, dag: str, instrument: str, instance: str) -> list[str]:
        """A row with its leading columns filled and every data cell blank (a form never saved)."""
        row = self._blank.copy()
        lead = {"id": label, "repeat_instrument": instrument, "repeat_instance": instance, "dag": dag}
        for index, kind in self._lead:
            row[index] = lead[kind]
        return row

    @cached_property
    def _blank(self) -> list[str]:
        return [""] * len(self.columns)

    @cached_property
    def _lead(self) -> list[tuple[int, str]]:
        """(position, kind) of the leading columns (record ID, redcap_repeat_*, DAG)."""
        return [(index, c.kind) for index, c in enumerate(self.columns) if c.field is None and c.kind != "status"]

    def _cells(self, columns: list[Column], position: dict[str, int]) -> _Cells:
        """How `columns` (one instrument's) are written from a saved form, chosen once per column."""
        cells = _Cells(self.labels_wanted)
        if self.labels_wanted:
            yes, no = ("", "") if self.checkbox_labels else ("Checked", "Unchecked")
        else:
            yes, no = "1", "0"
        ticks: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
        codes: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
        for column in columns:
            index = position[column.name]
            if column.kind == "status":
                cells.statuses.append(index)
                continue
            field = column.field
            assert field is not None
            code = column.code or ""
            if column.kind in ("option", "missing"):
                shown = yes
                if self.labels_wanted and self.checkbox_labels:
                    label = field.choice_label(code) if column.kind == "option" else None
                    shown = label or self.study.missing_label(code) or ""
                (ticks if column.kind == "option" else codes)[field.name].append((index, code, shown, no))
                continue
            if self.labels_wanted and field.choices and field.type != "checkbox":
                text = lambda value, f=field: f.choice_label(str(value)) or str(value)  # noqa: E731
            else:
                text = _text_of(field)
            missing_text = (lambda c: self.study.missing_label(c) or c) if self.labels_wanted else str
            cells.values.append((index, field.name, text, missing_text))
        cells.ticks = list(ticks.items())
        cells.codes = list(codes.items())
        return cells
