"""Writing API answers as REDCap writes them: JSON, CSV or XML, rows streamed in batches.

Row-shaped answers (records, metadata, field names, ...) go through `rows_response`,
which takes an iterable of row batches and writes each batch as soon as it is ready, so
an export of 100,000 records never sits in memory. Every error, whatever the format, is
both an HTTP status (for REDCapR and redcapAPI, which read only the status) and a body
PyCap recognises (`{"error": ...}`, `ERROR: ...` or `<error>`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from flask import Response, stream_with_context

from app.api.params import Format

#: A row: text by column name, or (faster, for record exports) a list of text in column order.
Row = Mapping[str, str] | Sequence[str]

#: Werkzeug appends "; charset=utf-8" to text/* types itself (naming it here sent it twice).
MIMETYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "xml": "text/xml",
}
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'
# Characters XML 1.0 cannot carry at all; dropped so the document stays well-formed.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _csv_lines(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _cdata(value: str) -> str:
    value = _XML_INVALID.sub("", value)
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _cells(row: Row, columns: Sequence[str]) -> Sequence[str]:
    """A row's cells in column order."""
    return [row.get(c, "") for c in columns] if isinstance(row, Mapping) else row


def _xml_item(row: Row, columns: Sequence[str]) -> str:
    cells = _cells(row, columns)
    return "<item>" + "".join(f"<{c}>{_cdata(v)}</{c}>" for c, v in zip(columns, cells, strict=True)) + "</item>\n"


def encode_rows(
    columns: Sequence[str], batches: Iterable[Sequence[Row]], fmt: Format, *, header: Sequence[str] | None = None
) -> Iterator[str]:
    """Yield the answer piece by piece: one piece per batch, plus the opening and closing.

    `header` replaces the column names in the CSV header line (REDCap's
    rawOrLabelHeaders=label); JSON and XML always use the raw names, as REDCap does.
    """
    if fmt == "csv":
        yield _csv_lines([list(header or columns)])
        for batch in batches:
            yield _csv_lines(_cells(row, columns) for row in batch)
    elif fmt == "json":
        yield "["
        first = True
        for batch in batches:
            if not batch:
                continue
            parts = [json.dumps(dict(zip(columns, _cells(row, columns), strict=True)), ensure_ascii=False,
                                separators=(",", ":")) for row in batch]
            yield ("" if first else ",") + ",".join(parts)
            first = False
        yield "]"
    else:
        yield XML_HEAD + "<records>\n"
        for batch in batches:
            yield "".join(_xml_item(row, columns) for row in batch)
        yield "</records>\n"


def rows_response(
    columns: Sequence[str], batches: Iterable[Sequence[Row]], fmt: Format, *,
    header: Sequence[str] | None = None, stream: bool = False,
) -> Response:
    """A row-shaped answer; `stream=True` keeps the request context open while batches are read."""
    pieces = encode_rows(columns, batches, fmt, header=header)
    body: Iterable[str] = stream_with_context(pieces) if stream else "".join(pieces)
    return Response(body, mimetype=MIMETYPES[fmt])


def object_response(obj: Mapping[str, Any], fmt: Format) -> Response:
    """A single object (project information): a JSON object, one CSV row, one XML item."""
    values = {key: "" if value is None else str(value) for key, value in obj.items()}
    if fmt == "json":
        return Response(json.dumps(dict(obj), ensure_ascii=False), mimetype=MIMETYPES["json"])
    if fmt == "csv":
        return Response(_csv_lines([list(values), list(values.values())]), mimetype=MIMETYPES["csv"])
    return Response(XML_HEAD + _xml_item(values, list(values)), mimetype=MIMETYPES["xml"])


def result_response(fmt: Format, *, json_value: Any, csv_rows: Sequence[Sequence[str]], xml: str) -> Response:
    """The answer to an import or delete, whose shape REDCap defines per format."""
    if fmt == "json":
        return Response(json.dumps(json_value, ensure_ascii=False), mimetype=MIMETYPES["json"])
    if fmt == "csv":
        return Response(_csv_lines(csv_rows), mimetype=MIMETYPES["csv"])
    return Response(XML_HEAD + xml, mimetype=MIMETYPES["xml"])


def error_response(message: str, status: int, fmt: Format) -> Response:
    """An error as REDCap sends it in each format, with the matching 4xx status."""
    if fmt == "json":
        body = json.dumps({"error": message}, ensure_ascii=False)
    elif fmt == "csv":
        body = f"ERROR: {message}"
    else:
        escaped = _XML_INVALID.sub("", message).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = f"{XML_HEAD}<hash>\n  <error>{escaped}</error>\n</hash>"
    return Response(body, status=status, mimetype=MIMETYPES[fmt])
