"""A large API import is one transaction with a fixed number of statements, and audits like single saves.

The import loads its records once, creates new records per site in one go, and holds its
audit rows back to chain and insert them together (`app.audit.services.batched`); these
tests prove that batching changes the cost, not the result.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from sqlalchemy import event, select

from app.audit.services import replay, verify_chain
from app.extensions import db
from app.records.models import FormInstance, Record
from tests.test_api import call, token


@pytest.fixture
def api(demo):
    return demo.test_client()


def copies(api: Any, tok: str, count: int) -> str:
    """`count` new records in one CSV payload: copies of KMU-0001's rows (every form, repeating ones too)."""
    export = call(api, tok, content="record", format="csv", records="KMU-0001").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(export)))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    for n in range(count):
        writer.writerows({**row, "record_id": f"copy-{n}"} for row in rows)
    return out.getvalue()


def imported(api: Any, tok: str, count: int) -> tuple[list[str], list[str]]:
    """Import `count` copies; the new record IDs and the SQL statements the call ran."""
    payload = copies(api, tok, count)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        response = call(api, tok, content="record", format="csv", data=payload, forceAutoNumber="true",
                        returnContent="ids", returnFormat="json")
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json(), statements


#: The ORM inserts new rows in one statement on PostgreSQL, one per row on SQLite (whose
#: RETURNING does not keep the rows' order); everything else must not grow with the records.
ROW_INSERTS = ("INSERT INTO record ", "INSERT INTO form_instance ")


def test_import_statements_do_not_grow_with_the_records(api):
    tok = token("coordinator")
    few, few_statements = imported(api, tok, 2)
    many, many_statements = imported(api, tok, 15)
    assert (len(few), len(many)) == (2, 15)
    others = [[s for s in run if not s.startswith(ROW_INSERTS)] for run in (few_statements, many_statements)]
    assert len(others[1]) == len(others[0])
    forms_per_record = db.session.query(FormInstance).join(Record).filter(Record.label == "KMU-0001").count()
    assert len(many_statements) - len(others[1]) <= 15 * (1 + forms_per_record)


def test_a_batched_import_stores_and_audits_what_the_source_record_has(api):
    tok = token("coordinator")
    labels, _ = imported(api, tok, 3)
    db.session.expire_all()
    assert verify_chain(db.session).ok
    source = db.session.scalar(select(Record).where(Record.label == "KMU-0001"))

    def forms(record: Record) -> dict[tuple[str, int], tuple[Any, ...]]:
        return {(f.instrument, f.instance): (f.data, f.missing, f.status)
                for f in db.session.scalars(select(FormInstance).where(FormInstance.record_id == record.id))}

    for label in labels:
        record = db.session.scalar(select(Record).where(Record.label == label))
        assert forms(record) == forms(source)
        # The trail alone rebuilds the imported forms: every value was audited.
        rebuilt = replay(db.session, record.id)
        assert {key: (f.data, f.missing, f.status) for key, f in rebuilt.items()} == forms(record)
