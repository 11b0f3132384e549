"""The case-series analysis: the published series' Table 1 and outcome, computed from live data.

One analysis serves three readers. The web page reads the form instances a user may see
(site roles: their own sites; statisticians and admins: every site pooled) in one query;
the `pooled_case_series` export bundle's `analysis.html` reads the bundle's own
de-identified Parquet tables, so the document describes exactly the rows shipped beside
it. Both are first turned into the same neutral shape (app.analysis.data), which is why the
statistics below never see a calendar date, a record ID or an identifier; the fields they
read are named in app.analysis.fields.
"""

from __future__ import annotations

import base64
import itertools
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flask import render_template
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times
from matplotlib.figure import Figure
from sqlalchemy import Row as ResultRow
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from app.analysis.data import CHUNK_CASES, CaseData, case_data_from_bundle, case_data_from_rows, code_label
from app.analysis.fields import (
    ALL_SITES,
    CALCIFICATION_SIZE,
    CONCENTRATION,
    CONFIDENTIAL,
    DRUG,
    IMAGED,
    NO_VALUE,
    NOT_ENTERED,
    OUTCOME_FIELDS,
    RESOLVED,
    STREAM_ROWS,
    TABLE1,
    TIME_TO_RESOLUTION,
    YES,
    read_fields,
)
from app.analysis.tally import ALL_CASES, RowKey, Tally, number_text, quantiles
from app.auth.models import Site, User
from app.auth.permissions import Action, site_ids_for
from app.charts import new_figure, rasterized, series_style, to_png, to_svg
from app.errors import NotFoundError, PermissionDenied
from app.exports.plan import Plan
from app.exports.profiles import Profile
from app.exports.pseudonyms import Pseudonymiser
from app.exports.source import DATA_TEXT, MISSING_TEXT, stored_json
from app.records.fingerprints import Fingerprints, RememberedResults
from app.records.models import FormInstance, Record
from app.runtime import collector_paused
from app.study.definition import Field, Study

# -- who sees what ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audience:
    """How the numbers are shown. `k`: counts below k appear as `<k` (None: exact numbers);
    `sites`: how sites are named ('code', 'pseudonym', or 'drop' for pooled only)."""

    k: int | None = None
    sites: str = "code"
    description: str = ""

    def count(self, n: int) -> str:
        return f"<{self.k}" if self.hides(n) else str(n)

    def hides(self, n: int) -> bool:
        """Zero included: an empty cell beside a full one says something about every case."""
        return self.k is not None and n < self.k


def audience_for(user: User, profiles: Collection[Profile]) -> Audience:
    """Statisticians see what the de-identified pooled export profile lets out (its k and its site
    rule, the strictest if there are several); everyone else sees exact numbers of their sites."""
    if not user.is_statistician:
        return Audience(description="exact counts")
    pooled = [p for p in profiles if p.deidentified and not p.per_site]
    if not pooled:
        raise PermissionDenied("No de-identified export profile defines what a statistician may see.")
    k = max((p.disclosure.k for p in pooled if p.disclosure), default=None)
    strictness = ("code", "pseudonym", "drop")
    sites = max((p.site for p in pooled), key=strictness.index)
    shown = (f"counts below {k} shown as <{k}, and [c] for counts hidden so that no <{k} can be worked out "
             f"from the totals beside it") if k else "exact counts"
    return Audience(k=k, sites=sites, description=f"de-identified: {shown}")


def _visible_site_ids(user: User) -> set[int] | None:
    """Every site for admins and statisticians (aggregates only for the latter); a site role's own
    sites otherwise. Nobody else has anything to analyse."""
    if user.is_admin or user.is_statistician:
        return None
    allowed = site_ids_for(user, Action.VIEW) or set()
    if not allowed:
        raise PermissionDenied("You have no site to analyse.")
    return allowed


def load_case_data(session: Session, study: Study, user: User, audience: Audience,
                   pseudonyms: Pseudonymiser) -> Iterator[CaseData]:
    """The cases `user` may see, CHUNK_CASES at a time with all their forms, from one streamed
    query over records and the form instances the analysis reads (deleted records never count).
    Statisticians get record ids as keys, never labels."""
    allowed = _visible_site_ids(user)
    read = read_fields(study)
    join = and_(FormInstance.record_id == Record.id, FormInstance.instrument.in_(sorted(read)))
    stmt = (select(Record.id, Site.code, FormInstance.instrument, FormInstance.instance, DATA_TEXT, MISSING_TEXT)
            .join(Site, Site.id == Record.site_id).outerjoin(FormInstance, join)
            .where(Record.deleted_at.is_(None)).order_by(Record.id))
    if allowed is not None:
        stmt = stmt.where(Record.site_id.in_(sorted(allowed)))

    def site_label(code: str) -> str:
        if audience.sites == "pseudonym":
            return pseudonyms.site(code)
        return ALL_SITES if audience.sites == "drop" else code

    def kept(text: str | None, fields: list[str]) -> dict[str, Any]:
        found = stored_json(text)
        return {name: found[name] for name in fields if name in found}

    def chunk(first: ResultRow[Any], rest: Iterator[ResultRow[Any]]) -> tuple[CaseData, ResultRow[Any] | None]:
        """CHUNK_CASES cases from `first` on, and the first row past them (None: no more). Rows
        come in record order, so a record's forms are together: a chunk ends between records."""
        cases: dict[int, str] = {}
        forms: list[tuple[Any, str, int, dict[str, Any], dict[str, str]]] = []
        after = None
        for row in itertools.chain((first,), rest):
            record_id, code, instrument, instance, data, missing = row
            if record_id not in cases:
                if len(cases) == CHUNK_CASES:
                    after = row
                    break
                cases[record_id] = site_label(code)
            if instrument is not None:
                fields = read[instrument]
                forms.append((record_id, instrument, instance, kept(data, fields), kept(missing, fields)))
        order = () if audience.sites == "drop" else tuple(sorted(set(cases.values())))
        return case_data_from_rows(study, cases.items(), forms, order), after

    # Core, not the ORM session: plain column tuples (the ORM's row processing was a fifth of
    # the page's time at 100,000 records).
    rows = iter(session.connection().execute(stmt.execution_options(yield_per=STREAM_ROWS)))
    row = next(rows, None)
    while row is not None:
        # A chunk's rows, dicts and tuples are acyclic and gone once it is counted: read and
        # built with the collector held off, not walked again and again (never across a yield).
        with collector_paused():
            data, row = chunk(row, rows)
        yield data


# -- the analysis ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    cells: tuple[str, ...] = ()
    #: A variable's heading (its label and units); its value rows follow.
    heading: bool = False
    #: A section's heading (a group of variables), above the variables' headings.
    section: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class Chart:
    """A plot: built on demand (a download builds only its own) with its text alternative,
    and drawn once per format (a remembered analysis serves the page and its downloads)."""

    name: str
    title: str
    alt: str
    build: Callable[[], Figure]
    note: str = ""
    drawn: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def svg(self) -> str:
        if "svg" not in self.drawn:
            self.drawn["svg"] = to_svg(self.build(), self.alt)
        return self.drawn["svg"]

    def svg_data_uri(self) -> str:
        """For <img src>: the page's CSP forbids the inline styles an inline SVG carries."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg().encode("utf-8")).decode("ascii")

    def png(self) -> bytes:
        if "png" not in self.drawn:
            self.drawn["png"] = to_png(self.build())
        return self.drawn["png"]


@dataclass(frozen=True, slots=True)
class Analysis:
    audience: Audience
    key_figures: tuple[tuple[str, str], ...]
    tables: tuple[Table, ...]
    charts: tuple[Chart, ...]
    notes: tuple[str, ...] = ()

    def chart(self, name: str) -> Chart:
        for chart in self.charts:
            if chart.name == name:
                return chart
        raise NotFoundError("No such plot.")


def _heading(f: Field) -> Row:
    return Row(f"{f.label} ({f.units})" if f.units else f.label, heading=True)


#: A column of the tables: its label and the sites it pools.
Group = tuple[str, set[str]]


def _groups(tally: Tally) -> list[Group]:
    """A column per site shown (in label order), then all sites pooled unless there is exactly one."""
    groups = [(site, {site}) for site in sorted(tally.shown)]
    if len(groups) != 1:
        groups.append((ALL_SITES, tally.every_site()))
    return groups


class _Summariser:
    """Table rows for one field over the column groups, as the audience may see them.

    With a k, a count below it shows as `<k`, and then enough other cells as `[c]` (ONS's mark
    for confidential) that no small count can be worked out by subtraction from totals shown
    beside it (complementary suppression). The sets with a shown total are a column of mutually
    exclusive rows under its n, and the sites of a row beside their pooled cell; in each, the
    smallest shown cells are hidden until the hidden ones add up to k or more, repeated over
    all sets until none changes.
    """

    def __init__(self, study: Study, tally: Tally, audience: Audience) -> None:
        self.study, self.tally, self.audience = study, tally, audience
        self.groups = _groups(tally)
        self.totals = [sum(tally.cases[site] for site in sites) for _, sites in self.groups]
        #: The columns' n, hidden like any row of counts (the pooled n sums the sites' n).
        self.header_hidden = self._hidden([self.totals], partition=False)[0]

    def columns(self) -> tuple[str, ...]:
        return tuple(f"{label} (n = {self._count(n, hide)})"
                     for (label, _), n, hide in zip(self.groups, self.totals, self.header_hidden, strict=True))

    def _count(self, n: int, hide: bool) -> str:
        if not hide:
            return str(n)
        return self.audience.count(n) if self.audience.hides(n) else CONFIDENTIAL

    def _hidden(self, counts: list[list[int]], *, partition: bool) -> list[list[bool]]:
        """Which cells of `counts` (rows x column groups) to hide; `partition`: each case is in
        exactly one row, so a column's rows add up to its n."""
        hidden = [[self.audience.hides(n) for n in row] for row in counts]
        if self.audience.k is None or not counts:
            return hidden
        columns = range(len(self.totals))
        while True:
            before = sum(map(sum, hidden))
            if partition:
                for j in columns:
                    if not self.header_hidden[j]:
                        _complement(hidden, counts, [(i, j) for i in range(len(counts))], self.audience.k)
            if len(self.totals) > 1:  # the last column pools the sites before it
                for i in range(len(counts)):
                    if not hidden[i][-1]:
                        _complement(hidden, counts, [(i, j) for j in columns[:-1]], self.audience.k)
            if sum(map(sum, hidden)) == before:
                return hidden

    def _cells(self, counts: list[int], hidden: list[bool]) -> tuple[str, ...]:
        cells = []
        for n, total, hide in zip(counts, self.totals, hidden, strict=True):
            if hide or not total or not n:
                cells.append(self._count(n, hide))
            else:
                cells.append(f"{n} ({round(100 * n / total)}%)")
        return tuple(cells)

    def _hits(self, name: str) -> list[tuple[str, RowKey]]:
        """The rows of a field: its choices (or its count of values), then the missing-data codes
        it holds, then blanks if any."""
        f = self.study.field(name)
        hits = [(c.label, ("choice", c.code)) for c in f.choices] if f.choices else [("With a value", ("value", ""))]
        hits += [(code_label(self.study, code), ("code", code)) for code in self.tally.codes(name)]
        if self.tally.total(self.tally.every_site(), name, ("blank", "")):
            hits.append((NOT_ENTERED, ("blank", "")))
        return hits

    def rows(self, name: str) -> list[Row]:
        f = self.study.field(name)
        hits = self._hits(name)
        counts = [[self.tally.total(sites, name, key) for _, sites in self.groups] for _, key in hits]
        # A checkbox's options are not exclusive (several may be ticked): only its rows' sites add up.
        hidden = self._hidden(counts, partition=f.type != "checkbox")
        rows = [Row(label, self._cells(row, hide)) for (label, _), row, hide in zip(hits, counts, hidden, strict=True)]
        if not f.choices:
            rows = [*self._continuous(name, hidden[0]), *rows]
        return [_heading(f), *rows]

    def _continuous(self, name: str, hidden: list[bool]) -> list[Row]:
        """Median (IQR) and range per column, withheld where the count of values is."""
        medians, ranges = [], []
        for (_, sites), hide in zip(self.groups, hidden, strict=True):
            found = self.tally.numbers(name, sites)
            n = found.n
            if hide or not n:
                withheld = self._count(n, hide) if hide else NO_VALUE
                medians.append(withheld)
                ranges.append(withheld)
                continue
            q1, median, q3 = quantiles(found, (0.25, 0.5, 0.75))
            medians.append(f"{number_text(median)} ({number_text(q1)} to {number_text(q3)})")
            ranges.append(f"{number_text(found.values[0])} to {number_text(found.values[-1])}")
        return [Row("Median (IQR)", tuple(medians)), Row("Range", tuple(ranges))]


def _complement(hidden: list[list[bool]], counts: list[list[int]], cells: list[tuple[int, int]], k: int) -> None:
    """Hide the smallest shown cells of `cells` (a set whose total is shown) while its hidden
    cells add up to less than k: the total minus the shown cells gives their sum, which must
    not itself be a small count (for one hidden cell, its exact value)."""
    while True:
        held = sum(counts[i][j] for i, j in cells if hidden[i][j])
        shown = [(counts[i][j], i, j) for i, j in cells if not hidden[i][j]]
        if not shown or held >= k or len(shown) == len(cells):
            return
        _, i, j = min(shown)
        hidden[i][j] = True


# -- survival: time from presentation to complete resolution -------------------------------------


@dataclass(frozen=True, slots=True)
class _Fit:
    """A Kaplan-Meier fit of a group's (time, outcome) counts, with its cases and events."""

    fitter: KaplanMeierFitter
    n: int
    events: int


Fitted = list[tuple[str, _Fit | None]]


def _fit(counts: Counter[tuple[float, bool]], label: str) -> _Fit | None:
    """The fit of a group's usable cases, each distinct (time, outcome) once with its count as
    weight: the same estimates and confidence bands as one row per case."""
    if not counts:
        return None
    pairs = list(counts.items())
    durations = [duration for (duration, _), _ in pairs]
    events = [event for (_, event), _ in pairs]
    weights = [n for _, n in pairs]
    fitter = KaplanMeierFitter().fit(durations, events, weights=weights, label=label)
    return _Fit(fitter, sum(weights), sum(n for (_, event), n in pairs if event))


def _fit_groups(tally: Tally, grouping: str) -> Fitted:
    """One fit per group of `grouping` (every group that has a case, usable time or not), shared
    by the table and the plot (a fit is the costly part)."""
    return [(label, _fit(tally.survival[(grouping, label)], label)) for label in tally.labels(grouping)]


def _median_text(fitter: KaplanMeierFitter) -> tuple[str, str]:
    median = fitter.median_survival_time_
    bounds = median_survival_times(fitter.confidence_interval_).iloc[0]

    def shown(value: float) -> str:
        return "not reached" if not np.isfinite(value) else f"{number_text(value)}"

    return (f"{shown(median)} days" if np.isfinite(median) else "not reached",
            f"{shown(bounds.iloc[0])} to {shown(bounds.iloc[1])}")


def _km_chart(name: str, title: str, fitted: Fitted, audience: Audience, *, bands: bool) -> Chart:
    fits = [(label, fit) for label, fit in fitted if fit is not None and not audience.hides(fit.n)]
    parts = []
    for label, fit in fits:
        median, _ = _median_text(fit.fitter)
        parts.append(f"{label}: {audience.count(fit.n)} cases, {audience.count(fit.events)} resolved, "
                     f"{audience.count(fit.n - fit.events)} censored, median {median}")
    alt = (f"Kaplan-Meier curve{'s' if len(fits) > 1 else ''} of the proportion of cases not yet resolved "
           f"against days from presentation. " + ("; ".join(parts) + "." if parts else "No case to draw."))
    skipped = sum(fit is not None for _, fit in fitted) - len(fits)
    note = (f"{skipped} group(s) with fewer than {audience.k} cases not drawn." if skipped else "")

    def build() -> Figure:
        figure, axes = new_figure(title, "Time from presentation (days)", "Proportion not yet resolved")
        for index, (label, found) in enumerate(fits):
            style, fit = series_style(index), found.fitter
            curve = fit.survival_function_.iloc[:, 0]
            axes.step(curve.index, curve.values, where="post", label=label, **style)
            if bands:
                ci = fit.confidence_interval_
                axes.fill_between(ci.index, ci.iloc[:, 0], ci.iloc[:, 1], step="post", alpha=0.15,
                                  color=style["color"], label=f"{label}: 95% confidence band")
            # Each time once (the fit holds each (time, outcome) once): cases censored at the same
            # time are one mark on the curve.
            censored = np.unique(fit.durations[~fit.event_observed.astype(bool)])
            if len(censored):
                axes.plot(censored, fit.survival_function_at_times(censored).values, linestyle="none",
                          marker="|", markersize=10, color=style["color"], label=f"{label}: censored",
                          rasterized=rasterized(len(censored)))
        axes.set_ylim(0, 1.05)
        axes.set_xlim(left=0)
        if fits:
            axes.legend(frameon=False, fontsize="small")
        else:
            axes.text(0.5, 0.5, "No case to draw", transform=axes.transAxes, ha="center")
        return figure

    return Chart(name, title, alt, build, note)


def _km_row(label: str, fit: _Fit | None, audience: Audience) -> Row:
    n = 0 if fit is None else fit.n
    events = 0 if fit is None else fit.events
    if fit is None or audience.hides(n):
        withheld = audience.count(n) if audience.hides(n) else NO_VALUE
        return Row(label, (audience.count(n), audience.count(events), audience.count(n - events), withheld, withheld))
    median, ci = _median_text(fit.fitter)
    if audience.hides(events) or audience.hides(n - events):  # one would give the other away: n is shown
        return Row(label, (str(n), *(audience.count(x) if audience.hides(x) else CONFIDENTIAL
                                     for x in (events, n - events)), median, ci))
    return Row(label, (str(n), str(events), str(n - events), median, ci))


def _survival_table(study: Study, excluded: int, overall: _Fit | None, audience: Audience,
                    by: list[tuple[str, Fitted]]) -> Table:
    rows = [Row("Overall", heading=True), _km_row(ALL_CASES, overall, audience)]
    for title, fitted in by:
        rows.append(Row(title, heading=True))
        rows += [_km_row(label, fit, audience) for label, fit in fitted]
    caption = (f"Kaplan-Meier estimates. Resolved cases are events at their time to resolution; unresolved cases "
               f"are censored at their last follow-up. {audience.count(excluded)} case(s) have no "
               f"usable time and are left out.")
    return Table(study.field(TIME_TO_RESOLUTION).label, caption,
                 ("Cases", "Resolved", "Censored", "Median", "95% CI of the median"), tuple(rows))


# -- nodule size over time -------------------------------------------------------------------------


def _size_chart(study: Study, tally: Tally, audience: Audience) -> Chart:
    """Each case's calcification size at each imaging follow-up, in days from presentation, joined
    from one study to the next; a study that shows no calcification is drawn at 0 mm (resolved on
    imaging) with a hollow marker. Studies that coincide are one mark; past MAX_TRACKS cases, the
    tracks of a random MAX_TRACKS of them are drawn (the note says so)."""
    size_field, date_field = study.field(CALCIFICATION_SIZE), study.field(IMAGED)
    title = f"{size_field.label} at imaging follow-up"
    units = size_field.units or ""
    points = tally.points
    if not len(points):
        alt = (f"No imaging follow-up has both a {date_field.label.lower()} and a size, with the date of "
               f"presentation known: nothing to plot yet.")
    else:
        alt = (f"{audience.count(tally.studies)} imaging studies of {audience.count(tally.imaged_cases)} cases, "
               f"from day {number_text(points[:, 0].min())} to day {number_text(points[:, 0].max())} after "
               f"presentation; sizes {number_text(points[:, 1].min())} to {number_text(points[:, 1].max())} "
               f"{units}; {audience.count(tally.absent)} studies showed no calcification (drawn at 0 {units}).")
    note = (f"Tracks of {len(tally.tracks):,} of the {tally.tracked_cases:,} cases imaged more than once are "
            f"drawn, a random choice; every study is a point." if tally.tracked_cases > len(tally.tracks) else "")

    def build() -> Figure:
        figure, axes = new_figure(title, "Time from presentation (days)", f"{size_field.label} ({units})")
        style = series_style(0)
        # Every track in one line, each broken off by a blank: one artist, not one per case.
        gap = np.full((1, 2), np.nan)
        tracks = np.vstack([part for track in tally.tracks for part in (track, gap)]) if tally.tracks \
            else np.empty((0, 2))
        dense = rasterized(len(tracks) + len(points))
        axes.plot(tracks[:, 0], tracks[:, 1], color=style["color"], alpha=0.5, linewidth=1, rasterized=dense)
        present, absent = points[points[:, 2] == 0], points[points[:, 2] == 1]
        axes.plot(present[:, 0], present[:, 1], linestyle="none", marker="o", color=style["color"],
                  label="Calcification measured", rasterized=dense)
        axes.plot(absent[:, 0], absent[:, 1], linestyle="none", marker="o", markerfacecolor="none",
                  color=series_style(1)["color"], label="No calcification (0)", rasterized=dense)
        axes.set_xlim(left=0)
        axes.set_ylim(bottom=0)
        if not len(points):
            axes.text(0.5, 0.5, "No imaging follow-up with a date and a size yet", transform=axes.transAxes,
                      ha="center")
        else:
            axes.legend(frameon=False, fontsize="small")
        return figure

    return Chart("nodule-size", title, alt, build, note)


# -- putting it together ---------------------------------------------------------------------------


def analyse(study: Study, chunks: Iterable[CaseData], audience: Audience) -> Analysis:
    """Table 1, the outcome table, the survival estimates and the plots for the cases in `chunks`
    (each chunk some cases with all their forms), counted a chunk at a time."""
    tally = Tally()
    for chunk in chunks:
        tally.add(study, chunk)
    summary = _Summariser(study, tally, audience)
    columns = summary.columns()
    table1 = Table("Table 1. Patients, exposures and lesions", (
        "Counts with the percentage of the column's cases; continuous values as median (interquartile range) "
        "and range. Missing-data codes are counted apart from values."),
        columns, tuple(row for heading, names in TABLE1
                       for row in (Row(heading, heading=True, section=True),
                                    *(r for n in names for r in summary.rows(n)))))
    outcome = Table("Outcome, complications and treatment", "Counts with the percentage of the column's cases.",
                    columns, tuple(r for n in OUTCOME_FIELDS for r in summary.rows(n)))
    drug, concentration = study.field(DRUG), study.field(CONCENTRATION)
    by_drug, by_concentration = _fit_groups(tally, DRUG), _fit_groups(tally, CONCENTRATION)
    overall = _fit(tally.survival.get((None, ALL_CASES), Counter()), ALL_CASES)
    km = _survival_table(study, tally.excluded, overall, audience,
                         [(f"By {drug.label.lower()}", by_drug),
                          (f"By {concentration.label.lower()}", by_concentration)])
    charts = (
        _km_chart("time-to-resolution", "Time from presentation to complete resolution", [(ALL_CASES, overall)],
                  audience, bands=True),
        _km_chart("time-to-resolution-by-drug", f"Time to complete resolution by {drug.label.lower()}", by_drug,
                  audience, bands=False),
        _km_chart("time-to-resolution-by-concentration",
                  f"Time to complete resolution by {concentration.label.lower()}", by_concentration,
                  audience, bands=False),
        _size_chart(study, tally, audience),
    )
    n = sum(tally.cases.values())
    resolved = tally.total(tally.every_site(), RESOLVED, ("choice", YES))
    if overall is not None and not audience.hides(overall.n):
        median, ci = _median_text(overall.fitter)
    else:
        median, ci = (audience.count(overall.n) if overall is not None else "no case"), NO_VALUE
    key_figures = (
        ("Cases", audience.count(n)),
        (study.field(RESOLVED).label, f"{audience.count(resolved)} of {audience.count(n)}"),
        (f"Median {study.field(TIME_TO_RESOLUTION).label.lower()}", median),
        ("95% confidence interval of the median", ci),
        ("Cases with any complication", f"{audience.count(tally.complicated)} of {audience.count(n)}"),
    )
    notes = (f"Exposure rows describe each case's first recorded infusion; {audience.count(tally.repeated)} case(s) "
             f"have more than one.",)
    return Analysis(audience, key_figures, (table1, outcome, km), charts, notes)


#: Analyses by what they show (study, sites, audience, pseudonym key), each valid while the
#: forms of its sites are unchanged (see app.records.fingerprints); a few audiences at most.
_REMEMBERED: RememberedResults[Analysis] = RememberedResults(size=32)


def page_analysis(session: Session, study: Study, user: User, profiles: Collection[Profile],
                  pseudonyms: Pseudonymiser) -> Analysis:
    """The analysis of what `user` may see, shown as `user` may see it: computed again only
    when a form of those sites changed since it was last computed for the same audience."""
    audience = audience_for(user, profiles)
    sites = _visible_site_ids(user)
    key = (study.digest, None if sites is None else frozenset(sites), audience, pseudonyms.identity())
    return _REMEMBERED.get_or_compute(
        key, Fingerprints(session, sites).whole(),
        lambda: analyse(study, load_case_data(session, study, user, audience, pseudonyms), audience),
    )


def write_analysis_html(root: Path, plan: Plan) -> None:
    """Write `analysis.html` into a pooled bundle whose repeatable forms are tables (one-site
    bundles and other layouts get none), computed from the bundle's own Parquet tables.

    Counts are exact: the rows beside it were already disclosure-checked and de-identified, and
    anyone holding the bundle can count them; suppressed cells show up as SUPP.
    """
    profile = plan.profile
    if profile.per_site or profile.layout != "wide" or profile.repeatable != "tables":
        return
    study = plan.study
    chunks = case_data_from_bundle(study, plan, root / "parquet")
    analysis = analyse(study, chunks, Audience(description="exact counts of the rows in this bundle"))
    html = render_template("analysis/document.html", analysis=analysis, study=study, profile=profile)
    (root / "analysis.html").write_text(html, encoding="utf-8")
