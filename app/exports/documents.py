"""The documents that describe the data: codebook (CSV and HTML) and the Frictionless datapackage.

Both are generated from the same column objects the data was written from, so they
cannot drift from the files: every column's name, label, type, units, codes and labels,
the missing-data codes it may carry (and how Stata and SPSS encode them), where it comes
from and how it was derived.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import render_template

from app.exports.formats import MissingCodes, escape_formula
from app.exports.plan import Column, Kind, Plan, Table
from app.exports.profiles import Profile

CODEBOOK_HEADER = ("table", "column", "label", "type", "units", "values", "missing_codes", "source", "derivation")
FRICTIONLESS_TYPES = {Kind.STRING: "string", Kind.INTEGER: "integer", Kind.NUMBER: "number", Kind.DATE: "date",
                      Kind.DATETIME: "datetime"}


def _values(column: Column) -> str:
    return " | ".join(f"{code}={label}" for code, label in column.value_labels)


def _missing(column: Column, missing: MissingCodes) -> str:
    if not column.codes:
        return ""
    if not column.kind.numeric:
        return "see the _miss column: " + ", ".join(column.codes)
    return " | ".join(
        f"{code}={missing.labels[code]} (Stata .{missing.stata[code]}, SPSS {int(missing.spss[code])})"
        for code in column.codes
    )


def codebook_rows(plan: Plan, missing: MissingCodes) -> list[dict[str, str]]:
    return [
        {"table": table.name, "column": c.name, "label": c.label, "type": c.kind.value, "units": c.units or "",
         "values": _values(c), "missing_codes": _missing(c, missing), "source": c.source, "derivation": c.derivation}
        for table in plan.tables for c in table.columns
    ]


def write_codebook_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CODEBOOK_HEADER)
        writer.writeheader()
        writer.writerows({key: escape_formula(value) for key, value in row.items()} for row in rows)


def write_codebook_html(path: Path, plan: Plan, rows: list[dict[str, str]], missing: MissingCodes,
                        created: datetime, file_list: list[str]) -> None:
    html = render_template(
        "exports/codebook.html", profile=plan.profile, study=plan.study, tables=plan.tables, rows=rows,
        missing=missing, created=created, files=file_list,
    )
    path.write_text(html, encoding="utf-8")


def _schema_field(column: Column) -> dict[str, Any]:
    field: dict[str, Any] = {"name": column.name, "title": column.label, "type": FRICTIONLESS_TYPES[column.kind]}
    if column.derivation:
        field["description"] = column.derivation
    if column.kind == Kind.DATETIME:
        field["format"] = "%Y-%m-%dT%H:%M"
    if column.value_labels:
        values = [int(code) if column.kind == Kind.INTEGER else code for code, _ in column.value_labels]
        field["constraints"] = {"enum": values}
    return field


def _resource(table: Table, main: Table, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"fields": [_schema_field(c) for c in table.columns], "missingValues": [""]}
    if table.key:
        schema["primaryKey"] = list(table.key)
    if table is not main:
        key = table.key[0]
        schema["foreignKeys"] = [{"fields": key, "reference": {"resource": main.name, "fields": key}}]
    return {"name": table.name, "title": table.label, "path": path, "profile": "tabular-data-resource",
            "format": "csv", "mediatype": "text/csv", "encoding": "utf-8", "schema": schema}


def write_datapackage(path: Path, plan: Plan, profile: Profile, csv_paths: dict[str, str], created: datetime) -> None:
    main = plan.main_table()
    package = {
        "profile": "tabular-data-package",
        "name": f"{plan.study.id}-{profile.name}".lower().replace("_", "-"),
        "title": f"{plan.study.name}: {profile.label}",
        "description": profile.description,
        "created": created.isoformat(timespec="seconds"),
        "version": plan.study.definition_version,
        "resources": [_resource(t, main, csv_paths[t.name]) for t in plan.tables],
    }
    path.write_text(json.dumps(package, indent=2, ensure_ascii=False), encoding="utf-8")
