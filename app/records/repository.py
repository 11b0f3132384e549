"""The one way to read records: every query is scoped to the sites the user may see.

Views never load a record by a raw id; they ask this repository, which answers
NotFoundError for a record that does not exist *and* for one at another site, so a
user cannot even learn that another site's record exists.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.models import Site, User
from app.auth.permissions import Action, site_ids_for
from app.errors import NotFoundError
from app.records.models import FormInstance, Record
from app.review.models import DataQuery, QueryStatus

#: The grid's form-status filter (`?form=X&status=...`): the status its cell shows, or not started.
STATUS_FILTERS: dict[str, int | None] = {"incomplete": 0, "unverified": 1, "complete": 2, "none": None}
#: Labels per IN (...) list in `by_labels` (well below every database's parameter limit).
LABEL_BATCH = 500


@dataclass(frozen=True, slots=True)
class FormSummary:
    instrument: str
    instance: int
    status: int


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: Sequence[Record]
    forms: dict[int, list[FormSummary]]
    total: int
    page: int
    per_page: int
    #: Open data queries per record id (records without any are absent).
    open_queries: dict[int, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


class RecordRepository:
    def __init__(self, session: Session, user: User) -> None:
        self.session = session
        self.user = user

    def _scoped(self, stmt: Select, action: Action = Action.VIEW) -> Select:
        allowed = site_ids_for(self.user, action)
        stmt = stmt.where(Record.deleted_at.is_(None))
        if allowed is None:
            return stmt
        return stmt.where(Record.site_id.in_(allowed))

    def sites(self, action: Action = Action.VIEW) -> list[Site]:
        """The sites the user may act on, by code."""
        allowed = site_ids_for(self.user, action)
        stmt = select(Site).order_by(Site.code)
        if allowed is not None:
            stmt = stmt.where(Site.id.in_(allowed))
        return list(self.session.scalars(stmt))

    def site(self, code: str, action: Action = Action.VIEW) -> Site:
        for site in self.sites(action):
            if site.code == code:
                return site
        raise NotFoundError("No such site.")

    def get(self, label: str, action: Action = Action.VIEW) -> Record:
        record = self.session.scalar(self._scoped(select(Record).where(Record.label == label), action))
        if record is None:
            raise NotFoundError("No such record.")
        return record

    def by_labels(self, labels: Sequence[str], action: Action = Action.VIEW) -> dict[str, Record]:
        """`get` for many record IDs at once (an import): the ones found, by label; absent ones are left out."""
        found: dict[str, Record] = {}
        for start in range(0, len(labels), LABEL_BATCH):
            chunk = labels[start:start + LABEL_BATCH]
            found.update((r.label, r) for r in self.session.scalars(
                self._scoped(select(Record).where(Record.label.in_(chunk)), action)
            ))
        return found

    def forms(self, record: Record) -> list[FormInstance]:
        """All form instances of a record the caller already obtained through `get`."""
        return list(
            self.session.scalars(
                select(FormInstance)
                .where(FormInstance.record_id == record.id)
                .order_by(FormInstance.instrument, FormInstance.instance)
            )
        )

    def form(self, record: Record, instrument: str, instance: int) -> FormInstance | None:
        return self.session.scalar(
            select(FormInstance).where(
                FormInstance.record_id == record.id,
                FormInstance.instrument == instrument,
                FormInstance.instance == instance,
            )
        )

    def page(self, site: Site, *, search: str = "", page: int = 1, per_page: int = 50,
             form_status: tuple[str, int | None] | None = None) -> RecordPage:
        """One page of a site's record-status grid: two queries whatever the page size.

        `form_status` (instrument, status) keeps the records whose least advanced instance of
        that form has the status, as the grid's cell shows it; status None: form not started.
        """
        stmt = self._scoped(select(Record).where(Record.site_id == site.id))
        if search:
            escaped = search.strip().upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(Record.label.like(f"%{escaped}%", escape="\\"))
        if form_status is not None:
            stmt = stmt.where(_form_status_filter(*form_status))
        total = self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        page = max(1, page)
        records = list(
            self.session.scalars(stmt.order_by(Record.number).offset((page - 1) * per_page).limit(per_page))
        )
        forms: dict[int, list[FormSummary]] = defaultdict(list)
        if records:
            rows = self.session.execute(
                select(FormInstance.record_id, FormInstance.instrument, FormInstance.instance, FormInstance.status)
                .where(FormInstance.record_id.in_([r.id for r in records]))
                .order_by(FormInstance.record_id, FormInstance.instrument, FormInstance.instance)
            )
            for record_id, instrument, instance, status in rows:
                forms[record_id].append(FormSummary(instrument, instance, status))
            counts = self.session.execute(
                select(DataQuery.record_id, func.count())
                .where(DataQuery.record_id.in_([r.id for r in records]), DataQuery.status == QueryStatus.OPEN)
                .group_by(DataQuery.record_id)
            )
            open_queries = {record_id: count for record_id, count in counts}
        else:
            open_queries = {}
        return RecordPage(records, dict(forms), total, page, per_page, open_queries)

    def audit(self, record: Record, limit: int = 500) -> list[AuditEvent]:
        """The record's audit trail, newest first (the record was already scoped by `get`)."""
        return list(
            self.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.record_id == record.id)
                .order_by(AuditEvent.id.desc())
                .limit(limit)
            )
        )

    def queries(self, record: Record) -> list[DataQuery]:
        """All data queries of a record (already scoped by `get`), oldest first."""
        return list(self.session.scalars(
            select(DataQuery).where(DataQuery.record_id == record.id).order_by(DataQuery.id)
        ))

    def query(self, record: Record, query_id: int) -> DataQuery:
        found = self.session.scalar(
            select(DataQuery).where(DataQuery.id == query_id, DataQuery.record_id == record.id)
        )
        if found is None:
            raise NotFoundError("No such query.")
        return found

    def site_queries(self, site: Site, status: QueryStatus | None) -> list[tuple[DataQuery, str]]:
        """A site's queries with their record IDs (the site came from `site`, so it is scoped)."""
        stmt = (
            select(DataQuery, Record.label)
            .join(Record, Record.id == DataQuery.record_id)
            .where(DataQuery.site_id == site.id, Record.deleted_at.is_(None))
            .order_by(DataQuery.updated_at.desc())
        )
        if status is not None:
            stmt = stmt.where(DataQuery.status == status)
        return [(q, label) for q, label in self.session.execute(stmt)]

    def deleted(self) -> list[Record]:
        """Soft-deleted records, for an admin to review or restore."""
        if not self.user.is_admin:
            return []
        return list(self.session.scalars(
            select(Record).where(Record.deleted_at.is_not(None)).order_by(Record.deleted_at.desc())
        ))

    def get_deleted(self, label: str) -> Record:
        for record in self.deleted():
            if record.label == label:
                return record
        raise NotFoundError("No such deleted record.")


def _form_status_filter(instrument: str, status: int | None) -> ColumnElement[bool]:
    def instances(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
        return select(FormInstance.id).where(
            FormInstance.record_id == Record.id, FormInstance.instrument == instrument, *conditions
        ).exists()

    if status is None:
        return ~instances()
    return instances(FormInstance.status == status) & ~instances(FormInstance.status < status)
