"""Backup, more edits, restore: exactly the earlier state, with an intact audit chain."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.auth.models import User
from app.extensions import db
from app.records.models import FormInstance, Record
from app.records.services import Actor, Submission, save_form
from app.study import current_study


def snapshot() -> dict:
    db.session.expire_all()
    return {
        (label, f.instrument, f.instance): (f.data, f.missing, f.status, f.version)
        for f, label in db.session.execute(select(FormInstance, Record.label).join(Record))
    }


def test_backup_edit_restore(demo, tmp_path: Path):
    runner = demo.test_cli_runner()
    before = snapshot()
    target = tmp_path / "casebook.backup"
    result = runner.invoke(args=["backup", str(target)])
    assert result.exit_code == 0, result.output
    assert target.stat().st_size > 0 and "sha256" in result.output

    coordinator = Actor(db.session.scalar(select(User).where(User.username == "coordinator")))
    record = db.session.scalar(select(Record).where(Record.label == "KMU-0002"))
    save_form(db.session, current_study(), coordinator, record, "treatment", 1,
              Submission(values={"treatment_type": "3", "surgical_procedure": "Excision"}),
              expected_version=None, reason="Other: later edit")
    db.session.commit()
    assert snapshot() != before

    db.session.remove()
    result = runner.invoke(args=["restore", str(target), "--yes"])
    assert result.exit_code == 0, result.output
    assert "Audit trail intact" in result.output
    assert snapshot() == before
    report = verify_chain(db.session)
    assert report.ok
    assert db.session.scalar(select(AuditEvent.action).order_by(AuditEvent.id.desc()).limit(1)) == "restore"


def test_restore_refuses_a_file_that_is_not_a_backup(demo, tmp_path: Path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not a database")
    result = demo.test_cli_runner().invoke(args=["restore", str(bogus), "--yes"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert db.session.scalar(select(Record.label).where(Record.label == "KMU-0001")) == "KMU-0001"
