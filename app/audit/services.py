"""Appending to, reading and verifying the hash-chained audit trail.

Every change to study data, and every security-relevant event, is appended here in the
same transaction as the change itself. Appends are serialised by locking the single
`audit_head` row (UPDATE ... RETURNING), which on SQLite also takes the write lock, so
the chain never forks under concurrent writers.

Rows are inserted with one Core statement per append (COPY for large batches on
PostgreSQL), not as ORM objects: nothing reads them back in the same transaction, and
an ORM flush of a few hundred rows costs more than the change they describe. A caller
that saves many forms in one transaction (an API import) wraps them in `batched`, so
the whole call locks the head once and inserts its rows together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, String, Table, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent, AuditHead
from app.db import UTCDateTime, utcnow

GENESIS_HASH = "0" * 64
AUDIT_EVENT = cast(Table, AuditEvent.__table__)
#: The head as a Core table: its two UPDATEs per save skip the ORM's bulk-update bookkeeping.
AUDIT_HEAD = cast(Table, AuditHead.__table__)
AUDIT_COLUMNS = ("occurred_at", "user_id", "username", "site_id", "record_id", "record_label", "instrument",
                 "instance", "field", "old_value", "new_value", "action", "reason", "source", "prev_hash", "hash")
#: The statements of every append, built once: constructing them per save cost more than running them.
_LOCK_HEAD = (update(AUDIT_HEAD).where(AUDIT_HEAD.c.id == 1)
              .values(count=AUDIT_HEAD.c.count + bindparam("added", type_=Integer))
              .returning(AUDIT_HEAD.c.last_hash))
_MOVE_HEAD = update(AUDIT_HEAD).where(AUDIT_HEAD.c.id == 1).values(last_hash=bindparam("new_hash", type_=String))
_INSERT_EVENTS = insert(AUDIT_EVENT)


def _array_type(name: str) -> str:
    column_type = AUDIT_EVENT.c[name].type
    if isinstance(column_type, Integer):
        return "INTEGER[]"
    return "TIMESTAMPTZ[]" if isinstance(column_type, UTCDateTime) else "TEXT[]"


#: PostgreSQL: a save's few rows in one statement of one array per column (psycopg 3 would
#: send an executemany as one INSERT per row). Built from this module's constants only.
_INSERT_EVENTS_UNNEST = text(
    f"INSERT INTO audit_event ({', '.join(AUDIT_COLUMNS)}) SELECT * FROM unnest("  # noqa: S608
    + ", ".join(f"CAST(:{name} AS {_array_type(name)})" for name in AUDIT_COLUMNS) + ")"
)
#: From this many rows on, PostgreSQL gets them by COPY (one statement) instead of an INSERT per row.
COPY_FROM = 50
#: session.info key of the rows `batched` holds back until its block ends.
_HELD = "casebook_audit_held"


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


class AuditRow:
    """One audit_event row before insertion; `chain_hash` reads the same attributes as on a model."""

    __slots__ = AUDIT_COLUMNS

    def __init__(self, entry: AuditEntry, occurred_at: datetime | None = None) -> None:
        self.occurred_at = occurred_at
        self.user_id, self.username, self.source = entry.user_id, entry.username, entry.source
        self.site_id, self.record_id, self.record_label = entry.site_id, entry.record_id, entry.record_label
        self.instrument, self.instance, self.field = entry.instrument, entry.instance, entry.field
        self.old_value, self.new_value = entry.old, entry.new
        self.action, self.reason = entry.action, entry.reason

    def values(self) -> tuple[Any, ...]:
        """The row in AUDIT_COLUMNS order."""
        return (self.occurred_at, self.user_id, self.username, self.site_id, self.record_id, self.record_label,
                self.instrument, self.instance, self.field, self.old_value, self.new_value, self.action,
                self.reason, self.source, self.prev_hash, self.hash)


def append(session: Session, entries: Sequence[AuditEntry], *, when: datetime | None = None) -> None:
    """Add `entries` to the chain in the caller's transaction (never commits).

    Inside `batched` the rows are held and written when the block ends; otherwise now.
    """
    if not entries:
        return
    occurred = when or utcnow()
    rows = [AuditRow(entry, occurred) for entry in entries]
    held = session.info.get(_HELD)
    if held is not None:
        held.extend(rows)
    else:
        write_chained(session, rows)


def write_chained(session: Session, rows: Sequence[AuditRow]) -> None:
    """Lock the chain's head, hash `rows` onto it in order, insert them and move the head."""
    if not rows:
        return
    connection = session.connection()
    prev = connection.execute(_LOCK_HEAD, {"added": len(rows)}).scalar_one()
    for row in rows:
        row.prev_hash = prev
        row.hash = prev = chain_hash(prev, cast(AuditEvent, row))
    postgresql = connection.dialect.name == "postgresql"
    if postgresql and len(rows) >= COPY_FROM:
        # COPY streams many rows in one statement, in the session's transaction. The values
        # are the ones hashed (an aware UTC time, text and integers), so what is stored is
        # what the chain covers.
        columns = ", ".join(AUDIT_COLUMNS)
        with connection.connection.dbapi_connection.cursor() as cursor, \
                cursor.copy(f"COPY audit_event ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row.values())
    elif postgresql:
        columns = zip(*(row.values() for row in rows), strict=True)
        connection.execute(_INSERT_EVENTS_UNNEST, dict(zip(AUDIT_COLUMNS, map(list, columns), strict=True)))
    else:
        connection.execute(_INSERT_EVENTS, [dict(zip(AUDIT_COLUMNS, row.values(), strict=True)) for row in rows])
    connection.execute(_MOVE_HEAD, {"new_hash": prev})


@contextmanager
def batched(session: Session) -> Iterator[None]:
    """Hold every `append` inside the block and write the rows together when it ends.

    For one transaction that saves many forms: the chain's head is locked once (late, so
    concurrent writers wait less) and the rows go in one statement, in the order they were
    appended. If the block raises, the held rows are dropped with the transaction the
    caller rolls back. Nested blocks join the outer one.
    """
    if _HELD in session.info:
        yield
        return
    held: list[AuditRow] = []
    session.info[_HELD] = held
    try:
        yield
    finally:
        del session.info[_HELD]
    write_chained(session, held)


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
