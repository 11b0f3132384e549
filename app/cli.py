"""Command-line administration: `flask sites ...`, `flask users ...`, `flask demo`, `flask study`.

Each command is one transaction: it commits once at the end or rolls back on error, and
reports a refused input as a one-line message (exit code 1), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from app.api.tokens import issue_token, revoke_tokens
from app.audit.services import AuditEntry, append, verify_chain
from app.auth.models import Site, SiteRole, StudyRole, User
from app.auth.services import SiteGrant, create_site, create_user, set_password
from app.auth.totp import reset as reset_totp
from app.backup import BackupError, backup, restore
from app.demo.services import DEMO_PASSWORD, DEMO_USERS, load_demo
from app.dictionary.cli import dictionary_cli
from app.errors import CasebookError
from app.exports.cli import export_command
from app.extensions import db
from app.study import current_study
from app.synthetic.cli import seed_synthetic_command

ROLE_NAMES = [r.value for r in SiteRole] + [r.value for r in StudyRole]


@contextmanager
def transaction() -> Iterator[None]:
    """Commit once if the block succeeds; otherwise roll back and exit with the message."""
    try:
        yield
        db.session.commit()
    except CasebookError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from None
    except Exception:
        db.session.rollback()
        raise


sites_cli = AppGroup("sites", help="Create and list sites.")
users_cli = AppGroup("users", help="Create users, grant roles, set passwords.")
study_cli = AppGroup("study", help="Inspect the study definition.")
audit_cli = AppGroup("audit", help="Check the audit trail.")


@sites_cli.command("create")
@click.argument("code")
@click.argument("name")
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone, e.g. Asia/Seoul.")
def sites_create(code: str, name: str, timezone: str) -> None:
    """Create a site; CODE prefixes its record IDs (KMU -> KMU-0001)."""
    with transaction():
        site = create_site(db.session, code, name, timezone)
    click.echo(f"Created site {site.code}: {site.name}")


@sites_cli.command("list")
def sites_list() -> None:
    for site in db.session.scalars(select(Site).order_by(Site.code)):
        click.echo(f"{site.code}\t{site.name}\t{site.timezone}")


def _password_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--password", prompt=True, hide_input=True, confirmation_prompt=True,
        help="Prompted for when not given (recommended: keeps it out of shell history).",
    )(func)


@users_cli.command("create")
@click.argument("username")
@click.option("--role", "role", type=click.Choice(ROLE_NAMES), required=True)
@click.option("--site", "sites", multiple=True, help="Site code for a site role; repeat for several sites.")
@click.option("--name", "full_name", default="", help="Full name shown on signatures.")
@click.option("--email", default=None)
@_password_option
def users_create(
    username: str, role: str, sites: tuple[str, ...], full_name: str, email: str | None, password: str
) -> None:
    """Create a user with one role (site roles need --site)."""
    site_role = role in {r.value for r in SiteRole}
    if site_role and not sites:
        raise click.UsageError(f"--site is required for the {role} role.")
    if not site_role and sites:
        raise click.UsageError(f"{role} is a study-wide role; do not give --site.")
    with transaction():
        user = create_user(
            db.session, username, full_name or username, password,
            study_role=None if site_role else StudyRole(role),
            grants=[SiteGrant(code, SiteRole(role)) for code in sites],
            email=email,
        )
    where = f" at {', '.join(s.upper() for s in sites)}" if sites else ""
    click.echo(f"Created user {user.username} ({role}{where})")


@users_cli.command("set-password")
@click.argument("username")
@_password_option
def users_set_password(username: str, password: str) -> None:
    """Set a user's password; every session of that user ends."""
    with transaction():
        user = db.session.scalar(select(User).where(User.username == username.lower()))
        if user is None:
            raise click.ClickException(f"No user named {username}.")
        set_password(db.session, user, password, source="cli")
    click.echo(f"Password set for {user.username}.")


@users_cli.command("reset-2fa")
@click.argument("username")
def users_reset_2fa(username: str) -> None:
    """Turn off a user's two-factor log-in (lost phone); they can set it up again after logging in."""
    with transaction():
        user = db.session.scalar(select(User).where(User.username == username.lower()))
        if user is None:
            raise click.ClickException(f"No user named {username}.")
        had = reset_totp(db.session, user, by="cli", source="cli")
    click.echo(f"Two-factor log-in {'reset' if had else 'was not set up'} for {user.username}.")


@users_cli.command("list")
def users_list() -> None:
    for user in db.session.scalars(select(User).order_by(User.username)):
        roles = [user.study_role.value] if user.study_role else []
        roles += [f"{m.role.value}@{m.site.code}" for m in user.memberships]
        state = ("active" if user.active else "disabled") + (", 2fa" if user.totp_enabled else "")
        click.echo(f"{user.username}\t{user.full_name}\t{', '.join(roles)}\t{state}")


@users_cli.command("api-token")
@click.argument("username")
@click.option("--revoke", is_flag=True, help="Revoke the user's token instead of issuing a new one.")
def users_api_token(username: str, revoke: bool) -> None:
    """Issue a user's API token (printed once, only a hash is kept; a new token revokes the old one)."""
    with transaction():
        user = db.session.scalar(select(User).where(User.username == username.lower()))
        if user is None:
            raise click.ClickException(f"No user named {username}.")
        if not revoke and not user.active:
            raise click.ClickException(f"{user.username} is disabled and cannot have an API token.")
        if revoke:
            revoked = revoke_tokens(db.session, user, source="cli")
        else:
            token = issue_token(db.session, user, source="cli")
    if revoke:
        click.echo(f"Revoked {revoked} API token(s) of {user.username}.")
        return
    click.echo(f"API token for {user.username} (shown only now; any older token no longer works):", err=True)
    click.echo(token)


@study_cli.command("check")
def study_check() -> None:
    """Print a summary of the loaded definition (it was validated when the app started)."""
    study = current_study()
    click.echo(f"{study.name} ({study.id}), definition {study.definition_version}")
    for inst in study.instruments:
        kind = "repeatable" if inst.repeatable else "single"
        click.echo(f"  {inst.name}: {len(inst.data_fields)} fields, {kind}")
    click.echo(f"  missing-data codes: {', '.join(m.code for m in study.missing_codes)}")


@click.command("demo")
def demo_command() -> None:
    """Create demo sites and users and enter the three published cases (idempotent)."""
    with transaction():
        report = load_demo(db.session, current_study())
    for line in report:
        click.echo(line)
    click.echo("")
    click.echo(f"Demo log-ins (password for all: {DEMO_PASSWORD}):")
    for user in DEMO_USERS:
        click.echo(f"  {user.username:<14} {user.description}")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; report the first broken link (exit code 1 if any)."""
    report = verify_chain(db.session)
    if report.ok:
        click.echo(f"Audit trail intact: {report.checked} rows verified.")
        return
    where = f" at audit row {report.broken_at}" if report.broken_at is not None else ""
    raise click.ClickException(
        f"Audit trail BROKEN{where}: {report.problem} ({report.checked} rows verified before it)."
    )


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def backup_command(path: Path) -> None:
    """Write a consistent backup of the database to PATH (SQLite online backup; pg_dump)."""
    with transaction():
        append(db.session, [AuditEntry(action="backup", username="cli", new=str(path), source="cli")])
    try:
        digest = backup(db.engine, path)
    except BackupError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Backup written to {path} (sha256 {digest}).")


@click.command("restore")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def restore_command(path: Path, yes: bool) -> None:
    """Replace ALL data with the backup at PATH; the audit trail records the restore."""
    if not yes:
        click.confirm(f"Replace every record in the database with the backup {path}?", abort=True)
    db.session.remove()
    try:
        digest = restore(db.engine, path)
    except BackupError as exc:
        raise click.ClickException(exc.message) from None
    with transaction():
        append(db.session, [AuditEntry(action="restore", username="cli", new=str(path),
                                       reason=f"sha256 {digest}", source="cli")])
    report = verify_chain(db.session)
    click.echo(f"Restored from {path}. Audit trail {'intact' if report.ok else 'BROKEN'}: {report.checked} rows.")


def register_cli(app: Flask) -> None:
    for command in (sites_cli, users_cli, study_cli, audit_cli, demo_command, backup_command, restore_command,
                    dictionary_cli, export_command, seed_synthetic_command):
        app.cli.add_command(command)
