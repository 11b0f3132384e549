"""The administration commands: sites, users, passwords, the demo."""

from __future__ import annotations

from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.auth.models import Site, SiteRole, User
from app.auth.passwords import verify_password
from app.extensions import db
from app.records.models import Record


def test_create_site_and_users(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["sites", "create", "gosh", "Great Ormond Street", "--timezone", "Europe/London"])
    assert result.exit_code == 0, result.output
    assert "Created site GOSH" in result.output
    site = db.session.scalar(select(Site).where(Site.code == "GOSH"))
    assert site.timezone == "Europe/London"

    result = runner.invoke(args=["users", "create", "alice", "--role", "coordinator", "--site", "GOSH",
                                 "--name", "Alice Smith", "--password", "correct horse battery"])
    assert result.exit_code == 0, result.output
    alice = db.session.scalar(select(User).where(User.username == "alice"))
    assert [(m.site.code, m.role) for m in alice.memberships] == [("GOSH", SiteRole.COORDINATOR)]
    assert alice.password_hash.startswith("$argon2id$")
    assert verify_password(alice.password_hash, "correct horse battery")

    args = ["users", "create", "sam", "--role", "statistician", "--password", "tables and figures"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "sam\tsam\tstatistician" in runner.invoke(args=["users", "list"]).output


def test_refusals_are_one_line_messages_and_write_nothing(app):
    runner = app.test_cli_runner()
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    cases = [
        (["users", "create", "bob", "--role", "coordinator", "--password", "long enough pass"], "--site is required"),
        (["users", "create", "bob", "--role", "admin", "--site", "X", "--password", "long enough pass"],
         "study-wide role"),
        (["users", "create", "bob", "--role", "monitor", "--site", "NOPE", "--password", "long enough pass"],
         "No site with code NOPE"),
        (["users", "create", "bob", "--role", "admin", "--password", "short"], "at least 12 characters"),
        (["sites", "create", "K-M", "Bad code"], "2 to 12 letters or digits"),
        (["users", "set-password", "nobody", "--password", "long enough pass"], "No user named nobody"),
    ]
    for args, message in cases:
        result = runner.invoke(args=args)
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert db.session.scalar(select(func.count()).select_from(User)) == 0
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_set_password_ends_sessions(demo):
    user = db.session.scalar(select(User).where(User.username == "monitor"))
    token = user.session_token
    args = ["users", "set-password", "monitor", "--password", "a new passphrase here"]
    result = demo.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    db.session.refresh(user)
    assert user.session_token != token
    assert verify_password(user.password_hash, "a new passphrase here")


def test_demo_is_idempotent_and_prints_logins(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    for name in ("admin", "coordinator", "investigator", "monitor", "statistician"):
        assert f"  {name}" in first.output
    assert "demo-password-2026" in first.output
    assert "published case 3 entered as KMU-0003" in first.output
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0 and "demo data already present" in second.output
    assert db.session.scalar(select(func.count()).select_from(Record)) == 3


def test_study_check_summarises_the_definition(app):
    result = app.test_cli_runner().invoke(args=["study", "check"])
    assert result.exit_code == 0
    assert "calcium_exposure: 15 fields, repeatable" in result.output
    assert "missing-data codes: UNK, NR, NA, NASK" in result.output
