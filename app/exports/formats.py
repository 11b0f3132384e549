"""Writers for the tabular formats: CSV (codes and labels), Parquet, Stata and SPSS.

CSV and Parquet are written batch by batch while the records stream past. Stata and SPSS
files are written at the end from the finished Parquet file plus a private side file of
missing-data codes, a batch of rows at a time (app.exports.stata, app.exports.spss), from
typed columns, never the raw records.

Missing-data codes never become blanks: CSV and Parquet carry them in each field's
`<name>_miss` companion column; Stata also tags the numeric cell with an extended
missing value (.a, .b, ...) and SPSS with a user-missing value, both labelled.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from app.exports.plan import Block, Column, Kind, Role, Table
from app.exports.spss import write_sav
from app.exports.stata import write_dta
from app.study.definition import MissingCode
from app.study.fieldtypes import format_number

#: Cells a spreadsheet would run as a formula (OWASP CSV injection); such text gets a leading quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: SPSS user-missing values for the codes: far below any value a field of this study takes.
SPSS_FIRST_SENTINEL = -999991
ARROW_TYPES = {
    Kind.STRING: pa.string(),
    Kind.INTEGER: pa.int64(),
    Kind.NUMBER: pa.float64(),
    Kind.DATE: pa.date32(),
    Kind.DATETIME: pa.timestamp("s"),
}


def escape_formula(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def render(kind: Kind, value: Any) -> str:
    """A cell's value as CSV text; only text columns are escaped, numbers stay numbers."""
    if value is None:
        return ""
    if kind == Kind.INTEGER:
        return str(int(value))
    if kind == Kind.NUMBER:
        return format_number(float(value))
    if kind == Kind.DATE:
        return value.isoformat()
    if kind == Kind.DATETIME:
        return value.strftime("%Y-%m-%dT%H:%M")
    return escape_formula(str(value))


class MissingCodes:
    """The export's missing-data codes (the study's, then SUPP) and their encodings per format."""

    def __init__(self, codes: Sequence[MissingCode]) -> None:
        self.codes = tuple(codes)
        self.labels = {m.code: m.label for m in self.codes}
        self.stata = {m.code: chr(ord("a") + i) for i, m in enumerate(self.codes)}
        self.spss = {m.code: float(SPSS_FIRST_SENTINEL - i) for i, m in enumerate(self.codes)}


class CsvWriter:
    """One table as CSV: raw codes, or (labels=True) choice and missing-code labels with label headers."""

    def __init__(self, path: Path, table: Table, *, labels: bool) -> None:
        self._file: TextIO = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        columns = table.columns
        self._writer.writerow([escape_formula(c.label) if labels else c.name for c in columns])
        renderers = [self._labelled(c) if labels else None if c.role == Role.MISSING else _raw(c.kind)
                     for c in columns]
        #: Only the columns whose text is not what the csv module writes anyway (None as "",
        #: an int, a date in ISO form, a missing-data code: the loader lets none start like a
        #: formula) are converted, cell by cell.
        self._convert = [(index, fn) for index, fn in enumerate(renderers) if fn is not None]

    @staticmethod
    def _labelled(column: Column) -> Callable[[Any], str] | None:
        if not column.value_labels:
            return _raw(column.kind)
        return lambda value: escape_formula(column.label_of(value) or str(value))

    def write(self, block: Block) -> None:
        columns = block.values
        if self._convert:
            columns = list(columns)
            for index, fn in self._convert:
                columns[index] = [None if value is None else fn(value) for value in columns[index]]
        self._writer.writerows(zip(*columns, strict=True))

    def close(self) -> None:
        self._file.close()


def _raw(kind: Kind) -> Callable[[Any], str] | None:
    """`render` for a non-blank value of `kind`; None where the csv module's own text is the same."""
    if kind in (Kind.INTEGER, Kind.DATE):  # ints and dates only: str() of either is render()'s text
        return None
    if kind == Kind.STRING:  # the commonest, and render's last branch: skip the others
        return lambda value: escape_formula(str(value))
    if kind == Kind.NUMBER:  # numbers are ints or floats, which format_number takes as render does
        return format_number
    return lambda value: render(kind, value)


def arrow_schema(table: Table) -> pa.Schema:
    fields = []
    for c in table.columns:
        meta = {"label": c.label}
        if c.units:
            meta["units"] = c.units
        if c.value_labels:
            meta["value_labels"] = json.dumps(dict(c.value_labels), ensure_ascii=False)
        fields.append(pa.field(c.name, ARROW_TYPES[c.kind], metadata=meta))
    return pa.schema(fields)


class ParquetWriter:
    """One table as Parquet, a row group per batch; `codes_path` keeps the numeric cells' codes
    for the Stata and SPSS writers (a private file, not part of the bundle)."""

    def __init__(self, path: Path, codes_path: Path, table: Table) -> None:
        self._schema = arrow_schema(table)
        self._writer = pq.ParquetWriter(path, self._schema)
        self._coded = [i for i, c in enumerate(table.columns) if c.codes and c.kind.numeric]
        self._codes_schema = pa.schema([pa.field(table.columns[i].name, pa.string()) for i in self._coded])
        self._codes = pq.ParquetWriter(codes_path, self._codes_schema)

    def write(self, block: Block) -> None:
        if not block.size:
            return
        arrays = [pa.array(values, type=field.type) for values, field in zip(block.values, self._schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        codes = [pa.nulls(block.size, pa.string()) if block.codes[i] is None else pa.array(block.codes[i], pa.string())
                 for i in self._coded]
        self._codes.write_table(pa.Table.from_arrays(codes, schema=self._codes_schema))

    def close(self) -> None:
        self._writer.close()
        self._codes.close()


def _choice_labels(column: Column) -> dict[Any, str]:
    if column.kind != Kind.INTEGER:
        return {}
    return {int(code): label for code, label in column.value_labels}


def write_stata(values_path: Path, codes_path: Path, out: Path, table: Table, missing: MissingCodes,
                file_label: str) -> None:
    """Stata .dta: value labels on coded columns, extended missing .a, .b... for the missing-data codes."""
    value_labels: dict[str, dict[Any, str]] = {}
    for c in table.columns:
        labels: dict[Any, str] = _choice_labels(c)
        if labels and c.kind.numeric and c.codes:
            labels.update({missing.stata[code]: missing.labels[code] for code in c.codes})
        if labels:
            value_labels[c.name] = labels
    write_dta(values_path, codes_path, out, table, missing.stata, value_labels, file_label)


def write_spss(values_path: Path, codes_path: Path, out: Path, table: Table, missing: MissingCodes,
               file_label: str) -> None:
    """SPSS .sav: value labels, and the missing-data codes as labelled user-missing values."""
    value_labels: dict[str, dict[float, str]] = {}
    measure: dict[str, str] = {}
    for c in table.columns:
        labels = {float(k): v for k, v in _choice_labels(c).items()}
        if c.kind.numeric and c.codes:
            labels.update({missing.spss[code]: missing.labels[code] for code in c.codes})
        if labels:
            value_labels[c.name] = labels
        measure[c.name] = "scale" if c.kind.numeric and not c.value_labels else "nominal"
    write_sav(values_path, codes_path, out, table, missing.spss, value_labels, measure, file_label)
