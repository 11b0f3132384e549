"""API tokens: issued per user, shown once, stored only as a SHA-256 hash.

A token is 32 upper-case hexadecimal characters, as REDCap's: PyCap refuses any other
length and REDCapR checks ``^[0-9A-Fa-f]{32}$``. A user has at most one live token;
issuing a new one revokes the old, so a leaked token is dealt with by regenerating it.
A token carries exactly its user's rights and sites, read afresh on every call, so a
change of role or a disabled account takes effect at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.api.models import ApiToken
from app.api.params import ApiError
from app.audit.services import AuditEntry, append
from app.auth.models import User
from app.db import utcnow

TOKEN_RE = re.compile(r"^[0-9A-Fa-f]{32}$")
#: Recording every use would make each read a write; once a minute is enough to see activity.
LAST_USED_RESOLUTION = timedelta(minutes=1)
NO_PERMISSION = "You do not have permissions to use the API"


def hash_token(token: str) -> str:
    """The stored form; upper-cased first because clients may send either case."""
    return hashlib.sha256(token.strip().upper().encode("ascii")).hexdigest()


def active_token(session: Session, user: User) -> ApiToken | None:
    """The user's live token (its dates only: the token itself is never stored)."""
    return session.scalar(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.id.desc()).limit(1)
    )


def revoke_tokens(session: Session, user: User, *, by: User | None = None, source: str = "web") -> int:
    """Revoke every live token of `user`; audited when there was one."""
    revoked = session.execute(
        update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    ).rowcount
    if revoked:
        actor = by or user
        append(session, [AuditEntry(action="api_token_revoked", user_id=actor.id, username=actor.username,
                                    field="user", old=user.username, source=source)])
    return revoked


def issue_token(session: Session, user: User, *, by: User | None = None, source: str = "web") -> str:
    """Create a new token for `user` (revoking the old one) and return it: the only time it is seen."""
    if not user.active:
        raise ApiError("This account is disabled.", 403)
    revoke_tokens(session, user, by=by, source=source)
    token = secrets.token_hex(16).upper()
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    actor = by or user
    append(session, [AuditEntry(action="api_token_created", user_id=actor.id, username=actor.username,
                                field="user", new=user.username, source=source)])
    return token


def authenticate(session: Session, token: str) -> User:
    """The active user a token belongs to; 403 with REDCap's words for anything else."""
    token = token.strip()
    if not TOKEN_RE.match(token):
        raise ApiError(NO_PERMISSION, 403)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None or not row.user.active:
        raise ApiError(NO_PERMISSION, 403)
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return row.user
