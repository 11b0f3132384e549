"""Log-in, lock-out, users and sites: the rules, with no knowledge of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.audit.services import AuditEntry, append
from app.auth.models import Membership, Site, SiteRole, StudyRole, User
from app.auth.passwords import hash_password, needs_rehash, policy_problem, verify_password
from app.db import utcnow
from app.errors import CasebookError, ValidationFailed

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
#: Never tell an attacker which half was wrong, nor whether the account exists.
BAD_LOGIN = "Unknown user name or wrong password."


class LoginRefused(CasebookError):
    pass


def _recent_failures(session: Session, username: str) -> int:
    since = utcnow() - LOCKOUT_WINDOW
    last_success = session.scalar(
        select(func.max(AuditEvent.occurred_at)).where(
            AuditEvent.username == username, AuditEvent.action == "login"
        )
    )
    if last_success and last_success > since:
        since = last_success
    return session.scalar(
        select(func.count()).where(
            AuditEvent.username == username, AuditEvent.action == "login_failed", AuditEvent.occurred_at > since
        )
    ) or 0


def check_lockout(session: Session, username: str, user: User | None, source: str) -> None:
    """Refuse (and audit) any log-in step while the account is locked."""
    if _recent_failures(session, username) >= LOCKOUT_FAILURES:
        append(session, [AuditEntry(action="login_locked", username=username[:64], source=source,
                                    user_id=user.id if user else None)])
        raise LoginRefused(
            "Too many failed log-ins: this account is locked for 15 minutes. "
            "Ask your data manager if you have forgotten your password."
        )


def record_failure(session: Session, username: str, user: User | None, source: str, reason: str | None = None) -> None:
    """A failed password or two-factor code: both count toward the lock-out."""
    append(session, [AuditEntry(action="login_failed", username=username[:64], source=source, reason=reason,
                                user_id=user.id if user else None)])


def record_login(session: Session, user: User, source: str) -> None:
    append(session, [AuditEntry(action="login", user_id=user.id, username=user.username, source=source)])


def check_password(session: Session, username: str, password: str, *, source: str = "web") -> User:
    """The first log-in step: lock-out, then the password (failures audited); upgrades an old hash.

    Success is not audited here: the log-in is complete only after `record_login`, which a
    user with two-factor reaches only once their code is right.
    """
    username = username.strip().lower()
    user = session.scalar(select(User).where(User.username == username))
    check_lockout(session, username, user, source)
    if user is None or not user.active or not verify_password(user.password_hash, password):
        record_failure(session, username, user, source)
        raise LoginRefused(BAD_LOGIN)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def record_logout(session: Session, user: User) -> None:
    """Audit the log-out and end every session of the user on the server side."""
    user.end_all_sessions()
    append(session, [AuditEntry(action="logout", user_id=user.id, username=user.username)])


def set_password(session: Session, user: User, password: str, *, by: User | None = None, source: str = "web") -> None:
    problem = policy_problem(password, user.username)
    if problem:
        raise ValidationFailed({"password": problem}, problem)
    user.password_hash = hash_password(password)
    user.end_all_sessions()
    actor = by or user
    append(session, [AuditEntry(action="password_changed", user_id=actor.id, username=actor.username,
                                field="user", new=user.username, source=source)])


@dataclass(frozen=True, slots=True)
class SiteGrant:
    site_code: str
    role: SiteRole


def create_site(session: Session, code: str, name: str, timezone: str = "UTC", *, by: str = "cli") -> Site:
    code = code.strip().upper()
    if not code.isalnum() or not 2 <= len(code) <= 12:
        message = f"Site code '{code}' must be 2 to 12 letters or digits."
        raise ValidationFailed({"code": "Use 2 to 12 letters or digits."}, message)
    if session.scalar(select(Site).where(Site.code == code)):
        raise ValidationFailed({"code": "already exists"}, f"A site with code {code} already exists.")
    site = Site(code=code, name=name.strip(), timezone=timezone)
    session.add(site)
    session.flush()
    append(session, [AuditEntry(action="site_created", site_id=site.id, username=by, new=code, source="cli")])
    return site


def create_user(
    session: Session, username: str, full_name: str, password: str, *,
    study_role: StudyRole | None = None, grants: list[SiteGrant] | None = None,
    email: str | None = None, by: str = "cli",
) -> User:
    username = username.strip().lower()
    if not username or not username.replace("_", "").replace(".", "").replace("-", "").isalnum() or len(username) > 64:
        message = f"'{username}' is not a valid user name."
        raise ValidationFailed({"username": "Use letters, digits, '.', '-' or '_' (at most 64)."}, message)
    if session.scalar(select(User).where(User.username == username)):
        raise ValidationFailed({"username": "already taken"}, f"A user named {username} already exists.")
    problem = policy_problem(password, username)
    if problem:
        raise ValidationFailed({"password": problem}, problem)
    user = User(username=username, full_name=full_name.strip() or username, email=email,
                password_hash=hash_password(password), study_role=study_role)
    session.add(user)
    session.flush()
    entries = [AuditEntry(action="user_created", user_id=user.id, username=by, field="user", new=username,
                          reason=study_role.value if study_role else None, source="cli")]
    for grant in grants or []:
        site = session.scalar(select(Site).where(Site.code == grant.site_code.upper()))
        if site is None:
            raise ValidationFailed({"site": "unknown"}, f"No site with code {grant.site_code}.")
        session.add(Membership(user_id=user.id, site_id=site.id, role=grant.role))
        entries.append(AuditEntry(action="role_granted", user_id=user.id, username=by, site_id=site.id,
                                  field="role", new=grant.role.value, source="cli"))
    session.flush()
    session.refresh(user)
    append(session, entries)
    return user
