"""Counts for the home page: per site, records and forms by status (two grouped queries)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import Site
from app.records.models import FormInstance, Record
from app.review.models import DataQuery, QueryStatus


@dataclass(slots=True)
class SiteSummary:
    site: Site
    records: int = 0
    forms_by_status: dict[int, int] = field(default_factory=dict)
    open_queries: int = 0
    answered_queries: int = 0


def site_summaries(session: Session, sites: list[Site]) -> list[SiteSummary]:
    """Records and form-status counts for the given sites (already scoped by the caller)."""
    summaries = {s.id: SiteSummary(s) for s in sites}
    if not sites:
        return []
    ids = list(summaries)
    live = Record.deleted_at.is_(None)
    for site_id, count in session.execute(
        select(Record.site_id, func.count()).where(Record.site_id.in_(ids), live).group_by(Record.site_id)
    ):
        summaries[site_id].records = count
    by_status: dict[int, dict[int, int]] = defaultdict(dict)
    for site_id, status, count in session.execute(
        select(Record.site_id, FormInstance.status, func.count())
        .join(FormInstance, FormInstance.record_id == Record.id)
        .where(Record.site_id.in_(ids), live)
        .group_by(Record.site_id, FormInstance.status)
    ):
        by_status[site_id][status] = count
    for site_id, counts in by_status.items():
        summaries[site_id].forms_by_status = counts
    for site_id, status, count in session.execute(
        select(DataQuery.site_id, DataQuery.status, func.count())
        .join(Record, Record.id == DataQuery.record_id)
        .where(DataQuery.site_id.in_(ids), live, DataQuery.status != QueryStatus.CLOSED)
        .group_by(DataQuery.site_id, DataQuery.status)
    ):
        if status == QueryStatus.OPEN:
            summaries[site_id].open_queries = count
        else:
            summaries[site_id].answered_queries = count
    return list(summaries.values())
