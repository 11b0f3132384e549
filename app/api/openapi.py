"""The OpenAPI 3.1 description of the endpoint, built from the same table that dispatches calls.

REDCap's API is one form-encoded POST whose meaning depends on `content`; the
description says exactly that, lists the contents the endpoint answers (from
`handlers.CONTENTS`, so it cannot drift) and every parameter Casebook reads.
"""

from __future__ import annotations

from typing import Any

from app import __version__
from app.api.handlers import CONTENTS, REDCAP_VERSION

_LIST_NOTE = ("A list: send name[0]=a&name[1]=b (PyCap, from 0), name[1]=a (redcapAPI, from 1) or name=a,b "
              "(REDCapR).")
_BOOL_NOTE = "A boolean: true/false, True/False or 1/0."


def _string(description: str, enum: list[str] | None = None, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if enum:
        schema["enum"] = enum
    if default is not None:
        schema["default"] = default
    return schema


PARAMETERS: dict[str, dict[str, Any]] = {
    "token": _string("Your API token: 32 hexadecimal characters, from your profile page or "
                     "`flask users api-token USERNAME`."),
    "content": _string("What to read or write.", enum=list(CONTENTS)),
    "format": _string("Format of the data sent or returned.", enum=["json", "csv", "xml"], default="xml"),
    "returnFormat": _string("Format of errors and import results; defaults to `format`.",
                            enum=["json", "csv", "xml"]),
    "type": _string("Record layout: only flat (one row per record or repeating instance).", enum=["flat"],
                    default="flat"),
    "action": _string("`delete` deletes records (content=record); `export` and `import` are implied.",
                      enum=["export", "import", "delete"]),
    "records": _string("Record IDs (e.g. KMU-0001). " + _LIST_NOTE),
    "fields": _string("Field names (metadata, record). " + _LIST_NOTE),
    "forms": _string("Instrument names (metadata, record). " + _LIST_NOTE),
    "field": _string("One field name (exportFieldNames)."),
    "rawOrLabel": _string("Values as codes or as labels.", enum=["raw", "label"], default="raw"),
    "rawOrLabelHeaders": _string("CSV header as variable names or as field labels.", enum=["raw", "label"],
                                 default="raw"),
    "exportCheckboxLabel": _string("With rawOrLabel=label, a ticked checkbox exports its label. " + _BOOL_NOTE),
    "exportDataAccessGroups": _string("Add the redcap_data_access_group column (the site). " + _BOOL_NOTE),
    "filterLogic": _string("Only rows for which this logic is true (the language of branching logic)."),
    "dateRangeBegin": _string("Records created or changed at or after this UTC time (YYYY-MM-DD HH:MM:SS)."),
    "dateRangeEnd": _string("Records created or changed at or before this UTC time (YYYY-MM-DD HH:MM:SS)."),
    "data": _string("Records to import, as a JSON array of objects or CSV with a header line."),
    "overwriteBehavior": _string("normal: blank values are ignored; overwrite: blank values erase.",
                                 enum=["normal", "overwrite"], default="normal"),
    "forceAutoNumber": _string("Create new records numbered by Casebook at the site named by "
                               "redcap_data_access_group (or your only site). " + _BOOL_NOTE),
    "returnContent": _string("What an import answers.", enum=["count", "ids", "auto_ids", "nothing"],
                             default="count"),
    "dateFormat": _string("How dates in imported data are written.", enum=["YMD", "MDY", "DMY"], default="YMD"),
    "reason": _string("Casebook addition: the reason for changing a Complete form (import) or for deleting "
                      "records (delete)."),
    "logtype": _string("log: which kind of events.", enum=["record", "record_add", "record_edit",
                                                            "record_delete", "export", "user"]),
    "user": _string("log: only this user's events."),
    "record": _string("log: only this record's events."),
    "beginTime": _string("log: events at or after this UTC time (YYYY-MM-DD HH:MM)."),
    "endTime": _string("log: events at or before this UTC time (YYYY-MM-DD HH:MM)."),
}


#: Every refusal the endpoint gives, as REDCap gives it: an HTTP status and an error body.
ERROR_STATUSES: dict[str, str] = {
    "400": "A bad request (unknown content, a parameter or imported value that cannot be used).",
    "403": "Unknown or revoked token, or the user lacks the right.",
    "404": "A record that does not exist or is outside the token's sites.",
    "413": "The request is larger than the server accepts.",
    "429": "Too many calls from this address in a minute.",
    "503": "The database cannot be reached just now; nothing was changed.",
}
_ERROR_SHAPES = (" The body is `{\"error\": ...}` (JSON), `ERROR: ...` (CSV) or `<hash><error>` (XML), "
                 "in `returnFormat`.")


def openapi(server_url: str) -> dict[str, Any]:
    """The description, with the endpoint's absolute URL as its server."""
    contents = "\n".join(
        f"- `{c.name}`: {c.summary}" for c in CONTENTS.values()
    )
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    error_content = {"application/json": {"schema": error}, "text/csv": {}, "text/xml": {}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Casebook REDCap-compatible API",
            "version": __version__,
            "description": (
                f"One endpoint that answers like REDCap {REDCAP_VERSION}'s API, so PyCap, REDCapR, redcapAPI "
                "and scripts written for REDCap work unchanged. A token carries exactly its user's rights "
                "and sites; a statistician's token gets de-identified data.\n\nContents:\n" + contents
            ),
        },
        "servers": [{"url": server_url}],
        "paths": {
            "/api/": {
                "post": {
                    "summary": "Call the API (REDCap style: the `content` parameter says what for)",
                    "operationId": "callApi",
                    "requestBody": {
                        "required": True,
                        "content": {"application/x-www-form-urlencoded": {"schema": {
                            "type": "object",
                            "properties": PARAMETERS,
                            "required": ["token", "content"],
                            "additionalProperties": True,
                        }}},
                    },
                    "responses": {
                        "200": {"description": "The data asked for, in `format` (a stream for large exports).",
                                "content": {"application/json": {}, "text/csv": {}, "text/xml": {},
                                            "text/plain": {}}},
                        **{status: {"description": why + _ERROR_SHAPES, "content": error_content}
                           for status, why in ERROR_STATUSES.items()},
                    },
                },
            },
        },
    }
