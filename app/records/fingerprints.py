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

The remembered results live in each process (a small LRU). That is safe with several
processes serving one database: a process never trusts its own memory, it compares the
fingerprint it just read from the database; another process's save shows up there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Site
from app.records.models import FormInstance, Record

T = TypeVar("T")
#: (forms, sum of their versions, highest form id, latest save) for one site's forms of one instrument.
Counts = tuple[int, int, int, Any]
NO_FORMS: Counts = (0, 0, 0, None)
#: Every RememberedResults made (a few, at import time), for `forget_all`.
_EVERY: list[RememberedResults[Any]] = []


class Fingerprints:
    """The fingerprints of the given sites' records and forms, read in two grouped statements."""

    def __init__(self, session: Session, site_ids: Collection[int] | None) -> None:
        """`site_ids` None: every site."""
        stmt = (
            select(Record.site_id, FormInstance.instrument, func.count(),
                   func.coalesce(func.sum(FormInstance.version), 0), func.max(FormInstance.id),
                   func.max(FormInstance.updated_at))
            .join(Record, Record.id == FormInstance.record_id)
            .where(Record.deleted_at.is_(None))
            .group_by(Record.site_id, FormInstance.instrument)
        )
        records = (select(Record.site_id, Site.code, func.count(), func.max(Record.id))
                   .join(Site, Site.id == Record.site_id).where(Record.deleted_at.is_(None))
                   .group_by(Record.site_id, Site.code))
        if site_ids is not None:
            stmt = stmt.where(Record.site_id.in_(sorted(site_ids)))
            records = records.where(Record.site_id.in_(sorted(site_ids)))
        self.counts: dict[tuple[int, str], Counts] = {}
        for site_id, instrument, forms, versions, highest, latest in session.execute(stmt):
            self.counts[(site_id, instrument)] = (int(forms), int(versions), int(highest), latest)
        #: Site id -> (code, live records, highest record id): records without forms count too.
        self.records = {site_id: (code, int(n), int(highest)) for site_id, code, n, highest in session.execute(records)}

    def site(self, site_id: int, instruments: Collection[str]) -> tuple[Counts, ...]:
        """One site's fingerprint over the given instruments (in the order given)."""
        return tuple(self.counts.get((site_id, name), NO_FORMS) for name in instruments)

    def whole(self) -> tuple[Any, ...]:
        """Every site read: its code (a renamed site changes labels), records and forms."""
        return (tuple(sorted(self.records.items())), tuple(sorted(self.counts.items())))


def forget_all() -> None:
    """Drop every remembered result of this process, as after a restart (the benchmarks
    measure first views with it)."""
    for remembered in _EVERY:
        remembered.clear()


class RememberedResults(Generic[T]):
    """The most recently used results by key, each valid only for the fingerprint it was
    computed from. Thread-safe; a miss computes outside the lock (two threads may both
    compute the same result, and both are right)."""

    def __init__(self, size: int) -> None:
        self.size = size
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
