"""SPSS .sav files (uncompressed, UTF-8) written a batch of rows at a time.

pyreadstat takes a whole table at once; this writer reads the bundle's Parquet file (and the
private file of the numeric cells' codes) a batch at a time into a numpy record array laid out
as a .sav case, so its memory does not grow with the records. The layout follows the system
file format as PSPP's developer guide describes it: a header, a variable record per 8-byte
slot of a case, value labels, the extension records (machine info, display parameters, long
names, very long strings, encoding), then the cases.

Numbers are doubles, a missing-data code is its sentinel number, declared user-missing as a
range; dates are DATE11 and date-times DATETIME20 (seconds since 14 October 1582); text is
A of the column's longest value in bytes, split into 255-byte segments past 255 ("very long
strings").
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from struct import pack
from typing import BinaryIO

import numpy as np

from app.exports import streaming
from app.exports.plan import Column, Kind, Table

#: Days from 14 October 1582 (SPSS's epoch) to 1970-01-01.
EPOCH_DAYS = 141_428
SECONDS_PER_DAY = 86_400
#: The system-missing value (-DBL_MAX) and the largest and smallest doubles, as SPSS records them.
SYSMIS = -1.7976931348623157e308
HIGHEST = 1.7976931348623157e308
LOWEST = -1.7976931348623155e308
#: A string segment holds at most 255 bytes; a very long string has one per 252 bytes of width.
SEGMENT = 255
SEGMENT_STEP = 252
SHORT_NAME = 8
LABEL_BYTES = 255
VALUE_LABEL_BYTES = 120
FILE_LABEL_BYTES = 64
PRODUCT = "@(#) SPSS DATA FILE Casebook"
#: Format types: A (text), F (numbers), DATE, DATETIME.
A, F, DATE, DATETIME = 1, 5, 20, 22
MEASURES = {"nominal": 1, "ordinal": 2, "scale": 3}
LEFT, RIGHT = 0, 1


@dataclass(frozen=True, slots=True)
class _Variable:
    column: Column
    #: 0 for a number, else the text's width in bytes.
    width: int
    #: The short (8-byte) names of its segments: one, or one per 255-byte piece of a very long string.
    shorts: tuple[str, ...]

    @property
    def segments(self) -> list[int]:
        return _segments(self.width)


def _segments(width: int) -> list[int]:
    """Each segment's width for a variable of `width` (0 for a number)."""
    if width <= SEGMENT:
        return [width]
    count = (width + SEGMENT_STEP - 1) // SEGMENT_STEP
    return [SEGMENT] * (count - 1) + [width - (count - 1) * SEGMENT_STEP]


def _slots(width: int) -> int:
    """8-byte slots a segment of `width` takes in a case (a number takes one)."""
    return max(1, math.ceil(width / 8))


def write_sav(values_path: Path, codes_path: Path, out: Path, table: Table, sentinels: dict[str, float],
              value_labels: dict[str, dict[float, str]], measures: dict[str, str], file_label: str) -> None:
    """Write `table` from its Parquet file to `out`. A numeric cell with a missing-data code is
    that code's sentinel in `sentinels`, declared user-missing on the columns that take codes."""
    text = [c.name for c in table.columns if not streaming.stored_as_number(c)]
    widths = streaming.text_widths(values_path, text)
    names = _ShortNames()
    variables = []
    for c in table.columns:
        width = widths.get(c.name, 0)
        variables.append(_Variable(c, width, tuple(names.make(c.name) for _ in _segments(width))))
    missing = (min(sentinels.values()), max(sentinels.values())) if sentinels else None
    with out.open("wb") as file:
        slots = sum(_slots(width) for v in variables for width in v.segments)
        file.write(_header(slots, streaming.rows(values_path), file_label))
        for v in variables:
            declared = missing if v.column.kind.numeric and v.column.codes else None
            for segment, (short, width) in enumerate(zip(v.shorts, v.segments, strict=True)):
                file.write(_variable_record(v, short, width, first=segment == 0, missing=declared))
        _write_value_labels(file, variables, value_labels)
        _write_extensions(file, variables, measures)
        file.write(pack("<ii", 999, 0))
        _write_cases(file, values_path, codes_path, variables, sentinels)


class _ShortNames:
    """Unique 8-byte upper-case names: SPSS's own names; the long names ride in record 7/13."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def make(self, name: str) -> str:
        base = re.sub(r"[^A-Z0-9_]", "_", name.upper())[:SHORT_NAME]
        if not base[:1].isalpha():
            base = ("V" + base)[:SHORT_NAME]
        candidate = base
        for number in itertools.count(1):
            if candidate not in self.taken:
                break
            suffix = str(number)
            candidate = base[:SHORT_NAME - len(suffix)] + suffix
        self.taken.add(candidate)
        return candidate


def _padded(text: str, size: int, pad: bytes = b" ") -> bytes:
    """`text` as UTF-8 in exactly `size` bytes, never cutting a character in two."""
    return streaming.utf8_prefix(text, size).ljust(size, pad)


def _header(slots: int, cases: int, label: str) -> bytes:
    now = datetime.now(UTC)
    return (b"$FL2" + _padded(PRODUCT, 60)
            + pack("<iiiii", 2, slots, 0, 0, cases) + pack("<d", 100.0)
            + f"{now.day:02} {streaming.MONTHS[now.month - 1]} {now.year % 100:02}".encode()
            + f"{now.hour:02}:{now.minute:02}:{now.second:02}".encode()
            + _padded(label, FILE_LABEL_BYTES) + bytes(3))


def _format(column: Column, width: int) -> int:
    """A print/write format: type, width and decimals packed as SPSS stores them."""
    if column.kind == Kind.DATE:
        kind, size, decimals = DATE, 11, 0
    elif column.kind == Kind.DATETIME:
        kind, size, decimals = DATETIME, 20, 0
    elif column.kind.numeric:
        kind, size, decimals = F, 8, 0 if column.kind == Kind.INTEGER else 2
    else:
        kind, size, decimals = A, width, 0
    return kind << 16 | size << 8 | decimals


def _variable_record(variable: _Variable, short: str, width: int, *, first: bool,
                     missing: tuple[float, float] | None) -> bytes:
    """The type-2 record of one segment, then one continuation record per further 8-byte slot."""
    label = streaming.utf8_prefix(variable.column.label, LABEL_BYTES) if first else b""
    spec = _format(variable.column, width)
    record = pack("<iiii", 2, width, 1 if label else 0, -2 if missing else 0) + pack("<ii", spec, spec)
    record += _padded(short, SHORT_NAME)
    if label:
        record += pack("<i", len(label)) + label.ljust(4 * math.ceil(len(label) / 4), b" ")
    if missing:
        record += pack("<dd", *missing)
    continuation = pack("<iiiiii", 2, -1, 0, 0, 0, 0) + b" " * SHORT_NAME
    return record + continuation * (_slots(width) - 1)


def _write_value_labels(file: BinaryIO, variables: list[_Variable], value_labels: dict[str, dict[float, str]]) -> None:
    """A type-3 record (values and labels) and a type-4 record (its variable) per labelled column."""
    index = 1
    for v in variables:
        labels = value_labels.get(v.column.name)
        if labels:
            file.write(pack("<ii", 3, len(labels)))
            for value, text in sorted(labels.items()):
                encoded = streaming.utf8_prefix(text, VALUE_LABEL_BYTES)
                entry = pack("<B", len(encoded)) + encoded
                file.write(pack("<d", value) + entry.ljust(8 * math.ceil(len(entry) / 8), b" "))
            file.write(pack("<iii", 4, 1, index))
        index += sum(_slots(width) for width in v.segments)


def _extension(subtype: int, size: int, content: bytes) -> bytes:
    return pack("<iiii", 7, subtype, size, len(content) // size) + content


def _write_extensions(file: BinaryIO, variables: list[_Variable], measures: dict[str, str]) -> None:
    file.write(_extension(3, 4, pack("<8i", 1, 0, 0, -1, 1, 1, 2, 65001)))  # IEEE, little-endian, UTF-8
    file.write(_extension(4, 8, pack("<3d", SYSMIS, HIGHEST, LOWEST)))
    display = b""
    for v in variables:
        measure = MEASURES[measures.get(v.column.name, "nominal")]
        for width in v.segments:
            shown = 8 if width == 0 else min(max(width, 8), 40)
            display += pack("<iii", measure, shown, RIGHT if width == 0 else LEFT)
    file.write(_extension(11, 4, display))
    file.write(_extension(13, 1, "\t".join(f"{v.shorts[0]}={v.column.name}" for v in variables).encode("utf-8")))
    long_text = b"".join(f"{v.shorts[0]}={v.width:05}".encode() + b"\0\t" for v in variables if v.width > SEGMENT)
    if long_text:
        file.write(_extension(14, 1, long_text))
    file.write(_extension(20, 1, b"UTF-8"))


def _write_cases(file: BinaryIO, values_path: Path, codes_path: Path, variables: list[_Variable],
                 sentinels: dict[str, float]) -> None:
    fields = [(f"v{i}_{k}", "<f8" if width == 0 else (np.uint8, (8 * _slots(width),)))
              for i, v in enumerate(variables) for k, width in enumerate(v.segments)]
    record = np.dtype(fields)
    for batch, codes in streaming.with_codes(values_path, codes_path):
        cells = np.zeros(batch.num_rows, dtype=record)
        for i, variable in enumerate(variables):
            array, name = batch.column(i), variable.column.name
            if variable.width == 0:
                values = streaming.numbers(variable.column, array, epoch_days=EPOCH_DAYS,
                                           per_day=SECONDS_PER_DAY)
                values[np.isnan(values)] = SYSMIS
                for code, sentinel in sentinels.items():
                    hit = streaming.coded(codes, name, code)
                    if hit is not None:
                        values[hit] = sentinel
                cells[f"v{i}_0"] = values
                continue
            text = streaming.text_bytes(array, variable.width, b" ")
            for k, width in enumerate(variable.segments):
                slot = cells[f"v{i}_{k}"]
                slot[:] = ord(" ")
                piece = text[:, k * SEGMENT: k * SEGMENT + width]
                slot[:, :piece.shape[1]] = piece
        file.write(cells.tobytes())
