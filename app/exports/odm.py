"""CDISC ODM 1.3.2 (metadata and clinical data), streamed one subject at a time.

The items are the export's columns, not the raw fields, so the ODM file is exactly as
de-identified as the tables: relative days instead of dates, pseudonymous subject keys
and site locations. A missing-data code is an ItemData with IsNull="Yes" and a Flag
whose FlagValue comes from the MISSING code list, so it stays distinct from a blank
(no ItemData) and validates against the ODM schema without vendor extensions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import escape, quoteattr

from app.exports.plan import Block, Column, Kind, Plan, RecordView, Role
from app.study.definition import Instrument, Study
from app.study.fieldtypes import format_number

NAMESPACE = "http://www.cdisc.org/ns/odm/v1.3"
STUDY_EVENT_OID = "SE.REGISTRY"
EXPORT_FORM = "export"
MISSING_CODE_LIST = "CL.MISSING"
DATA_TYPES = {Kind.STRING: "text", Kind.INTEGER: "integer", Kind.NUMBER: "float", Kind.DATE: "date",
              Kind.DATETIME: "datetime"}
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    """Element text, with characters XML 1.0 cannot hold replaced."""
    return escape(_NOT_XML.sub("\ufffd", value))


def _attr(value: str) -> str:
    return quoteattr(_NOT_XML.sub("\ufffd", value), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def _translated(tag: str, text: str) -> str:
    return f'<{tag}><TranslatedText xml:lang="en">{_text(text)}</TranslatedText></{tag}>'


def _value(kind: Kind, value: Any) -> str:
    """A Value attribute, quoted; numbers and dates need no escaping, so they skip it (hot path)."""
    if kind == Kind.INTEGER:
        return f'"{int(value)}"'
    if kind == Kind.NUMBER:
        return f'"{format_number(float(value))}"'
    if kind == Kind.DATE:
        return f'"{value.isoformat()}"'
    if kind == Kind.DATETIME:
        return f'"{value.strftime("%Y-%m-%dT%H:%M:00")}"'
    return _attr(str(value))


class OdmWriter:
    def __init__(self, path: Path, plan: Plan, *, file_oid: str, created: datetime, software_version: str,
                 missing_labels: dict[str, str], sites: Iterable[str]) -> None:
        self.plan = plan
        self.study: Study = plan.study
        self.study_oid = f"ST.{self.study.id}"
        self.mdv_oid = f"MDV.{self.study.definition_version}"
        #: Per instrument, the items of its group: its columns except the missing-code companions.
        self.items = {
            name: tuple(c for c in columns if c.role != Role.MISSING)
            for name, columns in plan.instrument_columns.items()
        }
        self.derived = tuple(c for c in plan.record_columns if c.role == Role.DAY0)
        self.site_column = next((c for c in plan.record_columns if c.role == Role.SITE), None)
        #: Quoted OIDs, computed once: a subject writes hundreds of them.
        self._oids = {c.name: _attr("IT." + c.name) for cols in (*self.items.values(), self.derived) for c in cols}
        self._file: TextIO = path.open("w", encoding="utf-8")
        self._write_head(file_oid, created, software_version, missing_labels, sorted(set(sites)))

    # -- metadata ------------------------------------------------------------------------------

    def _forms(self) -> list[tuple[str, str, bool, tuple[Column, ...]]]:
        forms = [(inst.name, inst.label, inst.repeatable, self.items[inst.name]) for inst in self.plan.instruments]
        if self.derived:
            forms.append((EXPORT_FORM, "Derived by the export", False, self.derived))
        return forms

    def _write_head(self, file_oid: str, created: datetime, version: str, missing_labels: dict[str, str],
                    sites: list[str]) -> None:
        w = self._file.write
        w('<?xml version="1.0" encoding="UTF-8"?>\n')
        w(f'<ODM xmlns="{NAMESPACE}" FileType="Snapshot" Granularity="All" FileOID={_attr(file_oid)} '
          f'CreationDateTime="{created.isoformat(timespec="seconds")}" ODMVersion="1.3.2" '
          f'SourceSystem="Casebook" SourceSystemVersion={_attr(version)}>\n')
        w(f'<Study OID={_attr(self.study_oid)}>\n<GlobalVariables><StudyName>{_text(self.study.name)}</StudyName>'
          f'<StudyDescription>{_text(self.study.description)}</StudyDescription>'
          f'<ProtocolName>{_text(self.study.protocol)}</ProtocolName></GlobalVariables>\n')
        units = sorted({c.units for cols in self.items.values() for c in cols if c.units})
        self._unit_oids = {u: f"MU.{i}" for i, u in enumerate(units, 1)}
        if units:
            w("<BasicDefinitions>")
            for unit, oid in self._unit_oids.items():
                w(f'<MeasurementUnit OID="{oid}" Name={_attr(unit)}>{_translated("Symbol", unit)}</MeasurementUnit>')
            w("</BasicDefinitions>\n")
        w(f'<MetaDataVersion OID={_attr(self.mdv_oid)} Name={_attr(self.study.definition_version)}>\n')
        w(f'<Protocol><StudyEventRef StudyEventOID="{STUDY_EVENT_OID}" OrderNumber="1" Mandatory="Yes"/></Protocol>\n')
        forms = self._forms()
        w(f'<StudyEventDef OID="{STUDY_EVENT_OID}" Name="Registry" Repeating="No" Type="Common">')
        for order, (name, _, _, _) in enumerate(forms, 1):
            w(f'<FormRef FormOID={_attr("F." + name)} OrderNumber="{order}" Mandatory="No"/>')
        w("</StudyEventDef>\n")
        for name, label, _, _ in forms:
            w(f'<FormDef OID={_attr("F." + name)} Name={_attr(label)} Repeating="No">'
              f'<ItemGroupRef ItemGroupOID={_attr("IG." + name)} Mandatory="No"/></FormDef>\n')
        for name, label, repeating, columns in forms:
            repeats = "Yes" if repeating else "No"
            w(f'<ItemGroupDef OID={_attr("IG." + name)} Name={_attr(label)} Repeating="{repeats}">')
            for order, c in enumerate(columns, 1):
                w(f'<ItemRef ItemOID={_attr("IT." + c.name)} OrderNumber="{order}" Mandatory="No"/>')
            w("</ItemGroupDef>\n")
        code_lists: dict[str, Column] = {}
        for _, _, _, columns in forms:
            for c in columns:
                w(f'<ItemDef OID={_attr("IT." + c.name)} Name={_attr(c.name)} DataType="{DATA_TYPES[c.kind]}">')
                w(_translated("Description", c.derivation or c.label) + _translated("Question", c.label))
                if c.units:
                    w(f'<MeasurementUnitRef MeasurementUnitOID="{self._unit_oids[c.units]}"/>')
                if c.value_labels:
                    code_lists[c.name] = c
                    w(f'<CodeListRef CodeListOID={_attr("CL." + c.name)}/>')
                w("</ItemDef>\n")
        for name, c in code_lists.items():
            data_type = "integer" if c.kind == Kind.INTEGER else "text"
            w(f'<CodeList OID={_attr("CL." + name)} Name={_attr(c.label)} DataType="{data_type}">')
            for code, label in c.value_labels:
                w(f'<CodeListItem CodedValue={_attr(code)}>{_translated("Decode", label)}</CodeListItem>')
            w("</CodeList>\n")
        w(f'<CodeList OID="{MISSING_CODE_LIST}" Name="Missing-data codes" DataType="text">')
        for code, label in missing_labels.items():
            w(f'<CodeListItem CodedValue={_attr(code)}>{_translated("Decode", label)}</CodeListItem>')
        w("</CodeList>\n</MetaDataVersion>\n</Study>\n")
        w(f'<AdminData StudyOID={_attr(self.study_oid)}>')
        effective = created.date().isoformat()
        for site in sites:
            w(f'<Location OID={_attr("LOC." + site)} Name={_attr(site)} LocationType="Site">'
              f'<MetaDataVersionRef StudyOID={_attr(self.study_oid)} MetaDataVersionOID={_attr(self.mdv_oid)} '
              f'EffectiveDate="{effective}"/></Location>')
        w("</AdminData>\n")
        w(f'<ClinicalData StudyOID={_attr(self.study_oid)} MetaDataVersionOID={_attr(self.mdv_oid)}>\n')

    # -- data ----------------------------------------------------------------------------------

    def write(self, records: Sequence[RecordView]) -> None:
        """A batch of subjects. Their cells are computed a column at a time, as the tables' are:
        per instrument over all its instances in the batch, and the record's own items."""
        groups = []
        for inst in self.plan.instruments:
            pairs = [(rec, form) for rec in records for form in rec.instances.get(inst.name, ())]
            recs, forms = [rec for rec, _ in pairs], [form for _, form in pairs]
            columns = self.items[inst.name]
            groups.append((inst, columns, _Cells(self.plan.form_block(columns, recs, forms))))
        own = (*((self.site_column,) if self.site_column else ()), *self.derived)
        record_cells = _Cells(self.plan.form_block(own, records, [None] * len(records)))
        self._file.write("".join(self._subject(row, rec, groups, record_cells) for row, rec in enumerate(records)))

    def _subject(self, row: int, rec: RecordView, groups: list[tuple[Instrument, tuple[Column, ...], _Cells]],
                 record_cells: _Cells) -> str:
        site = record_cells.cell(0, row)[0] if self.site_column else None
        parts = [f"<SubjectData SubjectKey={_attr(rec.key)}>"]
        if site is not None:  # a suppressed site has no location
            parts.append(f'<SiteRef LocationOID={_attr("LOC." + site)}/>')
        parts.append(f'<StudyEventData StudyEventOID="{STUDY_EVENT_OID}">')
        for inst, columns, cells in groups:
            forms = rec.instances.get(inst.name, ())
            if forms:
                parts.append(f'<FormData FormOID={_attr("F." + inst.name)}>')
                parts += [self._group(inst.name, columns, cells, cells.next_row(),
                                      form.instance if inst.repeatable else None) for form in forms]
                parts.append("</FormData>")
        if self.derived:
            parts.append(f'<FormData FormOID={_attr("F." + EXPORT_FORM)}>')
            parts.append(self._group(EXPORT_FORM, self.derived, record_cells, row, None,
                                     first=1 if self.site_column else 0))
            parts.append("</FormData>")
        parts.append("</StudyEventData></SubjectData>\n")
        return "".join(parts)

    def _group(self, name: str, columns: tuple[Column, ...], cells: _Cells, row: int, repeat_key: int | None,
               first: int = 0) -> str:
        """One item group: `columns` are the block's columns from `first` on, at `row`."""
        key = f' ItemGroupRepeatKey="{repeat_key}"' if repeat_key is not None else ""
        parts = [f"<ItemGroupData ItemGroupOID={_attr('IG.' + name)}{key}>"]
        for index, c in enumerate(columns, first):
            value, code = cells.cell(index, row)
            oid = self._oids[c.name]
            if code:
                parts.append(f'<ItemData ItemOID={oid} IsNull="Yes"><Annotation SeqNum="1"><Flag>'
                             f'<FlagValue CodeListOID="{MISSING_CODE_LIST}">{_text(code)}</FlagValue>'
                             "</Flag></Annotation></ItemData>")
            elif value is not None:
                parts.append(f"<ItemData ItemOID={oid} Value={_value(c.kind, value)}/>")
        parts.append("</ItemGroupData>")
        return "".join(parts)

    def close(self) -> None:
        self._file.write("</ClinicalData>\n</ODM>\n")
        self._file.close()


class _Cells:
    """A block read cell by cell, and (for an instrument's block) row after row as subjects are written."""

    def __init__(self, block: Block) -> None:
        self.values, self.codes = block.values, block.codes
        self._next = 0

    def cell(self, column: int, row: int) -> tuple[Any, str | None]:
        codes = self.codes[column]
        return self.values[column][row], (codes[row] if codes is not None else None)

    def next_row(self) -> int:
        self._next += 1
        return self._next - 1
