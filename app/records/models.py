"""Records and form instances: one row per (record, instrument, instance) with typed values.

This shape loads into pandas in one query and is what exports, the API and dashboards
read. Values are JSON keyed by field name; missing-data codes are kept apart from values
so that a coded "Not reported" is never confused with a blank or a real value.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import Site, User
from app.db import Base, JSONType, UTCDateTime, utcnow


class FormStatus(enum.IntEnum):
    """REDCap's form status codes, as its exports and API use them."""

    INCOMPLETE = 0
    UNVERIFIED = 1
    COMPLETE = 2

    @property
    def label(self) -> str:
        return self.name.capitalize()


class Record(Base):
    __tablename__ = "record"
    __table_args__ = (
        UniqueConstraint("site_id", "number"),
        # The record-status grid counts and pages a site's live records from this index alone.
        Index("ix_record_site_id_number_live", "site_id", "number",
              postgresql_where=text("deleted_at IS NULL"), sqlite_where=text("deleted_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    #: The record ID users see: site code and number, e.g. KMU-0001.
    label: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_reason: Mapped[str | None] = mapped_column(Text)
    #: Set when an investigator signs; no one can change the record until it is unlocked.
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    site: Mapped[Site] = relationship(lazy="joined")
    created_by: Mapped[User | None] = relationship()
    forms: Mapped[list[FormInstance]] = relationship(
        back_populates="record", order_by="(FormInstance.instrument, FormInstance.instance)"
    )


class FormInstance(Base):
    __tablename__ = "form_instance"
    __table_args__ = (
        UniqueConstraint("record_id", "instrument", "instance"),
        CheckConstraint("instance >= 1", name="instance_positive"),
        CheckConstraint("status in (0, 1, 2)", name="status_valid"),
        Index("ix_form_instance_instrument_status", "instrument", "status"),
        # Dashboard and review-list counts of form statuses per record, read from the index alone.
        Index("ix_form_instance_record_id_status", "record_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Indexed by the unique (record_id, instrument, instance), which it leads.
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id"))
    instrument: Mapped[str] = mapped_column(String(100))
    instance: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    missing: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    status: Mapped[int] = mapped_column(Integer, default=FormStatus.INCOMPLETE)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))

    record: Mapped[Record] = relationship(back_populates="forms")

    #: Optimistic concurrency: every UPDATE says WHERE version = <what was read>, so a
    #: second writer from the same starting version updates nothing and is refused.
    __mapper_args__ = {"version_id_col": version}

    @property
    def form_status(self) -> FormStatus:
        return FormStatus(self.status)


class RememberedRow(Base):
    """A result derived from the forms (a dashboard's totals), kept for every app process with
    the fingerprint of the forms it was computed from (see app.records.fingerprints): a process
    that has just started reads it instead of computing it again. A cache, never a source."""

    __tablename__ = "remembered_result"

    #: 64 bits on PostgreSQL, which draws a number for every upsert; SQLite's is its rowid.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONType)
