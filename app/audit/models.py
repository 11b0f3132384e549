"""The append-only, hash-chained audit trail (21 CFR Part 11 §11.10(e))."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    """One append-only line of the audit trail.

    Rows are chained: `hash` is SHA-256 over the row's content and the previous row's
    hash, so any later edit of a row is detectable. The database refuses UPDATE and
    DELETE on this table (triggers created by the migration).
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_record_id_id", "record_id", "id"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
        # Every log-in counts the user's recent failures; without this it scans the whole trail.
        Index("ix_audit_event_username_action_occurred_at", "username", "action", "occurred_at"),
        # The audit page's action filter and its list of actions.
        Index("ix_audit_event_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    username: Mapped[str | None] = mapped_column(String(64))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), index=True)
    record_id: Mapped[int | None] = mapped_column(ForeignKey("record.id"))
    record_label: Mapped[str | None] = mapped_column(String(40))
    instrument: Mapped[str | None] = mapped_column(String(100))
    instance: Mapped[int | None] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(100))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), default="web")
    prev_hash: Mapped[str] = mapped_column(String(64))
    #: Not unique-indexed: the chain (prev_hash, the head's lock) is what makes it tamper-evident,
    #: and an index of random hashes costs a random page write per row on a growing trail.
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row holding the chain's last hash; locking it serialises appends to the chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=0)
