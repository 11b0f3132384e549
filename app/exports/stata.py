"""Stata .dta files (format 118, read by Stata 14 and later) written a batch of rows at a time.

pyreadstat takes a whole table at once, and wants every cell of a column that may hold an
extended missing value (.a, .b...: the missing-data codes) as a Python object: 80 MiB for
the main table of 100,000 cases. This writer reads the bundle's Parquet file (and the private
file of the numeric cells' codes) a batch at a time into a numpy record array laid out as a
.dta row, so its memory does not grow with the records. The layout follows Stata's own
description of the format (`help dta`): an XML-like header, fixed-width descriptors, the rows,
the long strings (strL) and the value-label tables, with a map of where each section starts.

Numbers and dates are doubles (dates as days, date-times as milliseconds, since 1960, shown
with %td and %tc); text is str# of the column's longest value in bytes, or strL past 2,045.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from struct import pack
from typing import BinaryIO

import numpy as np
import pyarrow.compute as pc

from app.errors import CasebookError
from app.exports import streaming
from app.exports.plan import Column, Kind, Table

MAX_VARIABLES = 32_767
DOUBLE = 65526
STRL = 32768
#: The longest fixed-width string (str2045); longer text is a strL.
STR_MAX = 2045
#: The bits of the double "." and the step to ".a", ".b"... (little-endian on disk).
MISSING_BITS = 0x7FE0000000000000
TAG_STEP = 0x0000010000000000
#: "." as a value-label table's int32; ".a" is one more, and so on.
LABEL_MISSING = 2147483621
#: Days from 1960-01-01 (Stata's epoch) to 1970-01-01.
EPOCH_DAYS = 3653
NAME_BYTES, FORMAT_BYTES, LABEL_BYTES = 129, 57, 321
LABEL_CHARACTERS = 80


class StataLimitError(CasebookError):
    """The table cannot be a .dta file (more variables than Stata takes): the export says so."""


@dataclass(frozen=True, slots=True)
class _Variable:
    column: Column
    #: The .dta type code: a str# width, STRL or DOUBLE.
    type: int

    @property
    def dtype(self) -> str:
        """The variable's cell in a numpy record: a strL's cell is its (variable, row) reference."""
        return "<f8" if self.type == DOUBLE else "<u8" if self.type == STRL else f"S{self.type}"

    @property
    def format(self) -> str:
        if self.column.kind == Kind.DATE:
            return "%td"
        if self.column.kind == Kind.DATETIME:
            return "%tc"
        if self.type == DOUBLE:
            return "%10.0g"
        return "%-9s" if self.type == STRL else f"%-{self.type}s"


def write_dta(values_path: Path, codes_path: Path, out: Path, table: Table, tags: dict[str, str],
              value_labels: dict[str, dict[int | str, str]], file_label: str) -> None:
    """Write `table` from its Parquet file to `out`. `tags` maps each missing-data code to its
    letter (a numeric cell with a code is that extended missing value); `value_labels` maps a
    column to its labels, keyed by choice code or tag letter."""
    if len(table.columns) > MAX_VARIABLES:
        raise StataLimitError(f"Stata takes at most {MAX_VARIABLES:,} variables; {table.name} has "
                              f"{len(table.columns):,}.")
    numbers = {c.name for c in table.columns if streaming.stored_as_number(c)}
    widths = streaming.text_widths(values_path, [c.name for c in table.columns if c.name not in numbers])
    variables = [_Variable(c, DOUBLE if c.name in numbers else widths[c.name] if widths[c.name] <= STR_MAX else STRL)
                 for c in table.columns]
    with out.open("w+b") as file:
        offsets = [0]
        file.write(_header(len(variables), streaming.rows(values_path), file_label))
        offsets.append(file.tell())
        file.write(b"<map>" + bytes(8 * 14) + b"</map>")
        labelled = [v.column.name if v.column.name in value_labels else "" for v in variables]
        for name, content in (
            ("variable_types", b"".join(pack("<H", v.type) for v in variables)),
            ("varnames", b"".join(_fixed(v.column.name, NAME_BYTES) for v in variables)),
            ("sortlist", bytes(2 * (len(variables) + 1))),
            ("formats", b"".join(_fixed(v.format, FORMAT_BYTES) for v in variables)),
            ("value_label_names", b"".join(_fixed(name, NAME_BYTES) for name in labelled)),
            ("variable_labels", b"".join(_fixed(v.column.label[:LABEL_CHARACTERS], LABEL_BYTES) for v in variables)),
            ("characteristics", b""),
        ):
            offsets.append(file.tell())
            file.write(b"<%s>%s</%s>" % (name.encode(), content, name.encode()))
        offsets.append(file.tell())
        file.write(b"<data>")
        _write_rows(file, values_path, codes_path, variables, tags)
        file.write(b"</data>")
        offsets.append(file.tell())
        file.write(b"<strls>")
        _write_strls(file, values_path, variables)
        file.write(b"</strls>")
        offsets.append(file.tell())
        file.write(b"<value_labels>")
        for name, labels in value_labels.items():
            file.write(_label_table(name, {_label_value(key): text for key, text in labels.items()}))
        file.write(b"</value_labels>")
        offsets.append(file.tell())
        file.write(b"</stata_dta>")
        offsets.append(file.tell())
        file.seek(offsets[1] + len(b"<map>"))
        file.write(pack("<14Q", *offsets))


def _header(variables: int, rows: int, label: str) -> bytes:
    now = datetime.now(UTC)
    stamp = f"{now.day:02} {streaming.MONTHS[now.month - 1]} {now.year} {now.hour:02}:{now.minute:02}".encode()
    text = streaming.utf8_prefix(label[:LABEL_CHARACTERS], 4 * LABEL_CHARACTERS)
    return (b"<stata_dta><header><release>118</release><byteorder>LSF</byteorder>"
            + b"<K>" + pack("<H", variables) + b"</K><N>" + pack("<Q", rows) + b"</N>"
            + b"<label>" + pack("<H", len(text)) + text + b"</label>"
            + b"<timestamp>" + pack("<B", len(stamp)) + stamp + b"</timestamp></header>")


def _fixed(text: str, size: int) -> bytes:
    """A NUL-terminated, NUL-padded field of `size` bytes."""
    return streaming.utf8_prefix(text, size - 1).ljust(size, b"\0")


def _write_rows(file: BinaryIO, values_path: Path, codes_path: Path, variables: list[_Variable],
                tags: dict[str, str]) -> None:
    record = np.dtype([(f"v{i}", v.dtype) for i, v in enumerate(variables)])
    first_row = 1
    for batch, codes in streaming.with_codes(values_path, codes_path):
        cells = np.zeros(batch.num_rows, dtype=record)
        for i, variable in enumerate(variables):
            array, name = batch.column(i), variable.column.name
            if variable.type == DOUBLE:
                values = streaming.numbers(variable.column, array, epoch_days=EPOCH_DAYS,
                                           per_day=1 if variable.column.kind == Kind.DATE else streaming.MS_PER_DAY)
                bits = values.view("<u8")
                bits[np.isnan(values)] = MISSING_BITS
                for code, letter in tags.items():
                    hit = streaming.coded(codes, name, code)
                    if hit is not None:
                        bits[hit] = MISSING_BITS + TAG_STEP * _tag_number(letter)
                cells[f"v{i}"] = values
            elif variable.type == STRL:
                rows = np.arange(first_row, first_row + batch.num_rows, dtype=np.uint64)
                given = pc.greater(pc.binary_length(array), 0).fill_null(False).to_numpy(zero_copy_only=False)
                cells[f"v{i}"] = np.where(given, np.uint64(i + 1) | (rows << np.uint64(16)), np.uint64(0))
            else:
                cells[f"v{i}"] = streaming.text_bytes(array, variable.type, b"\0").view(f"S{variable.type}")[:, 0]
        file.write(cells.tobytes())
        first_row += batch.num_rows


def _write_strls(file: BinaryIO, values_path: Path, variables: list[_Variable]) -> None:
    """Each non-empty strL cell as a GSO block, keyed by the (variable, row) its cell refers to."""
    long_text = [(i, v.column.name) for i, v in enumerate(variables) if v.type == STRL]
    row = 1
    for batch in streaming.batches(values_path, [name for _, name in long_text]):
        for offset, text in enumerate(zip(*(batch.column(name).to_pylist() for _, name in long_text), strict=True)):
            for (i, _), cell in zip(long_text, text, strict=True):
                if cell:
                    content = cell.encode("utf-8") + b"\0"
                    file.write(b"GSO" + pack("<IQBI", i + 1, row + offset, 130, len(content)) + content)
        row += batch.num_rows


def _tag_number(letter: str) -> int:
    """.a is 1, .b is 2...; "." itself is 0."""
    return ord(letter) - ord("a") + 1


def _label_value(key: int | str) -> int:
    """A value-label key as the int32 Stata stores: a choice code, or a tag letter's missing value."""
    return LABEL_MISSING + _tag_number(key) if isinstance(key, str) else int(key)


def _label_table(name: str, labels: dict[int, str]) -> bytes:
    items = sorted(labels.items())
    texts = [text.encode("utf-8") + b"\0" for _, text in items]
    offsets = list(itertools.accumulate((len(t) for t in texts[:-1]), initial=0)) if texts else []
    n = len(items)
    table = pack(f"<ii{n}i{n}i", n, sum(map(len, texts)), *offsets, *(value for value, _ in items)) + b"".join(texts)
    return b"<lbl>" + pack("<i", len(table)) + _fixed(name, NAME_BYTES) + bytes(3) + table + b"</lbl>"
