"""Investigator sign-off (electronic signatures) and data queries."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, UTCDateTime, utcnow


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class SignatureMeaning(enum.StrEnum):
    REVIEWED = "reviewed"
    APPROVED = "approved"

    @property
    def label(self) -> str:
        return {"reviewed": "I have reviewed this record", "approved": "I approve this record"}[self.value]


class Signature(Base):
    """An electronic signature (21 CFR 11.50): printed name, date-time and meaning.

    A signature is never deleted; a later change to the record voids it (voided_at).
    """

    __tablename__ = "signature"
    __table_args__ = (Index("ix_signature_record_id_voided_at", "record_id", "voided_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[SignatureMeaning] = mapped_column(_enum(SignatureMeaning))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    void_reason: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship()


class QueryStatus(enum.StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    CLOSED = "closed"


class DataQuery(Base):
    """A question about one field of one form instance, raised by a monitor or investigator."""

    __tablename__ = "data_query"
    __table_args__ = (
        Index("ix_data_query_record_id_status", "record_id", "status"),
        Index("ix_data_query_site_id_status", "site_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    instrument: Mapped[str] = mapped_column(String(100))
    instance: Mapped[int] = mapped_column(Integer, default=1)
    field: Mapped[str] = mapped_column(String(100))
    status: Mapped[QueryStatus] = mapped_column(_enum(QueryStatus), default=QueryStatus.OPEN)
    raised_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    raised_by: Mapped[User] = relationship()
    messages: Mapped[list[QueryMessage]] = relationship(
        back_populates="query", order_by="QueryMessage.id", lazy="selectin"
    )


class QueryMessage(Base):
    """One step of a query's thread: raise, answer, close or reopen, with its text."""

    __tablename__ = "query_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("data_query.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    action: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    query: Mapped[DataQuery] = relationship(back_populates="messages")
    user: Mapped[User] = relationship(lazy="joined")
