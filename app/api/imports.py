"""Record import (`content=record` with `data`): all or nothing, through the one write path.

Every row is turned into `Submission`s for `save_form`, which validates, applies
branching and calculations, checks the user's rights at the record's site and audits
with the API as the source; nothing here writes a value itself. Every refusal anywhere
in the payload is collected (record, field, value, message) and, if there is any, the
whole call is refused: the request then ends with a 400 and `app.web` rolls back, so
nothing of it is written.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.api.columns import DAG, REPEAT_INSTANCE, REPEAT_INSTRUMENT, Column, import_columns
from app.api.params import ApiError, Format
from app.audit.services import batched
from app.auth.models import Site, User
from app.auth.permissions import Action, site_ids_for
from app.errors import ConflictError, NotFoundError, PermissionDenied, ValidationFailed
from app.records.models import FormInstance, Record
from app.records.repository import RecordRepository
from app.records.services import (
    REASON_FIELD,
    STATUS_FIELD,
    Actor,
    RecordState,
    Submission,
    create_records,
    load_states,
    save_form,
)
from app.study.definition import Study
from app.study.fieldtypes import field_type

MAX_REPORTED = 500
_SLASHED_DATE = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})(.*)$")


@dataclass(frozen=True, slots=True)
class Problem:
    record: str
    field: str
    value: str
    message: str


class ImportRejected(ApiError):
    """The payload had problems; nothing was written. The message lists them as REDCap does:
    one CSV line per problem, ``"record","field","value","message"``."""

    def __init__(self, problems: list[Problem]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerows([p.record, p.field, p.value, p.message] for p in problems[:MAX_REPORTED])
        if len(problems) > MAX_REPORTED:
            buffer.write(f"... and {len(problems) - MAX_REPORTED} more problems\n")
        super().__init__(buffer.getvalue().rstrip("\n"))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ImportOptions:
    overwrite: bool = False
    force_auto_number: bool = False
    date_format: str = "YMD"
    #: Casebook's addition to REDCap's parameters: the reason for changing a Complete form.
    reason: str = ""


def may_import(user: User) -> bool:
    """Whether `user` may import records at all (at some site): the API and the Data Import Tool ask this."""
    return site_ids_for(user, Action.EDIT) != set()


def parse_payload(text: str | None, fmt: Format) -> list[dict[str, str]]:
    """The rows of a `data` payload, every value as text; anything but a list of records is refused."""
    if text is None or not text.strip():
        raise ApiError('The parameter "data" is missing or empty: send a list of records.')
    if fmt == "json":
        return _json_rows(text)
    if fmt == "csv":
        return _csv_rows(text)
    raise ApiError("Importing XML is not supported: send the data as json or csv.")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    raise ApiError("Each value in the data must be text or a number, not a list or an object.")


def _json_rows(text: str) -> list[dict[str, str]]:
    try:
        data = json.loads(text)
    except ValueError:
        raise ApiError("The data are not valid JSON.") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ApiError("The data must be a list of records: a JSON array of objects, one per row.")
    if not data:
        raise ApiError("The data contain no records.")
    return [{str(key): _text(value) for key, value in item.items()} for item in data]


def _csv_rows(text: str) -> list[dict[str, str]]:
    try:
        lines = [cells for cells in csv.reader(io.StringIO(text.removeprefix("\ufeff"))) if any(cells)]
    except csv.Error:
        raise ApiError("The data are not valid CSV.") from None
    if len(lines) < 2:
        raise ApiError("The data contain no records: a CSV header line and at least one row are needed.")
    header = [name.strip() for name in lines[0]]
    if len(set(header)) != len(header):
        raise ApiError("The CSV header names a column twice.")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if len(cells) > len(header):
            raise ApiError(f"Line {number} of the CSV data has more values than the header has columns.")
        rows.append(dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True)))
    return rows


@dataclass(slots=True)
class _Pending:
    """What the rows of one record send for one form instance, still as raw text."""

    instrument: str
    instance: int | None
    values: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, str]] = field(default_factory=dict)
    missing_options: dict[str, dict[str, str]] = field(default_factory=dict)
    status: str = ""

    def add(self, column: Column, raw: str) -> None:
        if column.kind == "status":
            self.status = raw.strip()
            return
        assert column.field is not None
        name = column.field.name
        if column.kind == "value":
            self.values[name] = raw
        elif column.kind == "option":
            self.options.setdefault(name, {})[column.code or ""] = raw.strip()
        else:
            self.missing_options.setdefault(name, {})[column.code or ""] = raw.strip()


class RecordImport:
    """One import call: rows grouped by record, saved through the write path, or refused whole."""

    def __init__(self, session: Session, study: Study, user: User, options: ImportOptions,
                 source: str = "api") -> None:
        """`source` is what the audit rows say the change came from: the API, or the Data Import Tool page."""
        self.session = session
        self.study = study
        self.user = user
        self.options = options
        self.repo = RecordRepository(session, user)
        self.actor = Actor(user, source=source)
        self.columns = import_columns(study)
        self.problems: list[Problem] = []
        self.order = {inst.name: index for index, inst in enumerate(study.instruments)}

    def run(self, rows: list[dict[str, str]],
            progress: Callable[[int], None] | None = None) -> list[tuple[str, str]]:
        """Import `rows`; return (record ID, ID sent) per record; raise ImportRejected on any problem.

        `progress` (the browser's import job) is called with 1 after each record is checked and
        saved into the transaction; nothing is committed here either way.
        """
        self.check_header(rows)
        if not may_import(self.user):
            raise ApiError("You do not have permissions to import data: your role can only read.", 403)
        groups: dict[str, list[dict[str, str]]] = {}
        id_field = self.study.record_id_field
        for number, row in enumerate(rows, start=1):
            sent = row.get(id_field, "").strip()
            if not sent:
                self.problems.append(Problem("", id_field, "", f"Row {number} has no record ID."))
                continue
            groups.setdefault(sent, []).append(row)
        # The records and everything save_form reads about them, loaded once for the whole call.
        found = {} if self.options.force_auto_number else self.repo.by_labels(list(groups))
        states = load_states(self.session, list(found.values()))
        targets = {sent: target for sent, group in groups.items()
                   if (target := self._target(sent, group, found.get(sent))) is not None}
        saved = []
        try:
            with batched(self.session):  # one head lock and one INSERT for the audit rows of the whole call
                new = [sent for sent, target in targets.items() if isinstance(target, Site)]
                created = dict(zip(new, create_records(self.session, self.actor, [targets[sent] for sent in new]),
                                   strict=True))
                for sent, target in targets.items():
                    record = created[sent] if isinstance(target, Site) else target
                    self._save(record, states.setdefault(record.id, RecordState([], signed=False)), sent,
                               groups[sent])
                    saved.append((record.label, sent))
                    if progress is not None:
                        progress(1)
                if self.problems:
                    raise ImportRejected(self.problems)
                self.session.flush()  # every form of the call: save_form leaves the flush to a state's holder
        except (StaleDataError, IntegrityError):
            raise ApiError("A record was changed by someone else during the import; nothing was imported. "
                           "Please try again.") from None
        return saved

    def check_header(self, rows: list[dict[str, str]]) -> None:
        """Refuse columns the study does not have, and data without the record ID column (ApiError)."""
        names = list(dict.fromkeys(name for row in rows for name in row))
        unknown = [name for name in names if name not in self.columns]
        if unknown:
            raise ApiError("The following fields were not found in the project as real data fields: "
                           + ", ".join(unknown))
        if self.study.record_id_field not in names:
            raise ApiError(f"The record ID field '{self.study.record_id_field}' is missing from the data.")

    def _target(self, sent: str, rows: list[dict[str, str]], record: Record | None) -> Record | Site | None:
        """Where the rows of `sent` go: `record` (found by its label), or the site of a new record."""
        groups = {row.get(DAG, "").strip().lower() for row in rows} - {""}
        if len(groups) > 1:
            self.problems.append(Problem(sent, DAG, ", ".join(sorted(groups)),
                                         "The rows of this record name different data access groups."))
            return None
        group = groups.pop() if groups else ""
        if self.options.force_auto_number:
            return self._site_for_new(sent, group)
        if record is None:
            self.problems.append(Problem(
                sent, self.study.record_id_field, sent,
                "This record does not exist (or is not at one of your sites). Casebook numbers new records "
                "itself: import them with forceAutoNumber=true.",
            ))
            return None
        if group and group != record.site.code.lower():
            self.problems.append(Problem(sent, DAG, group, f"The record belongs to '{record.site.code.lower()}'; "
                                         "moving a record to another data access group is not supported."))
        return record  # its rows are still checked, so the client learns every problem at once

    @cached_property
    def creatable_sites(self) -> list[Site]:
        """The sites where the user may create records (read once per import)."""
        return self.repo.sites(Action.CREATE)

    def _site_for_new(self, sent: str, group: str) -> Site | None:
        sites = self.creatable_sites
        if group:
            chosen = [s for s in sites if s.code.lower() == group]
            if chosen:
                return chosen[0]
            self.problems.append(Problem(sent, DAG, group, "You cannot create records in this data access group."))
            return None
        if len(sites) == 1:
            return sites[0]
        allowed = ", ".join(s.code.lower() for s in sites) or "none"
        self.problems.append(Problem(sent, DAG, "", "Name the site of each new record in redcap_data_access_group "
                                     f"(you can create records at: {allowed})."))
        return None

    def _slot(self, sent: str, row: Mapping[str, str], number: int) -> tuple[str, int | str] | None:
        """(repeating instrument or '' for the main row, instance or a unique 'new' key) of a row."""
        target = row.get(REPEAT_INSTRUMENT, "").strip()
        instance = row.get(REPEAT_INSTANCE, "").strip()
        if not target:
            if not instance or _whole(instance) == 1:
                return "", 1
            self.problems.append(Problem(sent, REPEAT_INSTANCE, instance,
                                         "A repeat instance needs redcap_repeat_instrument."))
            return None
        if not self.study.has_instrument(target) or not self.study.instrument(target).repeatable:
            self.problems.append(Problem(sent, REPEAT_INSTRUMENT, target, "This is not a repeating instrument."))
            return None
        if instance.lower() == "new":
            return target, f"new-{number}"
        whole = _whole(instance)
        if not instance or (whole is not None and whole >= 1):
            return target, whole or 1
        self.problems.append(Problem(sent, REPEAT_INSTANCE, instance,
                                     "A repeat instance is a whole number from 1, or 'new'."))
        return None

    def _belongs(self, sent: str, column: Column, target: str, raw: str) -> bool:
        """Whether the column is on the row's form; a non-blank value on another form is a problem."""
        assert column.instrument is not None
        repeatable = self.study.instrument(column.instrument).repeatable
        if (column.instrument == target) if target else not repeatable:
            return True
        if raw.strip():
            if target:
                message = f"This field is not on '{target}', the repeating instrument this row names."
            else:
                message = (f"This field is on the repeating instrument '{column.instrument}': send it in a row "
                           f"whose redcap_repeat_instrument is '{column.instrument}'.")
            self.problems.append(Problem(sent, column.name, raw, message))
        return False

    def _pending(self, sent: str, rows: Iterable[dict[str, str]]) -> list[_Pending]:
        pending: dict[tuple[str, int | str], _Pending] = {}
        for number, row in enumerate(rows, start=1):
            slot = self._slot(sent, row, number)
            if slot is None:
                continue
            target, key = slot
            for name, raw in row.items():
                column = self.columns[name]
                if column.instrument is None or not self._belongs(sent, column, target, raw):
                    continue
                where = (column.instrument, key)
                instance = key if isinstance(key, int) else None
                pending.setdefault(where, _Pending(column.instrument, instance)).add(column, raw)
        return sorted(pending.values(), key=lambda p: (self.order[p.instrument], p.instance or 1_000_000_000))

    def _save(self, record: Record, state: RecordState, sent: str, rows: list[dict[str, str]]) -> None:
        for pending in self._pending(sent, rows):
            existing = next((f for f in state.forms if (f.instrument, f.instance) == (pending.instrument,
                                                                                      pending.instance)), None)
            submission = self._submission(sent, pending, existing)
            if submission is None:
                continue
            try:
                save_form(self.session, self.study, self.actor, record, pending.instrument, pending.instance,
                          submission, expected_version=None, reason=self.options.reason or None, state=state)
            except ValidationFailed as exc:
                for name, message in exc.errors.items():
                    if name == REASON_FIELD:
                        message += " Send it in the API parameter 'reason'."
                    self.problems.append(Problem(sent, *self._shown(pending, name), message))
            except (PermissionDenied, NotFoundError) as exc:
                self.problems.append(Problem(sent, "", "", exc.message))
                return
            except ConflictError:
                raise ApiError(f"Record {sent} was changed by someone else during the import; nothing was "
                               "imported. Please try again.") from None

    def _shown(self, pending: _Pending, name: str) -> tuple[str, str]:
        """The column and the value the client sent, for a problem the write path reported."""
        if name == STATUS_FIELD:
            return f"{pending.instrument}_complete", pending.status
        if name in pending.options or name in pending.missing_options:
            sent = [code for code, text in pending.options.get(name, {}).items() if text == "1"]
            sent += [code for code, text in pending.missing_options.get(name, {}).items() if text == "1"]
            return name, ",".join(sent)
        return name, pending.values.get(name, "")

    def _submission(self, sent: str, pending: _Pending, existing: FormInstance | None) -> Submission | None:
        """The Submission for one form instance, or None when the rows change nothing in it."""
        values: dict[str, Any] = {}
        missing: dict[str, str | None] = {}
        codes = self.study.missing_code_values
        for name, raw in pending.values.items():
            f = self.study.field(name)
            if not field_type(f).is_input:
                continue  # calculated by Casebook; a value sent for it is ignored
            text = raw.strip()
            if not text:
                if self.options.overwrite:
                    values[name] = missing[name] = ""
            elif f.allow_missing_codes and text in codes:
                missing[name] = text
            else:
                values[name] = self._date(f.type, text)
        for name in pending.options.keys() | pending.missing_options.keys():
            self._checkbox(sent, name, pending, existing, values, missing)
        status = self._status(sent, pending)
        changes = status is not None or any(missing.values()) or any(v not in ("", []) for v in values.values())
        if not changes and (existing is None or not (values or missing)):
            return None
        return Submission(values=values, missing=missing, status=status)

    def _checkbox(self, sent: str, name: str, pending: _Pending, existing: FormInstance | None,
                  values: dict[str, Any], missing: dict[str, str | None]) -> None:
        """Apply `field___code` columns to the stored ticks: 1 ticks, 0 unticks, blank leaves (or clears)."""
        f = self.study.field(name)
        ticked = set(existing.data.get(name) or []) if existing else set()
        held = existing.missing.get(name) if existing else None
        code_now = held
        clears = {"0", ""} if self.options.overwrite else {"0"}
        explicit = False
        for kind, columns in (("option", pending.options.get(name, {})),
                              ("missing", pending.missing_options.get(name, {}))):
            for code, text in columns.items():
                if text not in ("0", "1", ""):
                    self.problems.append(Problem(sent, f"{name}___{code.lower()}", text,
                                                 "A checkbox column takes 1 (ticked) or 0 (not ticked)."))
                elif kind == "option" and text == "1":
                    ticked.add(code)
                    explicit = True
                elif kind == "option" and text in clears:
                    ticked.discard(code)
                elif kind == "missing" and text == "1":
                    code_now = code
                elif kind == "missing" and text in clears and code_now == code:
                    code_now = None
        if code_now and not explicit:
            ticked = set()
        values[name] = [c for c in f.choice_codes if c in ticked]
        if code_now != held:
            missing[name] = code_now or ""

    def _status(self, sent: str, pending: _Pending) -> int | None:
        if not pending.status:
            return None
        status = _whole(pending.status)
        if status in (0, 1, 2):
            return status
        self.problems.append(Problem(sent, f"{pending.instrument}_complete", pending.status,
                                     "A form status is 0 (Incomplete), 1 (Unverified) or 2 (Complete)."))
        return None

    def _date(self, ftype: str, text: str) -> str:
        """Dates sent as M/D/Y or D/M/Y (dateFormat=MDY/DMY) rewritten as YYYY-MM-DD."""
        match = _SLASHED_DATE.match(text)
        if ftype not in ("date", "datetime") or self.options.date_format == "YMD" or not match:
            return text
        first, second, year, rest = match.groups()
        month, day = (first, second) if self.options.date_format == "MDY" else (second, first)
        return f"{year}-{int(month):02d}-{int(day):02d}{rest}"


def _whole(text: str) -> int | None:
    """A whole number sent as '2' or (from a pandas DataFrame with blanks) '2.0'; else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None
