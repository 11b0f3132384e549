"""Appending to, reading and verifying the hash-chained audit trail.

Every change to study data, and every security-relevant event, is appended here in the
same transaction as the change itself. Appends are serialised by locking the single
`audit_head` row (UPDATE ... RETURNING), which on SQLite also takes the write lock, so
the chain never forks under concurrent writers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent, AuditHead
from app.db import utcnow

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened; `old`/`new` are already encoded with `encode_cell`."""

    action: str
    user_id: int | None = None
    username: str | None = None
    site_id: int | None = None
    record_id: int | None = None
    record_label: str | None = None
    instrument: str | None = None
    instance: int | None = None
    field: str | None = None
    old: str | None = None
    new: str | None = None
    reason: str | None = None
    source: str = "web"


def encode_cell(value: Any, missing_code: str | None = None) -> str | None:
    """A field's state as audit text: JSON of the value, or {"missing": code}; None if blank."""
    if missing_code:
        return json.dumps({"missing": missing_code}, separators=(",", ":"))
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decode_cell(text: str | None) -> tuple[Any, str | None]:
    """Inverse of encode_cell: (value, missing_code)."""
    if text is None:
        return None, None
    decoded = json.loads(text)
    if isinstance(decoded, dict) and set(decoded) == {"missing"}:
        return None, decoded["missing"]
    return decoded, None


def _content(event: AuditEvent) -> list[Any]:
    return [
        event.occurred_at.isoformat(timespec="microseconds"),
        event.user_id, event.username, event.site_id, event.record_id, event.record_label,
        event.instrument, event.instance, event.field, event.old_value, event.new_value,
        event.action, event.reason, event.source,
    ]


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    payload = json.dumps([prev_hash, *_content(event)], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(session: Session, entries: Sequence[AuditEntry], *, when: datetime | None = None) -> list[AuditEvent]:
    """Add `entries` to the chain in the caller's transaction (flushes, never commits)."""
    if not entries:
        return []
    prev = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(count=AuditHead.count + len(entries))
        .returning(AuditHead.last_hash)
    ).scalar_one()
    occurred = when or utcnow()
    rows: list[AuditEvent] = []
    for entry in entries:
        row = AuditEvent(
            occurred_at=occurred, user_id=entry.user_id, username=entry.username,
            site_id=entry.site_id, record_id=entry.record_id, record_label=entry.record_label,
            instrument=entry.instrument, instance=entry.instance, field=entry.field,
            old_value=entry.old, new_value=entry.new, action=entry.action,
            reason=entry.reason, source=entry.source, prev_hash=prev,
        )
        row.hash = chain_hash(prev, row)
        prev = row.hash
        rows.append(row)
    session.add_all(rows)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=prev))
    session.flush()
    return rows


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _iter_events(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
        session.expunge_all()


def verify_chain(session: Session) -> ChainReport:
    """Walk the chain from the start; report the first row whose link or content is wrong."""
    prev = GENESIS_HASH
    checked = 0
    for event in _iter_events(session):
        if event.prev_hash != prev:
            return ChainReport(checked, event.id, "its link to the previous row does not match")
        if chain_hash(prev, event) != event.hash:
            return ChainReport(checked, event.id, "its content does not match its hash (altered)")
        prev = event.hash
        checked += 1
    head = session.get(AuditHead, 1)
    if head is not None and head.last_hash != prev:
        return ChainReport(checked, None, "rows are missing from the end of the chain")
    return ChainReport(checked)


#: Audit actions that set a field's value; replaying them rebuilds the data.
VALUE_ACTIONS = frozenset({"update", "clear_hidden", "calculate"})


@dataclass(slots=True)
class ReplayedForm:
    data: dict[str, Any]
    missing: dict[str, str]
    status: int | None = None


def replay(session: Session, record_id: int) -> dict[tuple[str, int], ReplayedForm]:
    """Rebuild a record's forms from its audit trail alone (ALCOA+: the trail is complete).

    An inspector can compare the result with the stored values; tests prove they agree.
    """
    forms: dict[tuple[str, int], ReplayedForm] = {}
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.record_id == record_id, AuditEvent.instrument.is_not(None))
        .order_by(AuditEvent.id)
    )
    for event in events:
        form = forms.setdefault((event.instrument, event.instance or 1), ReplayedForm({}, {}))
        if event.action == "status" and event.new_value is not None:
            form.status = int(event.new_value)
        elif event.action in VALUE_ACTIONS and event.field:
            value, code = decode_cell(event.new_value)
            form.data.pop(event.field, None)
            form.missing.pop(event.field, None)
            if code:
                form.missing[event.field] = code
            elif value is not None:
                form.data[event.field] = value
    return forms
