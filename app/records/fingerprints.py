"""What a site's saved forms look like right now, in a few numbers, and results remembered
until those numbers change.

The dashboards' completeness counts and the case-series analysis read every form of a
study; at 10,000 records that costs about a second, most of it JSON extraction in the
database. Their inputs change only when a form is saved, added or removed, so each
result is remembered together with a *fingerprint* of the forms it was computed from,
and reused while the fingerprint is the same.

A fingerprint is, per site and instrument over live records, (forms, sum of versions,
highest form id, latest save time). It changes whenever the data does: saving a form
raises its version (the ORM's optimistic-locking counter) and its save time, a new form
raises the count and the highest id (ids only grow), a removed form or a deleted record
lowers the count. The save time also tells apart databases that were emptied and refilled
(a restore, a test) and so reuse ids. Reading it is one grouped statement without any
JSON, a few milliseconds at 10,000 records.

The remembered results live in each process (a small LRU) and, for the dashboards, also in
the database (table remembered_result), so a process that has just started reads them rather
than computing them. That is safe with several processes serving one database: a process
never trusts what it remembers, it compares the fingerprint it just read from the database;
another process's save shows up there.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.auth.models import Site
from app.db import UPSERT
from app.records.models import FormInstance, Record, RememberedRow

T = TypeVar("T")
#: (forms, sum of their versions, highest form id, latest save) for one site's forms of one instrument.
Counts = tuple[int, int, int, Any]
NO_FORMS: Counts = (0, 0, 0, None)
#: Every RememberedResults made (a few, at import time), for `forget_all`.
_EVERY: list[RememberedResults[Any]] = []


class Fingerprints:
    """The fingerprints of the given sites' forms, read in one grouped statement (and their
    records in a second, only when `whole` asks for them)."""

    def __init__(self, session: Session, site_ids: Collection[int] | None) -> None:
        """`site_ids` None: every site."""
        self.session = session
        self.site_ids = None if site_ids is None else sorted(site_ids)
        stmt = (
            select(Record.site_id, FormInstance.instrument, func.count(),
                   func.coalesce(func.sum(FormInstance.version), 0), func.max(FormInstance.id),
                   func.max(FormInstance.updated_at))
            .join(Record, Record.id == FormInstance.record_id)
            .where(Record.deleted_at.is_(None))
            .group_by(Record.site_id, FormInstance.instrument)
        )
        if self.site_ids is not None:
            stmt = stmt.where(Record.site_id.in_(self.site_ids))
        self.counts: dict[tuple[int, str], Counts] = {}
        for site_id, instrument, forms, versions, highest, latest in session.execute(stmt):
            self.counts[(site_id, instrument)] = (int(forms), int(versions), int(highest), latest)

    def site(self, site_id: int, instruments: Collection[str]) -> tuple[Counts, ...]:
        """One site's fingerprint over the given instruments (in the order given)."""
        return tuple(self.counts.get((site_id, name), NO_FORMS) for name in instruments)

    def whole(self) -> tuple[Any, ...]:
        """Every site read: its code (a renamed site changes labels), its live records and
        highest record id (records without forms count too), and its forms."""
        stmt = (select(Record.site_id, Site.code, func.count(), func.max(Record.id))
                .join(Site, Site.id == Record.site_id).where(Record.deleted_at.is_(None))
                .group_by(Record.site_id, Site.code))
        if self.site_ids is not None:
            stmt = stmt.where(Record.site_id.in_(self.site_ids))
        records = sorted((site_id, code, int(n), int(highest))
                         for site_id, code, n, highest in self.session.execute(stmt))
        return (tuple(records), tuple(sorted(self.counts.items())))


def forget_all(session: Session | None = None) -> None:
    """Drop every remembered result of this process, as after a restart, and with a session
    the ones kept in the database too (the benchmarks measure first views with it)."""
    for remembered in _EVERY:
        remembered.clear()
    if session is not None:
        session.execute(delete(RememberedRow))


@dataclass(frozen=True, slots=True)
class Shared(Generic[T]):
    """How a RememberedResults keeps its results in the database for every process: under
    keys starting with `name`, as JSON (`encode`), read back with `decode`."""

    name: str
    encode: Callable[[T], Any]
    decode: Callable[[Any], T]


def _text(fingerprint: Hashable) -> str:
    """A fingerprint as the database keeps it (its times as ISO text)."""
    return json.dumps(fingerprint, default=str, separators=(",", ":"))


class RememberedResults(Generic[T]):
    """The most recently used results by key, each valid only for the fingerprint it was
    computed from. Thread-safe; a miss computes outside the lock (two threads may both
    compute the same result, and both are right). With `shared`, results are also kept in
    the database (table remembered_result), so a process that has just started reads what
    another computed; keys are then tuples of text and numbers."""

    def __init__(self, size: int, shared: Shared[T] | None = None) -> None:
        self.size = size
        self.shared = shared
        self.lock = threading.Lock()
        self.entries: OrderedDict[Hashable, tuple[Hashable, T]] = OrderedDict()
        _EVERY.append(self)

    def get(self, key: Hashable, fingerprint: Hashable) -> T | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry[0] != fingerprint:
                return None
            self.entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, fingerprint: Hashable, value: T) -> None:
        with self.lock:
            self.entries[key] = (fingerprint, value)
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def get_or_compute(self, key: Hashable, fingerprint: Hashable, compute: Callable[[], T]) -> T:
        value = self.get(key, fingerprint)
        if value is None:
            value = compute()
            self.put(key, fingerprint, value)
        return value

    def _row_key(self, key: Hashable) -> str:
        assert self.shared is not None
        return f"{self.shared.name}:{json.dumps(key, separators=(',', ':'))}"

    def get_many(self, session: Session, wanted: Mapping[Hashable, Hashable]) -> dict[Hashable, T]:
        """Of `wanted` (key -> fingerprint now), the results still valid: from this process's
        memory, else, when shared, from the database in one statement."""
        found: dict[Hashable, T] = {}
        for key, fingerprint in wanted.items():
            value = self.get(key, fingerprint)
            if value is not None:
                found[key] = value
        missing = {self._row_key(key): key for key in wanted if key not in found} if self.shared else {}
        if missing:
            assert self.shared is not None
            rows = session.execute(select(RememberedRow.key, RememberedRow.fingerprint, RememberedRow.value)
                                   .where(RememberedRow.key.in_(sorted(missing))))
            for row_key, fingerprint, stored in rows:
                key = missing[row_key]
                if fingerprint == _text(wanted[key]):
                    found[key] = self.shared.decode(stored)
                    self.put(key, wanted[key], found[key])
        return found

    def get_or_compute_many(self, session: Session, wanted: Mapping[Hashable, Hashable],
                            compute: Callable[[list[Hashable]], Mapping[Hashable, T]]) -> dict[Hashable, T]:
        """`wanted` (key -> fingerprint now): the results still valid (`get_many`), the others
        from one call of `compute` with their keys, remembered (`put_many`)."""
        found = self.get_many(session, wanted)
        missing = [key for key in wanted if key not in found]
        if missing:
            fresh = compute(missing)
            self.put_many(session, {key: (wanted[key], fresh[key]) for key in missing})
            found.update({key: fresh[key] for key in missing})
        return found

    def put_many(self, session: Session, fresh: Mapping[Hashable, tuple[Hashable, T]]) -> None:
        """Remember freshly computed results (key -> (fingerprint, value)); when shared, also in
        the database, in the caller's transaction (the request's single commit keeps them)."""
        for key, (fingerprint, value) in fresh.items():
            self.put(key, fingerprint, value)
        if not self.shared or not fresh:
            return
        rows = sorted(({"key": self._row_key(key), "fingerprint": _text(fingerprint),
                        "value": self.shared.encode(value)} for key, (fingerprint, value) in fresh.items()),
                      key=lambda row: row["key"])  # one order for every writer: no deadlock
        statement = UPSERT[session.get_bind().dialect.name](RememberedRow.__table__).values(rows)
        session.execute(statement.on_conflict_do_update(
            index_elements=["key"], set_={"fingerprint": statement.excluded.fingerprint,
                                          "value": statement.excluded.value}))
