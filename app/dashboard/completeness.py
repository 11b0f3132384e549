"""Required-field completeness and data-quality rule hits per site, as one grouped query per form.

Both depend on the study's logic: a required field hidden by branching is not missing, and
a rule is logic over a record's values. Evaluating that record by record would make a
dashboard as slow as the site's data-quality report, so each instrument gets one statement:

* rules made of orderings (``[ga_weeks] < 22``, ``datediff([dob], [lesion_date], 'd', true) < 0``,
  joined by and/or/not) are translated into SQL conditions and summed by the database;
* everything else (branching such as ``[drug] = '3'``, and any rule the translation does
  not cover) is evaluated by the real evaluator once per *distinct combination* of the
  values it reads, which the same statement groups and counts. Branching reads a few coded
  fields, so the groups number hundreds at most whatever the number of records, and each
  tree is evaluated once per distinct value of the fields it reads itself.

A form's logic sees the form itself plus the record's non-repeatable forms, as the write
path's ``record_context`` builds it; the others are joined by record id.

Each site's totals per instrument are remembered with the fingerprint of the forms they
were computed from (that instrument's and those joined to it, see ``app.records.fingerprints``):
after a save only the saving site's affected instruments are computed again.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    column,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session, aliased

from app.db import JSONType
from app.logic import evaluate, is_true, referenced_fields
from app.logic.nodes import Bool, Call, Expr, Num, Op, Str
from app.logic.nodes import Field as FieldRef
from app.records.fingerprints import Fingerprints, RememberedResults, Shared
from app.records.models import FormInstance, Record
from app.study.definition import Field, Instrument, Rule, Study
from app.study.fieldtypes import field_type

#: Field types whose stored value is always a JSON number (or absent).
NUMERIC_TYPES = frozenset({"integer", "number", "calc"})
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(slots=True)
class InstrumentQuality:
    """One site's totals for one instrument, over the form instances saved so far."""

    forms: int = 0
    #: Visible required fields (hidden by branching: not counted) and how many hold a value or code.
    required: int = 0
    filled: int = 0
    #: Rule id -> form instances where the rule is true.
    rule_hits: dict[str, int] = field(default_factory=dict)

    @property
    def filled_share(self) -> float | None:
        return self.filled / self.required if self.required else None


class _Scope:
    """Where each field's value is for logic over one instrument's forms, and the query over them.

    Each value a condition needs is named once, as a column of a CTE over the form rows
    (and the record's other non-repeatable forms), and the conditions and group keys refer
    to those columns by name.
    """

    def __init__(self, study: Study, instrument: Instrument) -> None:
        self.study = study
        self.instrument = instrument
        self.form = aliased(FormInstance, name="form")
        self.joined: dict[str, Any] = {}
        self.extracted: dict[str, ColumnElement[Any]] = {}

    def _source(self, name: str) -> Any | None:
        owner = self.study.field(name).instrument
        if owner == self.instrument.name:
            return self.form
        if self.study.instrument(owner).repeatable:
            return None  # another repeatable form is not in the record's context: blank
        if owner not in self.joined:
            self.joined[owner] = aliased(FormInstance, name=f"ctx{len(self.joined)}")
        return self.joined[owner]

    def _column(self, kind: str, name: str, type_: Any) -> ColumnElement[Any] | None:
        """A CTE column holding one extraction; None if the field is outside this form's context."""
        source = self._source(name)
        if source is None:
            return None
        label = f"{kind}_{name}"
        if label not in self.extracted:
            element = source.missing[name] if kind == "c" else source.data[name]
            extraction = {"v": element, "t": element.as_string(), "c": element.as_string(),
                          "n": element.as_float()}[kind]
            self.extracted[label] = extraction.label(label)
        return column(label, type_)

    def value(self, name: str) -> ColumnElement[Any] | None:
        """The stored JSON value, as the evaluator receives it."""
        return self._column("v", name, JSONType)

    def text(self, name: str) -> ColumnElement[str] | None:
        return self._column("t", name, String())

    def number(self, name: str) -> ColumnElement[float] | None:
        return self._column("n", name, Float())

    def code(self, name: str) -> ColumnElement[str] | None:
        return self._column("c", name, String())

    def uncoded(self, name: str) -> ColumnElement[bool]:
        """No missing-data code for the field; a field outside this form's context has none."""
        code = self.code(name)
        return true() if code is None else code.is_(None)

    def grouped(self, keys: list[ColumnElement[Any]], sums: dict[str, ColumnElement[bool]]) -> Select[Any]:
        """Form rows of the sites given as `site_ids` when run, grouped by `keys` (columns
        from this scope), with their count and each sum."""
        rows = (
            select(Record.site_id.label("site_id"), *self.extracted.values())
            .select_from(self.form)
            .join(Record, Record.id == self.form.record_id)
            .where(self.form.instrument == self.instrument.name,
                   Record.site_id.in_(bindparam("site_ids", expanding=True)), Record.deleted_at.is_(None))
        )
        for owner, alias in self.joined.items():
            rows = rows.outerjoin(alias, and_(alias.record_id == self.form.record_id, alias.instrument == owner))
        scope = rows.cte("scope")
        totals = [func.sum(case((condition, 1), else_=0)).label(label) for label, condition in sums.items()]
        site = column("site_id", Integer())
        return select(site, *keys, func.count().label("n"), *totals).select_from(scope).group_by(site, *keys)


def rule_condition(study: Study, expr: Expr, scope: _Scope) -> ColumnElement[bool] | None:
    """`expr` as a SQL condition that is never NULL, or None where only the evaluator can say.

    Covers the orderings the evaluator defines simply: false when a side is blank or a
    missing code (the code is kept apart from the value and wins over it), numeric for
    number fields, and ISO text order for the sign of a signed datediff() between dates.
    """
    if isinstance(expr, Op) and expr.op in ("and", "or"):
        parts = [rule_condition(study, arg, scope) for arg in expr.args]
        if any(p is None for p in parts):
            return None
        return (and_ if expr.op == "and" else or_)(*parts)
    if isinstance(expr, Op) and expr.op == "not":
        inner = rule_condition(study, expr.args[0], scope)
        return None if inner is None else not_(inner)
    if isinstance(expr, Op) and expr.op in _FLIP:
        left, right = expr.args
        op = expr.op
        if isinstance(left, Num):
            left, right, op = right, left, _FLIP[op]
        if isinstance(right, Num):
            return _ordering(study, left, op, right.value, scope)
    return None


def _compare(op: str, left: Any, right: Any) -> ColumnElement[bool]:
    return _ORDER[op](left, right)


def _ordering(study: Study, expr: Expr, op: str, number: float, scope: _Scope) -> ColumnElement[bool] | None:
    if any(_is_number(code) for code in study.missing_code_values):
        return None  # a numeric missing code would be blank to the evaluator but a number here
    if isinstance(expr, FieldRef) and study.has_field(expr.name) and study.field(expr.name).type in NUMERIC_TYPES:
        column = scope.number(expr.name)
        if column is None:
            return false()
        return and_(scope.uncoded(expr.name), column.is_not(None), _compare(op, column, number))
    if (isinstance(expr, Call) and expr.name == "datediff" and number == 0 and len(expr.args) == 4
            and expr.args[3] == Bool(True) and isinstance(expr.args[2], Str)
            and all(_is_date_field(study, arg) for arg in expr.args[:2])):
        names = [arg.name for arg in expr.args[:2]]  # type: ignore[union-attr]
        first, second = (scope.text(name) for name in names)
        if first is None or second is None:
            return false()
        # second - first in any unit has the sign of second - first in days; ISO dates sort as text.
        return and_(*(scope.uncoded(name) for name in names), first.is_not(None), second.is_not(None),
                    _compare(op, second, first))
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_date_field(study: Study, expr: Expr) -> bool:
    return isinstance(expr, FieldRef) and study.has_field(expr.name) and study.field(expr.name).type == "date"


def _required(instrument: Instrument) -> list[Field]:
    """The fields the write path requires before a form may be Complete."""
    return [f for f in instrument.data_fields if f.required and field_type(f).is_input]


class _Truths:
    """Whether logic holds, evaluated once per tree and distinct values of the fields it reads.

    Groups differ in every field any logic of the form reads, so the same branching
    (`[drug] = '3'`) meets the same value in many groups.
    """

    def __init__(self, codes: frozenset[str]) -> None:
        self.codes = codes
        self.reads: dict[int, tuple[str, ...]] = {}
        self.known: dict[tuple[Any, ...], bool] = {}

    def __call__(self, tree: Expr, context: dict[str, Any]) -> bool:
        names = self.reads.get(id(tree))
        if names is None:
            names = self.reads[id(tree)] = tuple(sorted(referenced_fields(tree)))
        key = (id(tree), *(_hashable(context.get(name)) for name in names))
        if key not in self.known:
            self.known[key] = is_true(evaluate(tree, context, self.codes))
        return self.known[key]


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True, slots=True)
class _Plan:
    """One instrument's statement and what its columns mean; built once per study."""

    statement: Select[Any]
    #: Fields whose values (columns v<i>, c<i>) the evaluated logic reads.
    names: tuple[str, ...]
    #: Required fields (columns f<i>: forms where the field is filled).
    required: tuple[Field, ...]
    #: Rules counted by SQL (columns r<i>) and rules evaluated once per group.
    compiled: tuple[str, ...]
    evaluated: tuple[Rule, ...]
    #: The instrument and those joined to it: the forms whose changes change its totals.
    context: tuple[str, ...]


def _build_plan(study: Study, instrument: Instrument) -> _Plan:
    scope = _Scope(study, instrument)
    required = _required(instrument)
    compiled: dict[str, ColumnElement[bool]] = {}
    evaluated: list[Rule] = []
    for rule in study.rules_for(instrument.name):
        condition = rule_condition(study, rule.tree, scope)
        if condition is None:
            evaluated.append(rule)
        else:
            compiled[rule.id] = condition
    trees: Iterable[Expr] = [*(f.branching_tree for f in required if f.branching_tree), *(r.tree for r in evaluated)]
    names = sorted({name for tree in trees for name in referenced_fields(tree) if scope.value(name) is not None})
    keys = []
    for index, name in enumerate(names):
        keys += [scope.value(name).label(f"v{index}"), scope.code(name).label(f"c{index}")]  # type: ignore[union-attr]
    sums = {f"f{i}": or_(scope.text(f.name).is_not(None), scope.code(f.name).is_not(None))  # type: ignore[union-attr]
            for i, f in enumerate(required)}
    sums |= {f"r{i}": condition for i, condition in enumerate(compiled.values())}
    return _Plan(scope.grouped(keys, sums), tuple(names), tuple(required), tuple(compiled), tuple(evaluated),
                 (instrument.name, *scope.joined))


class _PlanCache:
    """Plans of the most recently used studies: building the statements costs more than
    running them on a small site. A study is immutable, so its plans never go stale."""

    def __init__(self, studies: int = 4) -> None:
        self.studies = studies
        self.lock = threading.Lock()
        self.plans: OrderedDict[int, tuple[Study, dict[str, _Plan]]] = OrderedDict()

    def get(self, study: Study, instrument: Instrument) -> _Plan:
        with self.lock:
            entry = self.plans.get(id(study))
            if entry is None or entry[0] is not study:
                entry = self.plans[id(study)] = (study, {})
            self.plans.move_to_end(id(study))
            while len(self.plans) > self.studies:
                self.plans.popitem(last=False)
            if instrument.name not in entry[1]:
                entry[1][instrument.name] = _build_plan(study, instrument)
            return entry[1][instrument.name]


_PLANS = _PlanCache()


def instrument_quality(session: Session, study: Study, instrument: Instrument,
                       site_ids: Collection[int]) -> dict[int, InstrumentQuality]:
    """Per site: saved forms, visible required fields and filled ones, rule hits; one statement."""
    plan = _PLANS.get(study, instrument)
    result: dict[int, InstrumentQuality] = defaultdict(InstrumentQuality)
    holds = _Truths(study.missing_code_values)
    for row in session.execute(plan.statement, {"site_ids": list(site_ids)}):
        group = row._mapping
        context = {name: group[f"c{i}"] or group[f"v{i}"] for i, name in enumerate(plan.names)}
        quality = result[group["site_id"]]
        quality.forms += group["n"]
        for i, f in enumerate(plan.required):
            if f.branching_tree is None or holds(f.branching_tree, context):
                quality.required += group["n"]
                quality.filled += int(group[f"f{i}"] or 0)
        hits = {rule_id: int(group[f"r{i}"] or 0) for i, rule_id in enumerate(plan.compiled)}
        hits |= {rule.id: group["n"] if holds(rule.tree, context) else 0 for rule in plan.evaluated}
        for rule_id, count in hits.items():
            quality.rule_hits[rule_id] = quality.rule_hits.get(rule_id, 0) + count
    return dict(result)


#: (study digest, instrument, site id) -> that site's totals, in this process and the database;
#: shared between requests, so never mutated.
_REMEMBERED: RememberedResults[InstrumentQuality] = RememberedResults(
    size=16384, shared=Shared("quality", asdict, lambda stored: InstrumentQuality(**stored)))


def study_quality(session: Session, study: Study, site_ids: Collection[int],
                  fingerprints: Fingerprints) -> dict[int, dict[str, InstrumentQuality]]:
    """Site id -> instrument name -> totals (empty for a site without such forms): the
    remembered totals where the forms behind them are unchanged (`fingerprints`, read for
    `site_ids`), else one statement per instrument over the sites whose forms changed,
    whatever the number of records."""
    wanted = {(study.digest, instrument.name, site_id):
              fingerprints.site(site_id, _PLANS.get(study, instrument).context)
              for instrument in study.instruments for site_id in site_ids}

    def count(keys: list[Any]) -> dict[Any, InstrumentQuality]:
        sites: dict[str, list[int]] = defaultdict(list)
        for _, name, site_id in keys:
            sites[name].append(site_id)
        totals = {}
        for name, changed in sites.items():
            computed = instrument_quality(session, study, study.instrument(name), changed)
            totals.update({(study.digest, name, site_id): computed.get(site_id, InstrumentQuality())
                           for site_id in changed})
        return totals

    totals = _REMEMBERED.get_or_compute_many(session, wanted, count)
    return {site_id: {inst.name: totals[(study.digest, inst.name, site_id)] for inst in study.instruments}
            for site_id in site_ids}

