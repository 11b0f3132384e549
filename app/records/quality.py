"""Data-quality rules: evaluated on save (soft warnings) and over a whole site (report).

The rules are data in the study definition (`forms/rules.yaml`) and use the same logic
language and evaluator as branching.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.logic import evaluate, is_true
from app.records.models import FormInstance, Record
from app.study.definition import Rule, Study
from app.study.fieldtypes import field_type


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: Rule
    record_label: str
    instrument: str
    instance: int
    field: str
    value: str


def rule_hits(study: Study, rules: Iterable[Rule], scope: Mapping[str, Any]) -> list[Rule]:
    """The rules whose logic is true for these values."""
    codes = study.missing_code_values
    return [rule for rule in rules if is_true(evaluate(rule.tree, scope, codes))]


def shown_value(study: Study, field_name: str, scope: Mapping[str, Any]) -> str:
    field = study.field(field_name)
    value = scope.get(field_name)
    if isinstance(value, str) and value in study.missing_code_values:
        return value
    return field_type(field).to_text(field, value)


def site_report(session: Session, study: Study, site_id: int, batch: int = 500) -> Iterator[RuleHit]:
    """Every rule hit at a site, record by record, reading form rows in batches."""
    last_id = 0
    while True:
        records = session.execute(
            select(Record.id, Record.label)
            .where(Record.site_id == site_id, Record.deleted_at.is_(None), Record.id > last_id)
            .order_by(Record.id)
            .limit(batch)
        ).all()
        if not records:
            return
        forms: dict[int, list[FormInstance]] = {rid: [] for rid, _ in records}
        for form in session.scalars(select(FormInstance).where(FormInstance.record_id.in_(list(forms)))):
            forms[form.record_id].append(form)
        for record_id, label in records:
            yield from _record_hits(study, label, forms[record_id])
        last_id = records[-1][0]


def _record_hits(study: Study, label: str, forms: list[FormInstance]) -> Iterator[RuleHit]:
    base: dict[str, Any] = {}
    for form in forms:
        if study.has_instrument(form.instrument) and not study.instrument(form.instrument).repeatable:
            base.update(form.data)
            base.update(form.missing)
    for form in forms:
        if not study.has_instrument(form.instrument):
            continue
        scope = {**base, **form.data, **form.missing}
        for rule in rule_hits(study, study.rules_for(form.instrument), scope):
            value = shown_value(study, rule.field, scope)
            yield RuleHit(rule, label, form.instrument, form.instance, rule.field, value)
