"""Command-line administration: `flask sites ...`, `flask users ...`, `flask demo`, `flask study`.

Each command is one transaction: it commits once at the end or rolls back on error, and
reports a refused input as a one-line message (exit code 1), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from app.audit.services import verify_chain
from app.auth.models import Site, SiteRole, StudyRole, User
from app.auth.services import SiteGrant, create_site, create_user, set_password
from app.demo.services import DEMO_PASSWORD, DEMO_USERS, load_demo
from app.errors import CasebookError
from app.extensions import db
from app.study import current_study

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


@users_cli.command("list")
def users_list() -> None:
    for user in db.session.scalars(select(User).order_by(User.username)):
        roles = [user.study_role.value] if user.study_role else []
        roles += [f"{m.role.value}@{m.site.code}" for m in user.memberships]
        click.echo(f"{user.username}\t{user.full_name}\t{', '.join(roles)}\t{'active' if user.active else 'disabled'}")


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


def register_cli(app: Flask) -> None:
    for command in (sites_cli, users_cli, study_cli, audit_cli, demo_command):
        app.cli.add_command(command)
