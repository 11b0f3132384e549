"""The analysis's neutral data: what the web page's rows and the export bundle's tables become.

Both are turned into the same shape, `CaseData` (per instrument, its values and its
missing-data codes side by side, dates as day numbers), which is why the statistics never
see a calendar date, a record ID or an identifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.analysis.fields import ALL_SITES, read_fields
from app.exports.disclosure import SUPPRESSED
from app.exports.plan import Column, Plan, Role
from app.exports.plan import Table as ExportTable
from app.study.definition import Field, Study

#: Joins a checkbox's ticked codes into one category (the loader lets no choice code hold a comma).
TICKED_SEPARATOR = ","
#: Cases the analysis holds at a time (with all their forms); it keeps only counts between chunks.
CHUNK_CASES = 10_000


@dataclass(frozen=True, slots=True)
class Forms:
    """One instrument's saved instances: `values` and `codes` (missing-data codes) share the index
    (key, instance) and have a column per field.

    Columns are compact, so a large study costs a few bytes per cell: numbers and dates as floats
    (dates as day numbers on an arbitrary origin: only differences are used, so calendar dates
    never reach the statistics), a choice's code and a missing-data code as categories, and a
    checkbox's ticked codes joined into one category."""

    values: pd.DataFrame
    codes: pd.DataFrame


@dataclass(frozen=True, slots=True)
class CaseData:
    """Every case in scope: `sites` maps each case key to its site's label (a category),
    `forms` holds the instruments the analysis reads."""

    sites: pd.Series
    forms: dict[str, Forms]
    #: The site labels in column order; empty when sites are not shown (pooled only).
    site_order: tuple[str, ...] = ()


Compact = np.ndarray | pd.Categorical


def _numbers(f: Field, cells: pd.Series) -> np.ndarray:
    """A number or date field's cells as floats; dates (ISO text or date objects) as days since
    1970-01-01, with fractions for the time of day."""
    if f.type in ("date", "datetime"):
        moments = pd.to_datetime(cells, errors="coerce", format="mixed")
        return ((moments - pd.Timestamp(0)) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    return pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)


def _typed(f: Field, cells: list[Any]) -> Compact:
    """One field's cells as the form_instance table stores them (text, numbers, lists of ticked
    codes, None for blank) as a compact column."""
    if f.type == "checkbox":
        return pd.Categorical([TICKED_SEPARATOR.join(ticked) if ticked else None for ticked in cells])
    if f.choices:
        return pd.Categorical(cells)
    return _numbers(f, pd.Series(cells, dtype=object))


def _forms(study: Study, fields: Sequence[str], index: pd.MultiIndex, values: dict[str, Compact],
           codes: dict[str, Compact]) -> Forms:
    """Forms with a column for every field read; a field with no column is blank throughout."""
    blanks = [None] * len(index)
    return Forms(
        pd.DataFrame({name: values[name] if name in values else _typed(study.field(name), blanks)
                      for name in fields}, index=index, columns=list(fields)),
        pd.DataFrame({name: codes.get(name, pd.Categorical(blanks)) for name in fields},
                     index=index, columns=list(fields)),
    )


def case_data_from_rows(study: Study, cases: Iterable[tuple[Any, str]],
                        forms: Iterable[tuple[Any, str, int, dict[str, Any], dict[str, str]]],
                        site_order: Sequence[str]) -> CaseData:
    """CaseData from stored rows: (key, site label) per case and (key, instrument, instance,
    data, missing) per form instance, as the form_instance table holds them."""
    case_list = list(cases)
    sites = pd.Series(pd.Categorical([s for _, s in case_list]),
                      index=pd.Index([k for k, _ in case_list], name="key"))
    by_instrument: dict[str, list[tuple[Any, int, dict[str, Any], dict[str, str]]]] = {}
    for key, instrument, instance, data, missing in forms:
        by_instrument.setdefault(instrument, []).append((key, instance, data or {}, missing or {}))
    result: dict[str, Forms] = {}
    for name, fields in read_fields(study).items():
        rows = by_instrument.get(name, [])
        index = pd.MultiIndex.from_arrays([[k for k, *_ in rows], [i for _, i, *_ in rows]], names=["key", "instance"])
        values = {n: _typed(study.field(n), [d.get(n) for _, _, d, _ in rows]) for n in fields}
        codes = {n: pd.Categorical([m.get(n) for *_, m in rows]) for n in fields}
        result[name] = _forms(study, fields, index, values, codes)
    return CaseData(sites, result, tuple(site_order))


def case_data_from_bundle(study: Study, plan: Plan, parquet_dir: Path) -> Iterator[CaseData]:
    """CaseData from an export bundle's Parquet tables (main table plus one per repeatable form),
    CHUNK_CASES cases at a time with all their forms: site pseudonyms and days from day 0,
    exactly the rows the bundle ships. Within a chunk, cases are numbered in the order of their
    study IDs, which are not kept."""
    main = plan.main_table()
    read = read_fields(study)
    key = main.key[0]
    site_column = next((c for c in main.columns if c.role == Role.SITE), None)

    def wanted(table: ExportTable) -> list[str]:
        """The case's own columns (key, instance, site and its suppression marker) and, of the
        instruments read, their status and the columns of the fields read."""
        return [c.name for c in table.columns
                if c.role in (Role.KEY, Role.INSTANCE, Role.SITE) or (c.role == Role.MISSING and c.field is None)
                or (c.instrument in read and (c.role == Role.STATUS or c.field in read[c.instrument]))]

    for batch in pq.ParquetFile(parquet_dir / f"{main.name}.parquet").iter_batches(
            batch_size=CHUNK_CASES, columns=wanted(main)):
        frame = pa.Table.from_batches([batch])
        # Study IDs stay in Arrow: a case is its ID's position in sorted order.
        ids = pc.unique(frame.column(key)).sort()
        index = pd.Index(pc.index_in(frame.column(key), value_set=ids).to_numpy(), name="key")
        if site_column is None:
            sites = pd.Series(pd.Categorical([ALL_SITES] * len(index)), index=index)
        else:
            labels = frame.column(site_column.name)
            if "site_miss" in frame.column_names:
                labels = pc.if_else(frame.column("site_miss").is_valid(), code_label(study, SUPPRESSED.code), labels)
            sites = pd.Series(_categories(labels), index=index)
        result: dict[str, Forms] = {}
        for name, fields in read.items():
            table = next((t for t in plan.tables if t.instrument == name), None)
            part = frame if table is None else pq.read_table(
                parquet_dir / f"{table.name}.parquet", columns=wanted(table), filters=pc.field(key).isin(ids))
            columns = [c for c in (main if table is None else table).columns if c.instrument == name]
            saved = part.filter(part.column(_status(columns)).is_valid())
            result[name] = _bundle_forms(study, fields, columns, saved, ids, key, repeated=table is not None)
        order = tuple(sorted(sites.unique())) if site_column is not None else ()
        yield CaseData(sites, result, order)


def _status(columns: list[Column]) -> str:
    return next(c.name for c in columns if c.role == Role.STATUS)


def _bundle_forms(study: Study, fields: list[str], columns: list[Column], part: pa.Table, ids: pa.Array,
                  key: str, *, repeated: bool) -> Forms:
    """One instrument's saved instances in a chunk of the bundle (rows with a status only)."""
    instances = part.column("instance").to_numpy() if repeated else np.ones(part.num_rows, dtype=np.int64)
    index = pd.MultiIndex.from_arrays([pc.index_in(part.column(key), value_set=ids).to_numpy(), instances],
                                      names=["key", "instance"])
    values: dict[str, Compact] = {}
    codes: dict[str, Compact] = {}
    ticked: dict[str, list[tuple[str, pa.ChunkedArray]]] = {}
    for column in columns:
        if column.field not in fields:
            continue
        cells = part.column(column.name)
        if column.role == Role.MISSING:
            codes[column.field] = _categories(cells)
        elif column.role == Role.CHOICE:
            ticked.setdefault(column.field, []).append((column.choice, pc.equal(cells, 1).fill_null(False)))
        elif column.role in (Role.VALUE, Role.DAY, Role.SHIFTED):
            values[column.field] = _bundle_values(study.field(column.field), column.role, cells)
    for checkbox, options in ticked.items():
        values[checkbox] = _combinations(options)
    return _forms(study, fields, index, values, codes)


def _categories(cells: pa.ChunkedArray) -> pd.Categorical:
    """An Arrow column as categories, without a Python object per cell."""
    return cells.dictionary_encode().to_pandas().array


def _combinations(options: list[tuple[str, pa.ChunkedArray]]) -> pd.Categorical:
    """A checkbox's choice columns (a choice code and whether each case ticked it) as `_typed`
    makes a checkbox: each case's ticked codes, joined, as categories."""
    bits = np.zeros(len(options[0][1]), dtype=np.int64)
    for position, (_, hits) in enumerate(options):
        bits |= hits.to_numpy().astype(np.int64) << position
    found, cells = np.unique(bits, return_inverse=True)
    labels = [TICKED_SEPARATOR.join(code for position, (code, _) in enumerate(options) if combination >> position & 1)
              for combination in found.tolist()]
    # Nothing ticked is blank (code -1), as in the form_instance table, where it is no value at all.
    blank = labels.index("") if "" in labels else None
    if blank is not None:
        cells = np.where(cells == blank, -1, cells - (cells > blank))
        del labels[blank]
    return pd.Categorical.from_codes(cells, categories=labels)


def _bundle_values(f: Field, role: Role, cells: pa.ChunkedArray) -> Compact:
    """A value column of the bundle as `_typed` makes it: Parquet holds choice codes as integers
    (text codes as text) and dates as days from day 0 (DAY) or as dates, shifted (SHIFTED) or
    not (VALUE)."""
    if f.choices:
        found = _categories(cells)
        return found.rename_categories([_choice_code(c) for c in found.categories])
    if role == Role.DAY:
        return cells.to_pandas().to_numpy(dtype=float)
    return _numbers(f, cells.to_pandas())


def _choice_code(value: Any) -> str:
    """A choice as its code: Parquet holds numeric codes as integers (floats where blanks are)."""
    return str(int(value)) if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def code_label(study: Study, code: str) -> str:
    """A missing-data code as shown: its label and the code (SUPP: disclosure control)."""
    label = study.missing_label(code) or (SUPPRESSED.label if code == SUPPRESSED.code else code)
    return f"{label} ({code})"
