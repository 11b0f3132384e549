"""What the analysis needs of its cases, summed a chunk of cases at a time.

An analysis of 100,000 cases must not hold 100,000 cases. Each chunk (a few thousand cases
from the database or from the export bundle, with all their forms) is reduced to counts per
site, and what medians, ranges and Kaplan-Meier estimates need is kept as counts per distinct
value (a weight in grams, a (duration, outcome) pair) in numpy arrays. Memory grows with the
number of distinct values, not with the cases, and every figure is the one the whole table
would give (quantiles are computed from the counts exactly as numpy's linear method does).
The imaging plot keeps each distinct point once and the tracks of at most MAX_TRACKS cases,
a random choice (the same for the same data), and says so.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app.analysis.data import TICKED_SEPARATOR, CaseData, code_label
from app.analysis.fields import (
    CALCIFICATION,
    CALCIFICATION_SIZE,
    COMPLICATIONS,
    CONCENTRATION,
    CONCENTRATION_CUTS,
    DRUG,
    IMAGED,
    LAST_FOLLOWUP,
    NO,
    NO_COMPLICATION,
    NOT_ENTERED,
    OUTCOME_FIELDS,
    PRESENTED,
    RESOLVED,
    TABLE1,
    TIME_TO_RESOLUTION,
    YES,
)
from app.study.definition import Study
from app.study.fieldtypes import format_number

#: The fields of Table 1 and the outcome table, in order.
SUMMARISED: tuple[str, ...] = (*(name for _, names in TABLE1 for name in names), *OUTCOME_FIELDS)
#: The survival estimates' groupings: every case (None), then by drug and by concentration band.
GROUPINGS: tuple[tuple[str | None, Sequence[float]], ...] = (
    (None, ()), (DRUG, ()), (CONCENTRATION, CONCENTRATION_CUTS))
ALL_CASES = "All cases"
#: Cases whose imaging tracks are drawn, at most: more is an unreadable tangle, and memory.
MAX_TRACKS = 1000
#: A row of a field's counts: ("choice", code), ("value", "") for a number, ("code", missing code)
#: or ("blank", "").
RowKey = tuple[str, str]


def number_text(value: float) -> str:
    return format_number(round(float(value), 1))


@dataclass(slots=True)
class ValueCounts:
    """Distinct values (sorted) and how many cases hold each: 16 bytes a distinct value."""

    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def add(self, values: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Count more values in (`counts`: how many of each; one each if None)."""
        found = np.concatenate([self.values, np.asarray(values, dtype=float)])
        weights = np.concatenate([self.counts, np.ones(len(values), dtype=np.int64) if counts is None else counts])
        self.values, where = np.unique(found, return_inverse=True)
        self.counts = np.bincount(where, weights=weights, minlength=len(self.values)).astype(np.int64)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def merged(cls, parts: Iterable[ValueCounts]) -> ValueCounts:
        merged = cls()
        for part in parts:
            merged.add(part.values, part.counts)
        return merged


@dataclass(slots=True)
class Tally:
    """Everything the analysis shows, as sums over the chunks counted so far (see the module)."""

    #: Site labels shown as columns (a site with no case still gets one; none when pooled only),
    #: and cases per site label.
    shown: set[str] = field(default_factory=set)
    cases: Counter[str] = field(default_factory=Counter)
    #: Per summarised field: per row, cases per site.
    counts: dict[str, dict[RowKey, Counter[str]]] = field(default_factory=dict)
    #: Per number field: per site, cases per value.
    values: dict[str, dict[str, ValueCounts]] = field(default_factory=dict)
    #: Per survival group (grouping, label): cases per (duration in days, resolved).
    survival: dict[tuple[str | None, str], Counter[tuple[float, bool]]] = field(default_factory=dict)
    #: Cases without a usable time, left out of the survival estimates.
    excluded: int = 0
    complicated: int = 0
    #: Cases with more than one recorded infusion.
    repeated: int = 0
    #: Imaging: the distinct (day, size, no calcification) points; the studies, those without
    #: calcification and the cases imaged; the drawn cases' tracks (arrays of (day, size) in
    #: order of days) and how many cases had a track to choose from; the seeded chooser.
    points: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    studies: int = 0
    absent: int = 0
    imaged_cases: int = 0
    tracks: list[np.ndarray] = field(default_factory=list)
    tracked_cases: int = 0
    chooser: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def add(self, study: Study, data: CaseData) -> None:
        """Count one chunk of cases (each case with all its forms) into the tally."""
        self.shown.update(data.site_order)
        cases = _cases(study, data)
        sites = data.sites
        self.cases.update(_per_site(sites))
        for name in SUMMARISED:
            self._add_field(study, name, cases, sites)
        self._add_survival(study, cases)
        complications = set(study.field(COMPLICATIONS).choice_codes) - {NO_COMPLICATION}
        self.complicated += int(_ticked(cases.values[COMPLICATIONS],
                                        lambda ticked: not complications.isdisjoint(ticked)).sum())
        exposures = data.forms[study.field(DRUG).instrument].values
        if len(exposures):
            self.repeated += int((exposures.groupby(level="key").size() > 1).sum())
        self._add_imaging(study, data, cases)

    def _add_field(self, study: Study, name: str, cases: _Cases, sites: pd.Series) -> None:
        f = study.field(name)
        values, codes = cases.values[name], cases.codes[name]
        hits: list[tuple[RowKey, pd.Series]]
        if f.type == "checkbox":
            hits = [(("choice", c.code), _ticked(values, lambda ticked, code=c.code: code in ticked))
                    for c in f.choices]
        elif f.choices:
            hits = [(("choice", c.code), values.eq(c.code)) for c in f.choices]
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            found = numbers.notna()
            hits = [(("value", ""), found)]
            by_site = self.values.setdefault(name, {})
            for site, part in numbers[found].groupby(sites[found], observed=True):
                by_site.setdefault(str(site), ValueCounts()).add(part.to_numpy())
        hits += [(("code", code), codes.eq(code)) for code in codes.dropna().unique()]
        hits.append((("blank", ""), values.isna() & codes.isna()))
        rows = self.counts.setdefault(name, {})
        for key, mask in hits:
            rows.setdefault(key, Counter()).update(_per_site(sites, mask))

    def _add_survival(self, study: Study, cases: _Cases) -> None:
        """Resolved cases are events at their time to resolution; unresolved ones are censored at
        their last follow-up (days from presentation). Cases with neither time are counted apart."""
        values = cases.values
        resolved = values[RESOLVED].eq(YES)
        event_time = pd.to_numeric(values[TIME_TO_RESOLUTION], errors="coerce")
        censor_time = (pd.to_numeric(values[LAST_FOLLOWUP], errors="coerce")
                       - pd.to_numeric(values[PRESENTED], errors="coerce"))
        durations = event_time.where(resolved, censor_time.where(values[RESOLVED].eq(NO)))
        usable = durations.notna() & (durations >= 0)
        self.excluded += int((~usable).sum())
        for grouping, cuts in GROUPINGS:
            labels = (pd.Series(ALL_CASES, index=values.index) if grouping is None
                      else _group_labels(study, cases, grouping, cuts))
            for label in labels.unique():
                self.survival.setdefault((grouping, label), Counter())
            found = pd.DataFrame({"label": labels[usable], "duration": durations[usable].astype(float),
                                  "resolved": resolved[usable]})
            for (label, duration, event), n in found.value_counts().items():
                self.survival[(grouping, label)][(float(duration), bool(event))] += int(n)

    def _add_imaging(self, study: Study, data: CaseData, cases: _Cases) -> None:
        """Each imaging study's calcification size, in days from presentation; a study that shows no
        calcification counts at 0 mm (resolved on imaging)."""
        values = data.forms[study.field(IMAGED).instrument].values
        start = pd.to_numeric(cases.values[PRESENTED], errors="coerce")
        keys = values.index.get_level_values("key")
        day = pd.to_numeric(values[IMAGED], errors="coerce").to_numpy() - start.reindex(keys).to_numpy()
        size = pd.to_numeric(values[CALCIFICATION_SIZE], errors="coerce").where(values[CALCIFICATION].ne(NO), 0.0)
        points = pd.DataFrame({"key": keys, "day": day, "size": size.to_numpy(),
                               "absent": values[CALCIFICATION].eq(NO).to_numpy()}).dropna(subset=["day", "size"])
        self.studies += len(points)
        self.absent += int(points["absent"].sum())
        self.imaged_cases += points["key"].nunique()
        found = points[["day", "size", "absent"]].to_numpy(dtype=float)
        self.points = np.unique(np.vstack([self.points, found]), axis=0)
        self._add_tracks(points)

    def _add_tracks(self, points: pd.DataFrame) -> None:
        """Each case's track from one study to the next, in order of days, for a reservoir sample of
        MAX_TRACKS cases: every case imaged more than once has the same chance of being drawn."""
        ordered = points.sort_values(["key", "day"], kind="stable")
        keys, ends = ordered["key"].to_numpy(), ordered[["day", "size"]].to_numpy(dtype=float)
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else np.empty(0, int)
        stops = np.append(starts[1:], len(keys))
        tracked = (stops - starts) >= 2
        starts, stops = starts[tracked], stops[tracked]
        seen = self.tracked_cases + np.arange(1, len(starts) + 1)
        self.tracked_cases += len(starts)
        free = min(max(MAX_TRACKS - len(self.tracks), 0), len(starts))
        self.tracks += [ends[a:b].copy() for a, b in zip(starts[:free], stops[:free], strict=True)]
        # Past the limit, the n-th such case replaces a drawn one with probability MAX_TRACKS / n.
        places = self.chooser.integers(0, seen[free:]) if len(seen) > free else np.empty(0, int)
        for i in np.flatnonzero(places < MAX_TRACKS):
            self.tracks[places[i]] = ends[starts[free + i]:stops[free + i]].copy()

    def every_site(self) -> set[str]:
        return self.shown | set(self.cases)

    def total(self, sites: set[str], name: str, key: RowKey) -> int:
        """Cases of `sites` in one row of a field's counts."""
        found = self.counts.get(name, {}).get(key, Counter())
        return sum(found[site] for site in sites)

    def numbers(self, name: str, sites: set[str]) -> ValueCounts:
        """The values of a number field in `sites`, counted."""
        by_site = self.values.get(name, {})
        return ValueCounts.merged(by_site[site] for site in sorted(sites) if site in by_site)

    def codes(self, name: str) -> list[str]:
        """The missing-data codes a field holds, in code order."""
        return sorted(code for kind, code in self.counts.get(name, {}) if kind == "code")

    def labels(self, grouping: str | None) -> list[str]:
        return sorted((label for kind, label in self.survival if kind == grouping), key=str)


def quantiles(found: ValueCounts, qs: Sequence[float]) -> list[float]:
    """Quantiles of the values `found` counts, as numpy's linear method (pandas' default) gives them
    from every value: the same positions and the same interpolation, found in the counts."""
    ends = np.cumsum(found.counts)
    n = int(ends[-1])

    def nth(index: int) -> float:
        return float(found.values[np.searchsorted(ends, index, side="right")])

    result = []
    for q in qs:
        virtual = n * q + (1 - q) - 1
        below = int(np.floor(virtual))
        gamma = virtual - below
        a, b = nth(below), nth(min(below + 1, n - 1))
        difference = b - a
        result.append(b - difference * (1 - gamma) if gamma >= 0.5 else a + difference * gamma)
    return result


@dataclass(slots=True)
class _Cases:
    """One row per case: instance 1 of single forms, the first instance of calcium exposures."""

    values: pd.DataFrame
    codes: pd.DataFrame


def _cases(study: Study, data: CaseData) -> _Cases:
    index = data.sites.index
    values, codes = [], []
    for name, forms in sorted(data.forms.items()):
        if study.instrument(name).repeatable and name != study.field(DRUG).instrument:
            continue
        first = _first_instances(forms.values.index)
        values.append(forms.values.iloc[first].droplevel("instance").reindex(index))
        codes.append(forms.codes.iloc[first].droplevel("instance").reindex(index))
    return _Cases(pd.concat(values, axis=1), pd.concat(codes, axis=1))


def _first_instances(index: pd.MultiIndex) -> np.ndarray:
    """Positions of each case's first (lowest-numbered) instance, found by sorting positions
    rather than the frame: instance 1 of a single form, the first infusion of the exposures."""
    keys = index.get_level_values("key").to_numpy()
    order = np.lexsort((index.get_level_values("instance").to_numpy(), keys))
    ordered = keys[order]
    return order[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if len(order) else order


def _per_site(sites: pd.Series, mask: pd.Series | None = None) -> dict[str, int]:
    """Cases per site label (of the cases `mask` picks), counted on the category codes."""
    codes = sites.cat.codes.to_numpy()
    if mask is not None:
        codes = codes[mask.to_numpy()]
    counts = np.bincount(codes[codes >= 0], minlength=len(sites.cat.categories))
    return {site: int(n) for site, n in zip(sites.cat.categories, counts, strict=True) if n}


def _objects(column: pd.Series) -> pd.Series:
    """A column as objects with blanks as None (whatever pandas made of them), for `is None` checks."""
    return column.astype(object).where(column.notna(), None)


def _ticked(column: pd.Series, test: Callable[[list[str]], bool]) -> pd.Series:
    """Per case, `test` of the codes ticked in a checkbox column (False for a blank), computed once
    per combination of ticked codes rather than once per case."""
    hits = np.array([test(combination.split(TICKED_SEPARATOR)) for combination in column.cat.categories] + [False])
    return pd.Series(hits[column.cat.codes.to_numpy()], index=column.index, dtype=bool)


def _group_labels(study: Study, cases: _Cases, name: str, cuts: Sequence[float] = ()) -> pd.Series:
    """Each case's group for `name`: its choice label, concentration band, code label or 'Not entered'."""
    f = study.field(name)
    values, codes = cases.values[name], cases.codes[name]
    if f.choices:
        labels = _objects(values).map(lambda v: f.choice_label(v) if v is not None else None)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        units = f" {f.units}" if f.units else ""
        edges = [-np.inf, *cuts, np.inf]
        names = [f"< {number_text(cuts[0])}{units}",
                 *(f"{number_text(a)} to < {number_text(b)}{units}" for a, b in itertools.pairwise(cuts)),
                 f"≥ {number_text(cuts[-1])}{units}"]
        labels = pd.cut(numbers, edges, right=False, labels=names).astype(object).where(numbers.notna(), None)
    coded = _objects(codes).map(lambda c: code_label(study, c) if c else None)
    return labels.fillna(coded).fillna(NOT_ENTERED)
