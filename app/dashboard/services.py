"""Counts for the home page and the dashboards, each a grouped query over every site asked for.

Every aggregate is a plain function of (session, site ids) so the page and the benchmarks
call the same code, and the number of statements never depends on the number of records or
sites: the site dashboard and the study dashboard run the same statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from matplotlib.axes import Axes
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.auth.models import Site
from app.charts import new_figure, series_style, to_svg
from app.dashboard.completeness import InstrumentQuality, study_quality
from app.records.fingerprints import Fingerprints, RememberedResults, Shared, forget_all
from app.records.models import FormInstance, FormStatus, Record
from app.review.models import DataQuery, QueryStatus
from app.review.services import awaiting_signature_counts
from app.study.definition import Study


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


def _month(session: Session, column: ColumnElement) -> ColumnElement[str]:
    """'YYYY-MM' of a UTC timestamp column (SQLite stores it as ISO text)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return func.substr(column, 1, 7)


def enrolment_by_month(session: Session, site_ids: Collection[int]) -> dict[int, dict[str, int]]:
    """Site id -> month ('YYYY-MM', UTC) -> live records created in that month."""
    month = _month(session, Record.created_at).label("month")
    rows = select(Record.site_id, month).where(Record.site_id.in_(list(site_ids)), Record.deleted_at.is_(None))
    sub = rows.subquery()
    result: dict[int, dict[str, int]] = defaultdict(dict)
    for site_id, name, count in session.execute(
        select(sub.c.site_id, sub.c.month, func.count()).group_by(sub.c.site_id, sub.c.month)
    ):
        result[site_id][name] = count
    return dict(result)


#: (study digest, site id) -> its form_status_by_record, valid while the site's forms are
#: unchanged; in this process and the database (JSON keys are text: statuses are read back as ints).
_STATUSES: RememberedResults[dict[str, dict[int, int]]] = RememberedResults(
    size=4096, shared=Shared("statuses", lambda by_form: by_form,
                             lambda stored: {name: {int(status): n for status, n in counts.items()}
                                             for name, counts in stored.items()}))


def remembered_form_status(session: Session, study: Study, site_ids: Collection[int],
                           fingerprints: Fingerprints) -> dict[int, dict[str, dict[int, int]]]:
    """`form_status_by_record`, counted again only for the sites whose forms changed."""
    names = [inst.name for inst in study.instruments]
    wanted = {(study.digest, site_id): fingerprints.site(site_id, names) for site_id in site_ids}

    def count(keys: list[Any]) -> dict[Any, dict[str, dict[int, int]]]:
        counted = form_status_by_record(session, [site_id for _, site_id in keys])
        return {(digest, site_id): counted.get(site_id, {}) for digest, site_id in keys}

    found = _STATUSES.get_or_compute_many(session, wanted, count)
    return {site_id: found[(study.digest, site_id)] for site_id in site_ids}


def form_status_by_record(session: Session, site_ids: Collection[int]) -> dict[int, dict[str, dict[int, int]]]:
    """Site id -> instrument -> status -> records whose least advanced instance has that status.

    The least advanced instance is what the record-status grid shows for a repeatable form,
    so these counts are the grid's, filtered by form and status.
    """
    worst = (
        select(Record.site_id, FormInstance.instrument, func.min(FormInstance.status).label("worst"))
        .join(Record, Record.id == FormInstance.record_id)
        .where(Record.site_id.in_(list(site_ids)), Record.deleted_at.is_(None))
        .group_by(Record.site_id, FormInstance.record_id, FormInstance.instrument)
        .subquery()
    )
    result: dict[int, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for site_id, instrument, status, count in session.execute(
        select(worst.c.site_id, worst.c.instrument, worst.c.worst, func.count())
        .group_by(worst.c.site_id, worst.c.instrument, worst.c.worst)
    ):
        result[site_id][instrument][status] = count
    return {site_id: dict(by_instrument) for site_id, by_instrument in result.items()}


@dataclass(frozen=True, slots=True)
class FormProgress:
    """One instrument at one site: records by the status the grid shows, and required fields."""

    instrument: str
    records: int
    by_status: dict[int, int]
    quality: InstrumentQuality

    @property
    def not_started(self) -> int:
        return self.records - sum(self.by_status.values())

    @property
    def complete(self) -> int:
        return self.by_status.get(FormStatus.COMPLETE, 0)

    @property
    def complete_share(self) -> float | None:
        return self.complete / self.records if self.records else None


@dataclass(frozen=True, slots=True)
class SiteDashboard:
    summary: SiteSummary
    #: Month ('YYYY-MM') -> records created, for every month from the first to the last.
    months: dict[str, int]
    forms: list[FormProgress]
    awaiting_signature: int
    #: Rule id -> hits over the site's forms (the rows of the site's data-quality report).
    rule_hits: dict[str, int]

    @property
    def site(self) -> Site:
        return self.summary.site

    @property
    def rule_hit_total(self) -> int:
        return sum(self.rule_hits.values())


def month_range(months: Collection[str]) -> list[str]:
    """Every month from the earliest to the latest given, so a chart's gaps are real zeros."""
    if not months:
        return []
    year, month = map(int, min(months).split("-"))
    last = max(months)
    result = []
    while (current := f"{year:04d}-{month:02d}") <= last:
        result.append(current)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return result


def site_dashboards(session: Session, study: Study, sites: list[Site]) -> list[SiteDashboard]:
    """Everything the site and study dashboards show, for the given (already scoped) sites.

    A fixed number of grouped statements (home-page counts, enrolment, form statuses,
    signatures, and one per instrument for required fields and rules), whatever the
    number of sites or records; form statuses and the per-instrument totals only for the
    sites whose forms changed since they were last counted (see app.records.fingerprints).
    """
    if not sites:
        return []
    ids = [s.id for s in sites]
    fingerprints = Fingerprints(session, ids)
    enrolment = enrolment_by_month(session, ids)
    statuses = remembered_form_status(session, study, ids, fingerprints)
    awaiting = awaiting_signature_counts(session, ids)
    quality = study_quality(session, study, ids, fingerprints)
    all_months = month_range({m for counts in enrolment.values() for m in counts})
    dashboards = []
    for summary in site_summaries(session, sites):
        site_id = summary.site.id
        per_form = [
            FormProgress(inst.name, summary.records, statuses.get(site_id, {}).get(inst.name, {}),
                         quality.get(site_id, {}).get(inst.name, InstrumentQuality()))
            for inst in study.instruments
        ]
        hits: dict[str, int] = {}
        for progress in per_form:
            hits.update(progress.quality.rule_hits)
        months = {m: enrolment.get(site_id, {}).get(m, 0) for m in all_months}
        dashboards.append(SiteDashboard(summary, months, per_form, awaiting.get(site_id, 0), hits))
    return dashboards


def cumulative_enrolment_svg(dashboard: SiteDashboard) -> str | None:
    """The site's records over time: a step line of cumulative records by month of creation."""
    if not dashboard.months:
        return None
    return _cumulative_svg(dashboard.site.code, tuple(dashboard.months.items()))


#: Drawing a chart costs more than the queries behind it, and the same counts give the same
#: picture: the last charts drawn are kept by their inputs (immutable tuples).
CHARTS_KEPT = 256


@lru_cache(maxsize=CHARTS_KEPT)
def _cumulative_svg(code: str, months: tuple[tuple[str, int], ...]) -> str:
    total, cumulative = 0, []
    for _, count in months:
        total += count
        cumulative.append(total)
    labels = [month for month, _ in months]
    figure, axes = new_figure(f"Records enrolled at {code}", "Month created (UTC)", "Records (cumulative)")
    axes.step(range(len(labels)), cumulative, where="mid", marker="o", **series_style(0))
    _month_axis(axes, labels)
    axes.set_ylim(bottom=0)
    alt = (f"Cumulative records at {code} by month: "
           + ", ".join(f"{m}: {n}" for m, n in zip(labels, cumulative, strict=True)) + ".")
    return to_svg(figure, alt)


def monthly_enrolment_svg(series: list[tuple[str, dict[str, int | None]]], note: str = "") -> str | None:
    """Records created per month, one line per site; None values (suppressed cells) are not drawn."""
    if not series or not series[0][1]:
        return None
    return _monthly_svg(tuple((name, tuple(counts.items())) for name, counts in series), note)


@lru_cache(maxsize=CHARTS_KEPT)
def _monthly_svg(series: tuple[tuple[str, tuple[tuple[str, int | None], ...]], ...], note: str) -> str:
    months = [month for month, _ in series[0][1]]
    figure, axes = new_figure("Records enrolled per site per month", "Month created (UTC)", "Records per month")
    for index, (name, counts) in enumerate(series):
        values = [float("nan") if n is None else n for _, n in counts]
        axes.plot(range(len(months)), values, marker="o", label=name, **series_style(index))
    _month_axis(axes, months)
    axes.set_ylim(bottom=0)
    axes.legend(title="Site", fontsize="small")
    described = "; ".join(
        f"{name}: " + ", ".join(f"{m} {'not shown' if n is None else n}" for m, n in counts)
        for name, counts in series
    )
    return to_svg(figure, f"Records per month by site. {described}.{(' ' + note) if note else ''}")


def forget_remembered(session: Session | None = None) -> None:
    """Drop every remembered total, analysis and chart of this process, as after a restart,
    and with a session the totals kept in the database too: the benchmarks measure first
    views with it."""
    forget_all(session)
    _cumulative_svg.cache_clear()
    _monthly_svg.cache_clear()


def _month_axis(axes: Axes, months: list[str]) -> None:
    step = max(1, len(months) // 12)
    ticks = list(range(0, len(months), step))
    axes.set_xticks(ticks, [months[i] for i in ticks], rotation=45, ha="right")


def all_sites(session: Session) -> list[Site]:
    """Every site, for the study-wide dashboard (admins and statisticians see the whole study)."""
    return list(session.scalars(select(Site).order_by(Site.code)))


@dataclass(frozen=True, slots=True)
class Disclosure:
    """How counts are shown: exactly, or with every count below k as '<k' (de-identified view).

    Zero is masked too: the pooled profile's disclosure rule names no exception for empty
    cells, and a 0 beside a '<3' would tell which small cells hold somebody.
    """

    k: int = 0

    def count(self, n: int) -> str:
        return f"<{self.k}" if n < self.k else str(n)

    def shows(self, n: int) -> bool:
        """Whether n (and a share computed over n) may be shown exactly."""
        return n >= self.k

    def value(self, n: int) -> int | None:
        """n for a chart, or None where it is masked (the chart leaves a gap)."""
        return n if self.shows(n) else None
