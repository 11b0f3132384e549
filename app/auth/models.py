"""Sites, users and their roles.

Site roles (coordinator, investigator, monitor) are held per site membership; study-wide
roles (statistician, admin) are a property of the user. Access rules live in
`app.auth.permissions`, not here.
"""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, Enum, ForeignKey, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow


class SiteRole(enum.StrEnum):
    COORDINATOR = "coordinator"
    INVESTIGATOR = "investigator"
    MONITOR = "monitor"


class StudyRole(enum.StrEnum):
    ADMIN = "admin"
    STATISTICIAN = "statistician"


class Site(Base):
    __tablename__ = "site"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: The last record number handed out; the next record is next_number + 1.
    last_record_number: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Site {self.code}>"


def _new_session_token() -> str:
    return secrets.token_hex(16)


class User(UserMixin, Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    study_role: Mapped[StudyRole | None] = mapped_column(
        Enum(StudyRole, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])
    )
    active: Mapped[bool] = mapped_column(default=True)
    #: Changing this token ends every session of the user on the server side (log-out,
    #: password change), because the session cookie carries it and must match.
    session_token: Mapped[str] = mapped_column(String(32), default=_new_session_token)
    #: TOTP two-factor (app.auth.totp): the secret encrypted (it must be recoverable to check
    #: a code), whether a first code confirmed it, and the time-step of the last accepted code
    #: so that a code is never accepted twice.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    totp_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )

    def get_id(self) -> str:
        return f"{self.id}:{self.session_token}"

    @property
    def is_active(self) -> bool:  # Flask-Login reads this
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.study_role == StudyRole.ADMIN

    @property
    def is_statistician(self) -> bool:
        return self.study_role == StudyRole.STATISTICIAN

    def end_all_sessions(self) -> None:
        self.session_token = _new_session_token()

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class Membership(Base):
    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_id", "site_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id", ondelete="CASCADE"), index=True)
    role: Mapped[SiteRole] = mapped_column(
        Enum(SiteRole, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])
    )

    user: Mapped[User] = relationship(back_populates="memberships")
    site: Mapped[Site] = relationship(lazy="joined")
