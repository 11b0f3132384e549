"""Migrations are the only way the schema is made: one head, up from empty and back down,
on SQLite and PostgreSQL; the audit trail refuses UPDATE and DELETE in the database."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DatabaseError

from app.audit.models import AuditEvent
from app.extensions import db


def test_single_head(app):
    script = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config())
    assert len(script.get_heads()) == 1


def test_upgrade_created_every_model_table(app):
    tables = set(inspect(db.engine).get_table_names())
    assert {t.name for t in db.metadata.sorted_tables} <= tables
    assert "alembic_version" in tables


def test_the_migrated_schema_is_what_the_models_declare(app):
    """A model change without its migration (or the reverse) shows up here, not in production."""
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), db.metadata) == []


def _audit_refuses(statement: str, event_id: int) -> None:
    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text(statement), {"id": event_id})
        db.session.flush()
    db.session.rollback()


def test_dropping_the_audit_hash_index_keeps_the_rows_and_the_append_only_guard(demo):
    """0009 rebuilds audit_event on SQLite: every row and both triggers must survive, both ways."""
    before = db.session.execute(select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id)).all()
    db.session.remove()
    downgrade(revision="0008")
    db.session.remove()
    assert [u["column_names"] for u in inspect(db.engine).get_unique_constraints("audit_event")] == [["hash"]]
    upgrade()
    db.session.remove()
    assert inspect(db.engine).get_unique_constraints("audit_event") == []
    assert db.session.execute(select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id)).all() == before
    _audit_refuses("UPDATE audit_event SET new_value = 'tampered' WHERE id = :id", before[0].id)
    _audit_refuses("DELETE FROM audit_event WHERE id = :id", before[-1].id)


def test_downgrade_to_empty_and_up_again(app):
    downgrade(revision="base")
    db.session.remove()
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    upgrade()
    db.session.remove()
    assert "audit_event" in inspect(db.engine).get_table_names()
    assert db.session.execute(text("SELECT count FROM audit_head WHERE id = 1")).scalar_one() == 0


@pytest.mark.parametrize("statement", [
    "UPDATE audit_event SET new_value = 'tampered' WHERE id = :id",
    "DELETE FROM audit_event WHERE id = :id",
])
def test_audit_rows_cannot_be_changed_by_raw_sql(demo, statement):
    first = db.session.scalar(select(AuditEvent.id).order_by(AuditEvent.id).limit(1))
    _audit_refuses(statement, first)
    assert db.session.get(AuditEvent, first).new_value != "tampered"
