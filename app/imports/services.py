"""The Data Import Tool's service: a CSV upload imported as a background job (app/jobs).

The import itself is the API's (`RecordImport` in app/api/imports.py), so the rules are the
same: the same columns, all or nothing, every value through the write path, records created
and changed only at the user's own sites. What the upload can be checked for at once (a
readable CSV, known columns, the record ID column) is checked in the request, so a wrong
file is a message next to the upload field; the records' values are checked by the job,
which reports every problem with the rows it came from, or commits the whole file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from app.api.columns import import_columns
from app.api.imports import MAX_REPORTED, ImportOptions, ImportRejected, Problem, RecordImport, parse_payload
from app.api.params import ApiError
from app.auth.models import User
from app.extensions import db
from app.jobs import JobKind, RunningJob
from app.study import current_study
from app.study.definition import Study
from app.study.fieldtypes import field_type

IMPORT_JOBS = JobKind("import", noun="import", unexpected="The import failed because of an error on the server; "
                      "it is in the server's log. Nothing was imported.")
#: The audit rows' source: changes made with the Data Import Tool (the API's are "api").
SOURCE = "import"
DATA_FILE = "data.csv"
#: Records linked from the summary of a finished import; the rest are in their sites' grids.
MAX_LINKS = 100


class UploadError(Exception):
    """The uploaded file cannot be imported at all; `message` is shown next to the upload field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def template_columns(study: Study) -> list[str]:
    """The columns of an import, in REDCap's order, without calculated fields (an import ignores them)."""
    return [c.name for c in import_columns(study).values() if c.field is None or field_type(c.field).is_input]


def read_upload(session: Session, study: Study, user: User, data: bytes) -> list[dict[str, str]]:
    """The rows of an uploaded CSV, as far as they can be checked before importing: UploadError if not."""
    if not data.strip():
        raise UploadError("The file is empty.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadError("The file is not CSV text in UTF-8: in Excel, save it as 'CSV UTF-8 (comma "
                          "delimited)'.") from None
    if "\x00" in text:
        raise UploadError("The file is not a CSV file.")
    try:
        rows = parse_payload(text, "csv")
        RecordImport(session, study, user, ImportOptions()).check_header(rows)
    except ApiError as exc:
        raise UploadError(exc.message) from None
    return rows


def start_import(app: Flask, user: User, data: bytes, options: ImportOptions, filename: str) -> str:
    """Check the file now (UploadError), then import it in a thread; return the job id."""
    study = current_study()
    rows = read_upload(db.session, study, user, data)
    records = {row.get(study.record_id_field, "").strip() for row in rows} - {""}
    return IMPORT_JOBS.start(app, user, _import, phase="importing", total=len(records),
                             params={"filename": filename, "options": asdict(options)}, files={DATA_FILE: data})


def _import(job: RunningJob, user: User) -> None:
    """The work: the API's import with a progress callback, then one commit, or nothing and the problems."""
    path = job.folder / DATA_FILE
    try:
        rows = parse_payload(path.read_bytes().decode("utf-8-sig"), "csv")
    finally:
        path.unlink(missing_ok=True)  # the upload may hold identifiers: it is not kept past its reading
    study = current_study()
    options = ImportOptions(**job.state.params["options"])
    try:
        saved = RecordImport(db.session, study, user, options, source=SOURCE).run(
            rows, progress=lambda records: job.advance(records, "finishing"))
    except ImportRejected as exc:
        db.session.rollback()
        problems = problem_rows(rows, exc.problems, study.record_id_field)
        job.update(phase="failed", result={"problems": problems, "more": len(exc.problems) - len(problems)},
                   message=f"{len(exc.problems):,} problem(s) found; nothing was imported. Correct the file and "
                           "upload it again.")
        return
    except ApiError as exc:
        db.session.rollback()
        job.update(phase="failed", message=f"{exc.message} Nothing was imported.")
        return
    job.update(phase="finishing", done=len(saved))
    db.session.commit()
    labels = [label for label, _ in saved]
    created = len(labels) if options.force_auto_number else 0
    job.update(phase="done", result={"created": created, "updated": len(labels) - created,
                                     "records": labels[:MAX_LINKS], "more": max(0, len(labels) - MAX_LINKS)},
               message=f"{len(labels):,} record(s) imported: {created:,} created, {len(labels) - created:,} updated.")


def problem_rows(rows: Sequence[dict[str, str]], problems: Sequence[Problem], id_field: str) -> list[dict[str, Any]]:
    """The problems as the page lists them, each with the data rows (1 = the first under the header) it is on.

    The API names a problem by record, field and value; a record may span several rows
    (repeat instances), so a problem is placed on the record's rows that hold the value
    sent, or on all of the record's rows when that does not narrow it down.
    """
    by_record: dict[str, list[int]] = {}
    for number, row in enumerate(rows, start=1):
        by_record.setdefault(row.get(id_field, "").strip(), []).append(number)
    listed = []
    for problem in problems[:MAX_REPORTED]:
        numbers = by_record.get(problem.record, []) if problem.record else []
        exact = [n for n in numbers if problem.value.strip()
                 and rows[n - 1].get(problem.field, "").strip() == problem.value.strip()]
        listed.append({"rows": ", ".join(str(n) for n in exact or numbers), "record": problem.record,
                       "field": problem.field, "value": problem.value, "message": problem.message})
    return listed
