"""Reading the records to export: in batches by record id, never the whole study at once.

Rows are fetched as plain tuples (no ORM objects), so the session's identity map does
not grow with the study; keyset pagination on the primary key (`id > last ORDER BY id
LIMIT n`) keeps every batch query equally cheap on SQLite and PostgreSQL. Deleted
records are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, Select, Text, and_, cast, func, select
from sqlalchemy.orm import Session

from app.auth.models import Site
from app.records.models import FormInstance, Record
from app.runtime import collector_paused

BATCH_SIZE = 1000
#: A form's values and missing-data codes as the database's JSON text, decoded by `stored_json`.
DATA_TEXT = cast(FormInstance.data, Text).label("data")
MISSING_TEXT = cast(FormInstance.missing, Text).label("missing")


def stored_json(text: str | None) -> dict[str, Any]:
    """A form's JSON column read as text: most forms have no missing-data code, and skipping
    the decoder for their `{}` saves a tenth of a large export's time."""
    if text is None or text == "{}":
        return {}
    return orjson.loads(text)


class FormRow(NamedTuple):
    """One stored form instance: typed values, missing-data codes kept apart, status."""

    instrument: str
    instance: int
    data: dict[str, Any]
    missing: dict[str, str]
    status: int


@dataclass(slots=True)
class SourceRecord:
    id: int
    label: str
    site_code: str
    forms: dict[tuple[str, int], FormRow] = field(default_factory=dict)
    #: The same forms by instrument, in instance order.
    instances: dict[str, list[FormRow]] = field(default_factory=dict)


def _live(stmt: Select, site_ids: Collection[int] | None) -> Select:
    stmt = stmt.where(Record.deleted_at.is_(None))
    return stmt if site_ids is None else stmt.where(Record.site_id.in_(list(site_ids)))


def first_records(
    session: Session, site_ids: Collection[int] | None, instruments: Collection[str], limit: int
) -> list[SourceRecord]:
    """The first `limit` live records of the given sites (None: all), with the named forms."""
    connection = session.connection()
    return _read_batch(connection, _site_codes(connection), site_ids, instruments, 0, limit)


def each_batch(
    session: Session, site_ids: Collection[int] | None, instruments: Collection[str],
    handle: Callable[[list[SourceRecord]], object], batch_size: int = BATCH_SIZE,
) -> None:
    """`handle` every live record of the given sites (None: all) with the named forms, in
    record-id order, `batch_size` records at a time; the cyclic garbage collector is held off
    from a batch's reading until `handle` has returned and the batch is dropped.

    A batch of 1,000 records is tens of thousands of dicts, lists and tuples, and the rows made
    from it as many again; none is in a cycle, and all die by reference counting when the
    batch is done. Left to it, the collector would walk them while they are made and once per
    generation after (full collections too, since little else is in its sight once the
    loaded app is frozen): a tenth of an export's time, for nothing. Anything cyclic that
    `handle` makes waits for the collector's return, one batch later.
    """
    connection = session.connection()
    codes = _site_codes(connection)
    last_id = 0
    while True:
        with collector_paused():
            batch = _read_batch(connection, codes, site_ids, instruments, last_id, batch_size)
            if not batch:
                return
            last_id = batch[-1].id
            handle(batch)
            # Dropped while the collector is still off, so that nothing of it is left to walk.
            del batch


def _read_batch(
    connection: Connection, codes: dict[int, str], site_ids: Collection[int] | None,
    instruments: Collection[str], after_id: int, size: int,
) -> list[SourceRecord]:
    # Core, not the ORM session: these are plain column tuples, and the ORM's row
    # processing cost a tenth of a large export.
    heads = connection.execute(
        _live(select(Record.id, Record.label, Record.site_id), site_ids)
        .where(Record.id > after_id)
        .order_by(Record.id)
        .limit(size)
    )
    batch = {rid: SourceRecord(rid, label, codes[site_id]) for rid, label, site_id in heads}
    if batch and instruments:
        _read_forms(connection, batch, instruments)
    return list(batch.values())


def _read_forms(connection: Connection, batch: dict[int, SourceRecord], instruments: Collection[str]) -> None:
    """The batch's forms of the named instruments, decoded into its records."""
    rows = connection.execute(
        select(FormInstance.record_id, FormInstance.instrument, FormInstance.instance,
               DATA_TEXT, MISSING_TEXT, FormInstance.status)
        .where(FormInstance.record_id.in_(list(batch)), FormInstance.instrument.in_(list(instruments)))
        # Instances in order; the unique index's order, so SQLite does not sort.
        .order_by(FormInstance.record_id, FormInstance.instrument, FormInstance.instance)
    )
    new = tuple.__new__
    for record_id, instrument, instance, data, missing, status in rows.all():
        # Once per form of the export: the FormRow made as the tuple it is, without
        # NamedTuple's Python-level __new__.
        form = new(FormRow, (instrument, instance, stored_json(data), stored_json(missing), status))
        rec = batch[record_id]
        rec.forms[(instrument, instance)] = form
        rec.instances.setdefault(instrument, []).append(form)


def iter_first_forms(
    session: Session, site_ids: Collection[int] | None, instruments: Collection[str]
) -> Iterator[tuple[str, dict[tuple[str, int], FormRow]]]:
    """Each live record's site code and its instance 1 of each named instrument (keyed as in
    `SourceRecord.forms`), in record-id order: what the disclosure census reads, from one
    streamed statement and without building records (a third cheaper than reading batches)."""
    connection = session.connection()
    codes = _site_codes(connection)
    first = and_(FormInstance.record_id == Record.id, FormInstance.instrument.in_(sorted(instruments)),
                 FormInstance.instance == 1)
    stmt = _live(select(Record.id, Record.site_id, FormInstance.instrument, DATA_TEXT, MISSING_TEXT,
                        FormInstance.status).outerjoin(FormInstance, first), site_ids).order_by(Record.id)
    new = tuple.__new__
    last_id, site_code, forms = None, "", {}
    for record_id, site_id, instrument, data, missing, status in connection.execute(
            stmt.execution_options(yield_per=BATCH_SIZE)):
        if record_id != last_id:
            if last_id is not None:
                yield site_code, forms
            last_id, site_code, forms = record_id, codes[site_id], {}
        if instrument is not None:
            forms[(instrument, 1)] = new(FormRow, (instrument, 1, stored_json(data), stored_json(missing), status))
    if last_id is not None:
        yield site_code, forms


def _site_codes(connection: Connection) -> dict[int, str]:
    return {site_id: code for site_id, code in connection.execute(select(Site.id, Site.code))}


def count_records(session: Session, site_ids: Collection[int] | None) -> int:
    return session.scalar(_live(select(func.count(Record.id)), site_ids)) or 0


def site_counts(session: Session, site_ids: Collection[int] | None) -> list[tuple[str, int]]:
    """(site code, live records) for every site in scope that has records."""
    stmt = _live(select(Site.code, func.count(Record.id)).join(Site, Site.id == Record.site_id), site_ids)
    return [(code, n) for code, n in session.execute(stmt.group_by(Site.code).order_by(Site.code))]


def instance_counts(
    session: Session, site_ids: Collection[int] | None, instruments: Collection[str]
) -> dict[str, tuple[int, int]]:
    """Per instrument: (number of instances, largest instance number) over live records."""
    if not instruments:
        return {}
    stmt = _live(
        select(FormInstance.instrument, func.count(FormInstance.id), func.max(FormInstance.instance))
        .join(Record, Record.id == FormInstance.record_id)
        .where(FormInstance.instrument.in_(list(instruments))),
        site_ids,
    ).group_by(FormInstance.instrument)
    found = {name: (count, largest) for name, count, largest in session.execute(stmt)}
    return {name: found.get(name, (0, 0)) for name in instruments}
