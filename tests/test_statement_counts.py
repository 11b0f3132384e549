"""No N+1 queries on list pages: the number of SQL statements a page runs must not grow with
the number of rows it shows. Each page is rendered with a few rows, then with about ten times
more, counting statements with SQLAlchemy's `before_cursor_execute` event.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from app.audit.models import AuditEvent
from app.auth.models import Site, StudyRole, User
from app.auth.services import create_user
from app.extensions import db
from app.records.models import Record
from app.records.services import Actor, Submission, create_record, save_form
from app.review.services import awaiting_signature, raise_query
from app.study import current_study
from app.synthetic.bulk import seed_synthetic

ADMIN_PASSWORD = "statement-count-admin-pw"
QUERIED = "SYN001-0001"
PAGES = {
    "home": "/",
    "record-status grid": "/sites/SYN001/records",
    "site queries": "/sites/SYN001/queries?status=all",
    "review list": "/review",
}


@contextmanager
def counting() -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def page_statements(client: FlaskClient, url: str) -> tuple[int, str]:
    """Statements of one GET, with an empty session so nothing is served from the identity map."""
    assert client.get(url).status_code == 200  # warm-up: templates and compiled SQL are cached
    db.session.remove()
    with counting() as statements:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(statements), response.get_data(as_text=True)


def seed(sites: int, records: int, seed_value: int) -> None:
    for _ in seed_synthetic(db.session, current_study(), sites=sites, records=records, seed=seed_value):
        pass
    db.session.commit()


def add_queries(admin: User, count: int) -> None:
    admin = db.session.merge(admin)  # pages ran in this session meanwhile, and ended it
    record = db.session.scalar(select(Record).where(Record.label == QUERIED))
    study = current_study()
    for number in range(count):
        raise_query(db.session, study, Actor(admin), record, "enrolment", 1, "sex", f"Please check ({number}).")
    db.session.commit()


def short_record(admin: User) -> str:
    """A record with one form of two values and one query, entered through the write path:
    few rows to show, but every kind of row the record page loads (a query, its messages)."""
    site = db.session.scalar(select(Site).where(Site.code == "SYN003"))
    record = create_record(db.session, Actor(admin), site)
    save_form(db.session, current_study(), Actor(admin), record, "enrolment", 1,
              Submission(values={"case_source": "1", "sex": "2"}), expected_version=0)
    raise_query(db.session, current_study(), Actor(admin), record, "enrolment", 1, "sex", "Please confirm.")
    db.session.commit()
    return record.label


def longest_record() -> str:
    """The record with the longest audit trail (queries, warnings, signatures included)."""
    return db.session.execute(
        select(Record.label)
        .join(AuditEvent, AuditEvent.record_id == Record.id)
        .group_by(Record.id, Record.label)
        .order_by(func.count(AuditEvent.id).desc(), Record.id)
        .limit(1)
    ).scalar_one()


def measure(client: FlaskClient, admin: User, record_label: str) -> dict[str, tuple[int, int]]:
    """(statements, rows shown) per page; rows prove the second round really shows more."""
    pages = {**PAGES, "record page": f"/records/{record_label}"}
    html = {}
    counts = {}
    for name, url in pages.items():
        counts[name], html[name] = page_statements(client, url)
    admin = db.session.merge(admin)
    rows = {
        "home": html["home"].count('class="card h-100"'),
        "record-status grid": html["record-status grid"].count('href="/records/SYN001-'),
        "site queries": html["site queries"].count("Please check ("),
        "review list": len(awaiting_signature(db.session, admin)),
        "record page": sum(html["record page"].count(f"<td>{via}</td>") for via in ("web", "synthetic")),
    }
    return {name: (counts[name], rows[name]) for name in pages}


@pytest.fixture
def admin_client(app: Flask) -> tuple[FlaskClient, User]:
    admin = create_user(db.session, "counter", "Count Admin", ADMIN_PASSWORD, study_role=StudyRole.ADMIN)
    db.session.commit()
    client = app.test_client()
    response = client.post("/login", data={"username": "counter", "password": ADMIN_PASSWORD})
    assert response.status_code == 302
    return client, admin


def test_list_pages_run_the_same_statements_for_3_and_30_rows(admin_client):
    client, admin = admin_client
    seed(sites=3, records=9, seed_value=1)  # SYN001..SYN003, 3 records each
    add_queries(admin, 3)
    small = measure(client, admin, short_record(admin))

    seed(sites=30, records=30, seed_value=2)  # 27 more sites; one more record at each site
    seed(sites=1, records=26, seed_value=3)  # SYN001 now has 30 records
    add_queries(admin, 27)
    large = measure(client, admin, longest_record())

    for name, (_, rows) in small.items():
        assert rows >= 1 and large[name][1] >= 3 * rows, f"{name}: {rows} vs {large[name][1]} rows do not test growth"
    grown = {name: (small[name][0], large[name][0]) for name in small if small[name][0] != large[name][0]}
    assert not grown, f"statements per page grew with the rows shown (N+1): {grown}"


def test_a_form_save_reads_nothing_after_its_commit(admin_client):
    """The save's transaction is the request's last database work: the response headers use
    the user loaded at the start, so the commit is not followed by loading the user again
    (which every request would pay, and which the save benchmark showed)."""
    client, _ = admin_client
    seed(sites=1, records=1, seed_value=4)
    label = db.session.scalar(select(Record.label))
    db.session.remove()
    with counting() as statements:
        event.listen(db.engine, "commit", commit := lambda conn: statements.append("COMMIT"))
        try:
            response = client.post(f"/records/{label}/calcium_exposure/new",
                                   data={"form_status": "0", "version": "0", "confirm_warnings": "y"})
        finally:
            event.remove(db.engine, "commit", commit)
    assert response.status_code == 302
    assert statements.count("COMMIT") == 1
    assert statements[-1] == "COMMIT", statements[statements.index("COMMIT") + 1:]
    assert any(s.startswith("INSERT INTO form_instance") for s in statements)
