"""The immutable study definition: instruments, fields, choices, logic trees, identifier flags.

Everything that needs to know the study's shape (web forms, the write path, exports,
the API's metadata, the data dictionary) reads it from one `Study` object built by
`app.study.loader`; nothing restates a field list by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from app.logic import Expr


@dataclass(frozen=True, slots=True)
class Choice:
    code: str
    label: str


@dataclass(frozen=True, slots=True)
class MissingCode:
    """A code a field may hold instead of a value, e.g. ``NR`` = Not reported."""

    code: str
    label: str


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    type: str
    instrument: str
    section: str | None = None
    note: str | None = None
    units: str | None = None
    choices: tuple[Choice, ...] = ()
    required: bool = False
    identifier: bool = False
    min: Any = None
    max: Any = None
    branching: str | None = None
    branching_tree: Expr | None = None
    calculation: str | None = None
    calculation_tree: Expr | None = None
    allow_missing_codes: bool = True
    line: int | None = None

    @property
    def stores_value(self) -> bool:
        """Descriptive fields show text only; every other type holds data."""
        return self.type != "descriptive"

    @property
    def is_free_text(self) -> bool:
        """Unvalidated text could hold anything, including identifiers: exports drop it."""
        return self.type in ("text", "notes")

    def choice_label(self, code: str) -> str | None:
        for choice in self.choices:
            if choice.code == code:
                return choice.label
        return None

    @property
    def choice_codes(self) -> tuple[str, ...]:
        return tuple(choice.code for choice in self.choices)


@dataclass(frozen=True, slots=True)
class Rule:
    """A data-quality rule: `tree` evaluates TRUE when the data look wrong at `field`."""

    id: str
    label: str
    field: str
    logic: str
    tree: Expr


@dataclass(frozen=True, slots=True)
class Instrument:
    name: str
    label: str
    repeatable: bool
    fields: tuple[Field, ...]
    description: str | None = None

    @property
    def data_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.stores_value)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Study:
    id: str
    name: str
    description: str
    protocol: str
    version: str
    digest: str
    record_id_field: str
    record_id_label: str
    missing_codes: tuple[MissingCode, ...]
    instruments: tuple[Instrument, ...]
    rules: tuple[Rule, ...] = ()
    _fields: Mapping[str, Field] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def definition_version(self) -> str:
        """Version stated in the files plus a content hash, so exports name exactly what was used."""
        return f"{self.version}+{self.digest[:12]}"

    @property
    def missing_code_values(self) -> frozenset[str]:
        return frozenset(m.code for m in self.missing_codes)

    def missing_label(self, code: str) -> str | None:
        for m in self.missing_codes:
            if m.code == code:
                return m.label
        return None

    def instrument_after(self, name: str) -> Instrument | None:
        """The next instrument in the study's order (None after the last): data entry's next form."""
        names = [inst.name for inst in self.instruments]
        following = names.index(name) + 1
        return self.instruments[following] if following < len(names) else None

    def instrument(self, name: str) -> Instrument:
        for inst in self.instruments:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def has_instrument(self, name: str) -> bool:
        return any(inst.name == name for inst in self.instruments)

    def field(self, name: str) -> Field:
        return self._fields[name]

    def has_field(self, name: str) -> bool:
        return name in self._fields

    def iter_fields(self) -> Iterator[Field]:
        for inst in self.instruments:
            yield from inst.fields

    def rules_for(self, instrument: str) -> tuple[Rule, ...]:
        """Rules shown on a form: those whose field belongs to `instrument`."""
        return tuple(r for r in self.rules if self._fields[r.field].instrument == instrument)

    @property
    def identifier_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.iter_fields() if f.identifier)
