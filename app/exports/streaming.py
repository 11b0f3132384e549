"""Reading a finished export table back a batch at a time, for the Stata and SPSS writers.

Both formats are written after the Parquet file is complete (they need every text column's
widest value up front), from it and the private Parquet file of the numeric cells'
missing-data codes, never all of a table at once: memory depends on the batch, not on the
number of records.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.exports.plan import Column, Kind

#: Rows per batch: a few megabytes of record array for the widest table.
ROWS = 10_000
MS_PER_DAY = 86_400_000
#: Month abbreviations of both formats' header timestamps, whatever the process's locale.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def stored_as_number(column: Column) -> bool:
    """Numbers, dates and date-times are doubles in both formats; everything else is text."""
    return column.kind.numeric or column.kind in (Kind.DATE, Kind.DATETIME)


def batches(path: Path, names: list[str]) -> Iterator[pa.RecordBatch]:
    """The named columns of a Parquet file, ROWS rows at a time (nothing for no names)."""
    if names:
        yield from pq.ParquetFile(path).iter_batches(batch_size=ROWS, columns=names)


def rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def text_widths(path: Path, names: list[str]) -> dict[str, int]:
    """Each text column's longest value in UTF-8 bytes (at least 1), read a batch at a time."""
    widths = dict.fromkeys(names, 1)
    for batch in batches(path, names):
        for name in names:
            longest = pc.max(pc.binary_length(batch.column(name))).as_py()
            widths[name] = max(widths[name], longest or 0)
    return widths


def with_codes(values_path: Path, codes_path: Path) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch | None]]:
    """Each batch of the table with the same rows of its codes file (None if no column takes codes)."""
    coded = pq.ParquetFile(codes_path).schema_arrow.names
    codes = batches(codes_path, coded)
    for batch in pq.ParquetFile(values_path).iter_batches(batch_size=ROWS):
        yield batch, next(codes) if coded else None


def coded(codes: pa.RecordBatch | None, name: str, code: str) -> np.ndarray | None:
    """Which cells of column `name` hold missing-data code `code` (None: the column takes none)."""
    if codes is None or name not in codes.schema.names:
        return None
    return pc.equal(codes.column(name), code).fill_null(False).to_numpy(zero_copy_only=False)


def numbers(column: Column, array: pa.Array, *, epoch_days: int, per_day: int) -> np.ndarray:
    """A numeric column as a writable float64 array, NaN for blanks. Dates and date-times count
    `per_day` units a day from an epoch `epoch_days` days before 1970-01-01 (Arrow's epoch)."""
    if column.kind == Kind.DATE:
        found = pc.multiply(pc.add(array.cast(pa.int32()).cast(pa.float64()), float(epoch_days)), float(per_day))
    elif column.kind == Kind.DATETIME:
        # Parquet keeps seconds as milliseconds: ask for milliseconds whatever the unit read back.
        ms = array.cast(pa.timestamp("ms")).cast(pa.int64()).cast(pa.float64())
        found = pc.add(pc.divide(ms, float(MS_PER_DAY // per_day)), float(epoch_days * per_day))
    else:
        found = array.cast(pa.float64())
    return np.array(found.to_numpy(zero_copy_only=False), dtype="<f8")


def text_bytes(array: pa.Array, width: int, pad: bytes) -> np.ndarray:
    """A text column as an (n, width) array of UTF-8 bytes, blanks empty, padded with `pad`."""
    cells = np.asarray(array.fill_null("").cast(pa.binary()).to_numpy(zero_copy_only=False), dtype=f"S{width}")
    matrix = cells.view(np.uint8).reshape(len(cells), width)
    if pad != b"\0":
        matrix[matrix == 0] = pad[0]
    return matrix


def utf8_prefix(text: str, limit: int) -> bytes:
    """`text` as UTF-8 in at most `limit` bytes, never cutting a character in two (the formats'
    names and labels are fixed-size byte fields)."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")
