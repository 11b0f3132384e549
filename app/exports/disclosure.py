"""The disclosure check: how many records share each combination of quasi-identifiers.

A rare condition means small numbers: a single preterm girl at one site may be
recognisable from site, sex and gestational age alone. The check counts records per
combination in a first, cheap pass (only the forms holding quasi-identifiers are read,
and only the counts are kept), so the second pass can suppress the small cells or the
export can be refused before any file is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.errors import CasebookError
from app.exports.profiles import DisclosureRule
from app.exports.source import FormRow
from app.logic import evaluate, is_true, referenced_fields
from app.study.definition import MissingCode, Study

#: How many distinct inputs of the check (site and field values) have their combination
#: remembered; a check over a free-text field would otherwise remember one per record.
KEY_MEMORY = 16384
#: The code a suppressed cell carries, so that it is never mistaken for a blank or a value.
SUPPRESSED = MissingCode("SUPP", "Suppressed (disclosure control)")

Forms = Mapping[tuple[str, int], FormRow]


class ExportRefused(CasebookError):
    """The profile refuses to export while some combination has fewer than k records."""


@dataclass(frozen=True, slots=True)
class DisclosureReport:
    """What the manifest and the preview say; it names no combination's values, since those
    values are exactly what would single out the few records concerned."""

    k: int
    quasi_identifiers: tuple[str, ...]
    action: str
    exempt: str | None
    records_checked: int
    records_exempt: int
    combinations: int
    small_combinations: int
    records_in_small_combinations: int

    @property
    def passed(self) -> bool:
        return self.small_combinations == 0

    @property
    def refused(self) -> bool:
        return not self.passed and self.action == "refuse"

    @property
    def suppressed_records(self) -> int:
        return self.records_in_small_combinations if self.action == "suppress" else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "quasi_identifiers": list(self.quasi_identifiers),
            "action": self.action,
            "exempt": self.exempt,
            "records_checked": self.records_checked,
            "records_exempt": self.records_exempt,
            "combinations": self.combinations,
            "combinations_below_k": self.small_combinations,
            "records_in_combinations_below_k": self.records_in_small_combinations,
            "records_suppressed": self.suppressed_records,
            "result": "passed" if self.passed else ("refused" if self.refused else "suppressed"),
        }


class DisclosureCheck:
    """Count in a first pass (`add`), then `finish`; then, while writing, `suppressed` answers per
    record and tallies what leaves unsuppressed, and `verify` checks that tally at the end."""

    def __init__(self, rule: DisclosureRule, study: Study) -> None:
        self.rule = rule
        self.study = study
        self._counts: Counter[tuple[str, ...]] = Counter()
        self._exempt = 0
        self._exported: Counter[tuple[str, ...]] = Counter()
        #: (field, its form's key in a record's forms) for every field the check reads.
        self._read = tuple((name, (study.field(name).instrument, 1))
                           for name in sorted(rule.fields | _exempt_fields(rule)))
        self.instruments = frozenset(instrument for _, (instrument, _) in self._read)
        #: Whether a field read holds a list (a checkbox), which must become a tuple to be remembered.
        self._lists = any(study.field(name).type == "checkbox" for name, _ in self._read)
        #: Combinations by what the check read (site and fields): the census and the export ask
        #: once per record, and those inputs repeat. One day for both passes.
        self._keys: dict[tuple[Any, ...], tuple[str, ...] | None] = {}
        self._today = date.today()
        #: Where the exempt rule's fields are in what the check reads (after the site), and its
        #: answers by their values: far fewer than the combinations (a gestational age in weeks
        #: makes many), and the rule's evaluation is most of a new combination's cost.
        exempt = _exempt_fields(rule)
        self._exempt_at = tuple(i + 1 for i, (name, _) in enumerate(self._read) if name in exempt)
        self._exempt_answers: dict[tuple[Any, ...], bool] = {}

    def _reads(self, forms: Forms) -> list[Any]:
        """The fields the check reads, in `_read` order: a field's code, else its value (None: blank)."""
        values: list[Any] = []
        for name, key in self._read:
            form = forms.get(key)
            value = None
            if form is not None:
                if form.missing:
                    value = form.missing.get(name)
                if value is None:
                    value = form.data.get(name)
            values.append(value)
        return values

    def key(self, site_code: str, forms: Forms) -> tuple[str, ...] | None:
        """The record's combination, or None for an exempt record (public already)."""
        values = self._reads(forms)
        reads = (site_code, *values) if not self._lists else (
            site_code, *(tuple(v) if v.__class__ is list else v for v in values))
        if reads in self._keys:
            return self._keys[reads]
        scope = {name: v for (name, _), v in zip(self._read, values, strict=True) if v is not None}
        key = None if self._is_exempt(reads, scope) else self._key(site_code, scope)
        if len(self._keys) < KEY_MEMORY:
            self._keys[reads] = key
        return key

    def _is_exempt(self, reads: tuple[Any, ...], scope: dict[str, Any]) -> bool:
        """Whether the exempt rule holds for a record, by the values of the fields it names."""
        if self.rule.exempt_tree is None:
            return False
        inputs = tuple(reads[i] for i in self._exempt_at)
        answer = self._exempt_answers.get(inputs)
        if answer is None:
            answer = is_true(evaluate(self.rule.exempt_tree, scope, self.study.missing_code_values, self._today))
            if len(self._exempt_answers) < KEY_MEMORY:
                self._exempt_answers[inputs] = answer
        return answer

    def _key(self, site_code: str, scope: dict[str, Any]) -> tuple[str, ...]:
        codes = self.study.missing_code_values
        parts = []
        for qi in self.rule.quasi_identifiers:
            if qi.field is None:
                parts.append(site_code)
                continue
            value = scope.get(qi.field)
            if value is None:
                parts.append("")
            elif isinstance(value, str) and value in codes:
                parts.append(value)
            elif qi.bands:
                parts.append(qi.band(float(value)))
            else:
                parts.append(",".join(value) if isinstance(value, list) else str(value))
        return tuple(parts)

    def add(self, site_code: str, forms: Forms) -> None:
        key = self.key(site_code, forms)
        if key is None:
            self._exempt += 1
        else:
            self._counts[key] += 1

    def finish(self) -> DisclosureReport:
        small = {key: n for key, n in self._counts.items() if n < self.rule.k}
        return DisclosureReport(
            k=self.rule.k,
            quasi_identifiers=tuple(q.name for q in self.rule.quasi_identifiers),
            action=self.rule.action,
            exempt=self.rule.exempt,
            records_checked=sum(self._counts.values()),
            records_exempt=self._exempt,
            combinations=len(self._counts),
            small_combinations=len(small),
            records_in_small_combinations=sum(small.values()),
        )

    def begin_export(self) -> None:
        self._exported.clear()

    def suppressed(self, site_code: str, forms: Forms) -> bool:
        """True when the record's quasi-identifier cells must be suppressed (after `finish`).

        A combination the census never saw (a record added since) counts as small.
        """
        key = self.key(site_code, forms)
        if key is None:
            return False
        small = self._counts[key] < self.rule.k if key in self._counts else True
        if small and self.rule.action == "suppress":
            return True
        self._exported[key] += 1
        return False

    def verify(self) -> None:
        """Every combination that left unsuppressed must hold k records in the files themselves,
        whatever changed in the database between the census and the writing."""
        if any(n < self.rule.k for n in self._exported.values()):
            raise ExportRefused("The records changed while the export was being made, so nothing was "
                                "exported. Please export again.")


def _exempt_fields(rule: DisclosureRule) -> frozenset[str]:
    return referenced_fields(rule.exempt_tree) if rule.exempt_tree is not None else frozenset()
