"""The bulk path: many records at once, with exactly what the write path would store and audit.

`save_form` handles one form per call with several round trips (it must: a user may be
racing another user). Seeding 100,000 records that way takes hours, so this module keeps
the write path's *semantics* and batches the *I/O*:

* every value goes through the field type's `parse` (the same validation and messages),
  `apply_logic` computes calculations and clears fields hidden by branching, a form saved
  as Complete must have every visible required field, data-quality rules that fire are
  recorded as confirmed warnings; forms are built in definition order with the same
  record context `save_form` would see;
* the audit rows are those the services would append (create_record, one update or
  calculate row per field, status, dq_warning_confirmed, query_raise/answer/close, sign,
  lock), hash-chained with `chain_hash` after locking the chain's head row, as `append`
  does;
* rows are written per batch, one executemany per table (COPY for the audit rows on
  PostgreSQL), while worker processes build the next batches.

`tests/test_synthetic.py` proves the equivalence by saving the same generated cases through
the real services and comparing the stored forms and audit rows.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.pool import AsyncResult
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from app.audit.services import AuditEntry, AuditRow, append, encode_cell, write_chained
from app.auth.models import Membership, Site, SiteRole, User
from app.auth.services import SiteGrant, create_site, create_user
from app.db import utcnow
from app.errors import ValidationFailed
from app.logic import referenced_fields
from app.records.models import FormInstance, FormStatus, Record
from app.records.quality import rule_hits, shown_value
from app.records.services import apply_logic, take_numbers
from app.review.models import DataQuery, QueryMessage, QueryStatus, Signature, SignatureMeaning
from app.review.services import MAX_TEXT
from app.study import load_study
from app.study.definition import Instrument, Study
from app.study.fieldtypes import FieldValueError, field_type
from app.synthetic.generator import CaseGenerator, CaseSpec, FormSpec

SOURCE = "synthetic"
SITE_PREFIX = "SYN"
SITE_ZONES = ("Asia/Seoul", "Europe/London", "America/Toronto", "Australia/Sydney", "Europe/Berlin")
DEFAULT_BATCH = 500

# Core tables, not ORM classes: an ORM bulk INSERT leaves out None values (so that column
# defaults apply), which splits a batch into one statement per distinct set of keys.
RECORD = cast(Table, Record.__table__)
FORM_INSTANCE = cast(Table, FormInstance.__table__)
SIGNATURE = cast(Table, Signature.__table__)
DATA_QUERY = cast(Table, DataQuery.__table__)
QUERY_MESSAGE = cast(Table, QueryMessage.__table__)


@dataclass(frozen=True, slots=True)
class Person:
    """The few facts of a user the bulk path writes (plain values survive every commit)."""

    id: int
    username: str
    full_name: str

    @classmethod
    def of(cls, user: User) -> Person:
        return cls(user.id, user.username, user.full_name)


@dataclass(frozen=True, slots=True)
class Team:
    """Who enters (coordinator), queries (monitor) and signs (investigator) synthetic records."""

    coordinator: Person
    monitor: Person
    investigator: Person


@dataclass(frozen=True, slots=True)
class SiteRef:
    id: int
    code: str


def audit_row(person: Person, action: str, **details: Any) -> AuditRow:
    """An audit row by `person` from the synthetic source; time, place and chain are set when written."""
    return AuditRow(AuditEntry(action, user_id=person.id, username=person.username, source=SOURCE, **details))


@dataclass(slots=True)
class BuiltForm:
    """A form instance as `save_form` would leave it, with the audit rows it would append."""

    instrument: str
    instance: int
    data: dict[str, Any]
    missing: dict[str, str]
    status: int
    audit: list[AuditRow]


@dataclass(slots=True)
class BuiltCase:
    site: SiteRef
    spec: CaseSpec
    forms: list[BuiltForm] = field(default_factory=list)


class CaseBuilder:
    """Turns generated cases into what `save_form` and the review services would store (pure).

    Holds no session, so worker processes can build batches while the main process writes.
    """

    def __init__(self, study: Study, team: Team) -> None:
        self.study = study
        self.team = team
        self.order = {inst.name: index for index, inst in enumerate(study.instruments)}
        self._check_calculation_order()

    def _check_calculation_order(self) -> None:
        """Refuse a definition whose calcs read a later single form's fields.

        `save_form` recalculates such a calc when the later form is saved, with extra audit
        rows; building forms once in definition order would miss those, so the bulk path
        does not pretend to support it.
        """
        owner = {f.name: f.instrument for f in self.study.iter_fields()}
        for inst in self.study.instruments:
            for f in inst.fields:
                if f.calculation_tree is None:
                    continue
                for name in referenced_fields(f.calculation_tree):
                    source = self.study.instrument(owner[name])
                    if not source.repeatable and self.order[source.name] > self.order[inst.name]:
                        raise ValueError(
                            f"{f.name} ({inst.name}) is calculated from {name} of the later form {source.name}; "
                            "the bulk path writes forms in definition order and cannot seed this definition."
                        )

    def build(self, site: SiteRef, spec: CaseSpec) -> BuiltCase:
        """Every form of one case, validated and computed as `save_form` would, in saving order."""
        case = BuiltCase(site, spec)
        context: dict[str, Any] = {}
        last = -1
        for form_spec in spec.forms:
            index = self.order.get(form_spec.instrument)
            if index is None:
                raise ValidationFailed({form_spec.instrument: "not an instrument of this study"})
            if index < last:
                raise ValueError("a case's forms must come in definition order (the order save_form sees them)")
            last = index
            instrument = self.study.instrument(form_spec.instrument)
            built = self._build_form(instrument, form_spec, context)
            case.forms.append(built)
            if not instrument.repeatable:
                context.update(built.data)
                context.update(built.missing)
        if spec.signature is not None:
            if not case.forms or any(f.status != FormStatus.COMPLETE for f in case.forms):
                raise ValidationFailed({"signature": "Every form of the record must be Complete before it is signed."})
            SignatureMeaning(spec.signature)
        for query in spec.queries:
            if not self.study.has_field(query.field) or self.study.field(query.field).instrument != query.instrument:
                raise ValidationFailed({query.field: f"not a field of {query.instrument}"})
        return case

    def _build_form(self, instrument: Instrument, spec: FormSpec, context: dict[str, Any]) -> BuiltForm:
        study = self.study
        if spec.instance < 1 or (not instrument.repeatable and spec.instance != 1):
            raise ValidationFailed({instrument.name: f"instance {spec.instance} does not exist"})
        data: dict[str, Any] = {}
        missing: dict[str, str] = {}
        errors = self._parse(instrument, spec, data, missing)
        if spec.status not in (0, 1, 2):
            errors["__status__"] = "Status must be 0, 1 or 2."
        if errors:
            raise ValidationFailed(errors)
        hidden = apply_logic(study, instrument, data, missing, context)
        if spec.status == FormStatus.COMPLETE:
            empty = [
                f.name for f in instrument.data_fields
                if f.required and f.name not in hidden and data.get(f.name) is None and f.name not in missing
                and field_type(f).is_input
            ]
            if empty:
                raise ValidationFailed(dict.fromkeys(empty, "Required to mark the form Complete."))
        data = {k: v for k, v in data.items() if v is not None}

        who = self.team.coordinator
        rows = []
        for f in instrument.data_fields:
            new = encode_cell(data.get(f.name), missing.get(f.name))
            if new is not None:  # a new form: every filled field is a change from blank
                rows.append(audit_row(who, "calculate" if f.type == "calc" else "update", instrument=instrument.name,
                                     instance=spec.instance, field=f.name, new=new))
        rows.append(audit_row(who, "status", instrument=instrument.name, instance=spec.instance, new=str(spec.status)))
        scope = {**context, **data, **missing}
        rows += [
            audit_row(who, "dq_warning_confirmed", instrument=instrument.name, instance=spec.instance,
                     field=rule.field, new=shown_value(study, rule.field, scope), reason=f"{rule.id}: {rule.label}")
            for rule in rule_hits(study, study.rules_for(instrument.name), scope)
        ]
        return BuiltForm(instrument.name, spec.instance, data, missing, spec.status, rows)

    def _parse(
        self, instrument: Instrument, spec: FormSpec, data: dict[str, Any], missing: dict[str, str]
    ) -> dict[str, str]:
        """The write path's parsing of a submission onto a blank form; returns per-field errors."""
        errors: dict[str, str] = {}
        known = {f.name for f in instrument.data_fields}
        for name in [*spec.values, *spec.missing]:
            if name not in known:
                errors[name] = f"'{name}' is not a field of {instrument.label}."
        codes = self.study.missing_code_values
        for f in instrument.data_fields:
            kind = field_type(f)
            if not kind.is_input:
                continue
            code = (spec.missing.get(f.name) or "").strip()
            if code and (not f.allow_missing_codes or code not in codes):
                errors[f.name] = f"'{code}' is not a missing-data code this field takes."
                continue
            try:
                value = kind.parse(f, spec.values[f.name]) if f.name in spec.values else None
            except FieldValueError as exc:
                errors[f.name] = str(exc)
                continue
            if code and value is not None:
                errors[f.name] = "Enter a value or choose a missing-data code, not both."
            elif code:
                missing[f.name] = code
            elif value is not None:
                data[f.name] = value
        return errors


class BulkWriter:
    """Inserts built cases in batches: records, forms, queries, signatures, chained audit rows."""

    def __init__(self, session: Session, team: Team) -> None:
        self.session = session
        self.team = team

    def write(self, built: Sequence[BuiltCase]) -> list[int]:
        """Insert a batch of built cases in the caller's transaction; returns the new record ids."""
        now = utcnow()
        labels = self._number_records(built)
        coordinator, investigator = self.team.coordinator, self.team.investigator
        record_ids = list(self.session.scalars(
            insert(RECORD).returning(RECORD.c.id, sort_by_parameter_order=True),
            [
                {"site_id": case.site.id, "number": number, "label": label, "created_at": now,
                 "created_by_id": coordinator.id, "locked_at": now if case.spec.signature else None}
                for case, (number, label) in zip(built, labels, strict=True)
            ],
        ))
        self.session.execute(insert(FORM_INSTANCE), [
            {"record_id": record_id, "instrument": form.instrument, "instance": form.instance, "data": form.data,
             "missing": form.missing, "status": form.status, "version": 1, "updated_at": now,
             "updated_by_id": coordinator.id}
            for case, record_id in zip(built, record_ids, strict=True) for form in case.forms
        ])
        query_rows = self._queries(built, record_ids, now)
        signed = [(case, record_id) for case, record_id in zip(built, record_ids, strict=True) if case.spec.signature]
        if signed:
            self.session.execute(insert(SIGNATURE), [
                {"record_id": record_id, "user_id": investigator.id, "printed_name": investigator.full_name,
                 "meaning": SignatureMeaning(case.spec.signature), "signed_at": now}
                for case, record_id in signed
            ])

        audit: list[AuditRow] = []
        for case, record_id, (_, label) in zip(built, record_ids, labels, strict=True):
            rows = [audit_row(coordinator, "create_record")]
            for form in case.forms:
                rows += form.audit
            rows += query_rows.get(record_id, [])
            if case.spec.signature:
                meaning = SignatureMeaning(case.spec.signature)
                rows += [audit_row(investigator, "sign", new=meaning.value, reason=meaning.label),
                         audit_row(investigator, "lock", reason="Locked by signature")]
            for row in rows:
                row.site_id, row.record_id, row.record_label = case.site.id, record_id, label
            audit += rows
        self._append(audit, now)
        return record_ids

    def _number_records(self, built: Sequence[BuiltCase]) -> list[tuple[int, str]]:
        """Next numbers per site, taken as create_record does (`take_numbers`)."""
        next_number = take_numbers(self.session, Counter(case.site.id for case in built))
        labels = []
        for case in built:
            number = next_number[case.site.id]
            next_number[case.site.id] += 1
            labels.append((number, f"{case.site.code}-{number:04d}"))
        return labels

    def _queries(self, built: Sequence[BuiltCase], record_ids: list[int], now: datetime) -> dict[int, list[AuditRow]]:
        """Insert queries and their threads; return each record's query audit rows in order."""
        wanted = [(case, record_id, query) for case, record_id in zip(built, record_ids, strict=True)
                  for query in case.spec.queries]
        if not wanted:
            return {}
        monitor, coordinator = self.team.monitor, self.team.coordinator
        ids = list(self.session.scalars(
            insert(DATA_QUERY).returning(DATA_QUERY.c.id, sort_by_parameter_order=True),
            [
                {"record_id": record_id, "site_id": case.site.id, "instrument": q.instrument, "instance": q.instance,
                 "field": q.field, "raised_by_id": monitor.id, "raised_at": now, "updated_at": now,
                 "status": QueryStatus.CLOSED if q.closed else QueryStatus.ANSWERED if q.answer else QueryStatus.OPEN}
                for case, record_id, q in wanted
            ],
        ))
        messages: list[dict[str, Any]] = []
        audit: dict[int, list[AuditRow]] = defaultdict(list)
        for (_, record_id, q), query_id in zip(wanted, ids, strict=True):
            steps = [(monitor, "raise", q.text.strip()[:MAX_TEXT], QueryStatus.OPEN)]
            if q.answer:
                steps.append((coordinator, "answer", q.answer.strip()[:MAX_TEXT], QueryStatus.ANSWERED))
            if q.closed:
                steps.append((monitor, "close", "Closed", QueryStatus.CLOSED))
            for person, action, text, status in steps:
                messages.append({"query_id": query_id, "user_id": person.id, "action": action, "text": text,
                                 "created_at": now})
                audit[record_id].append(audit_row(person, f"query_{action}", instrument=q.instrument,
                                                 instance=q.instance, field=q.field, new=status.value,
                                                 reason=f"query #{query_id}: {text}"))
        self.session.execute(insert(QUERY_MESSAGE), messages)
        return audit

    def _append(self, rows: list[AuditRow], when: datetime) -> None:
        """`append` for many rows: one head lock, one statement (COPY on PostgreSQL)."""
        for row in rows:
            row.occurred_at = when
        write_chained(self.session, rows)


def site_code(number: int) -> str:
    """The code of synthetic site `number` (from 1): SYN001, SYN002, ..."""
    return f"{SITE_PREFIX}{number:03d}"


def real_record_count(session: Session) -> int:
    """Records at sites that are not synthetic: seeding beside them mixes synthetic cases into their pooled exports."""
    return session.scalar(
        select(func.count(Record.id)).where(~Record.label.startswith(SITE_PREFIX, autoescape=True))
    ) or 0


def ensure_sites(session: Session, count: int) -> list[SiteRef]:
    """Synthetic sites SYN001..SYNnnn, created through `create_site` (audited) when missing."""
    sites = []
    for number in range(1, count + 1):
        code = site_code(number)
        site = session.scalar(select(Site).where(Site.code == code))
        if site is None:
            zone = SITE_ZONES[(number - 1) % len(SITE_ZONES)]
            site = create_site(session, code, f"Synthetic site {number:03d}", zone, by="seed-synthetic")
        sites.append(SiteRef(site.id, site.code))
    return sites


TEAM = (
    ("synthetic_coordinator", "Synthetic Coordinator", SiteRole.COORDINATOR),
    ("synthetic_monitor", "Synthetic Monitor", SiteRole.MONITOR),
    ("synthetic_investigator", "Synthetic Investigator", SiteRole.INVESTIGATOR),
)


def ensure_team(session: Session, sites: Sequence[SiteRef]) -> Team:
    """The synthetic users, with their role at every synthetic site.

    They get a random password nobody knows: to look around as one of them, set a password
    with `flask users set-password`.
    """
    people = []
    for username, full_name, role in TEAM:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            user = create_user(session, username, full_name, secrets.token_urlsafe(24),
                               grants=[SiteGrant(s.code, role) for s in sites], by="seed-synthetic")
        else:
            held = {m.site_id for m in user.memberships}
            for site in sites:
                if site.id not in held:
                    session.add(Membership(user_id=user.id, site_id=site.id, role=role))
                    _audit_grant(session, user, site, role)
        people.append(Person.of(user))
    return Team(*people)


def _audit_grant(session: Session, user: User, site: SiteRef, role: SiteRole) -> None:
    """The audit row `create_user` writes for a grant, for a grant added to an existing user."""
    append(session, [AuditEntry(action="role_granted", user_id=user.id, username="seed-synthetic", site_id=site.id,
                                field="role", new=role.value, source="cli")])


@dataclass(frozen=True, slots=True)
class _Plan:
    """What building a batch needs; lives in the main process or in each worker."""

    generator: CaseGenerator
    builder: CaseBuilder
    sites: tuple[SiteRef, ...]

    def build(self, start: int, stop: int) -> list[BuiltCase]:
        """Cases start..stop-1; case k goes to site k mod len(sites)."""
        return [self.builder.build(self.sites[k % len(self.sites)], self.generator.case(k)) for k in range(start, stop)]


#: A worker process's plan, set once by `_start_worker`.
_WORKER_PLAN: list[_Plan] = []


def _start_worker(study_dir: str, digest: str, seed: int, team: Team, sites: tuple[SiteRef, ...]) -> None:
    """Pool initializer: load the same definition the app runs (checked by its digest)."""
    study = load_study(study_dir)
    if study.digest != digest:
        raise RuntimeError(f"{study_dir} changed while seeding: the workers would build another definition")
    _WORKER_PLAN.append(_Plan(CaseGenerator(study, seed), CaseBuilder(study, team), sites))


def _build_in_worker(start: int, stop: int) -> list[BuiltCase]:
    return _WORKER_PLAN[0].build(start, stop)


def _built_batches(
    plan: _Plan, records: int, batch_size: int, workers: int, study_dir: str | None
) -> Iterator[list[BuiltCase]]:
    """Built batches in order; with workers, building runs ahead in other processes.

    At most two batches per worker are in flight, so memory stays bounded however many
    records are asked for. Worker processes are spawned (not forked): they never inherit
    the parent's database connections.
    """
    bounds = [(start, min(records, start + batch_size)) for start in range(0, records, batch_size)]
    if workers < 2 or len(bounds) < 2 or study_dir is None:
        for start, stop in bounds:
            yield plan.build(start, stop)
        return
    context = multiprocessing.get_context("spawn")
    init = (study_dir, plan.builder.study.digest, plan.generator.seed, plan.builder.team, plan.sites)
    with context.Pool(workers, initializer=_start_worker, initargs=init) as pool:
        pending: deque[AsyncResult[list[BuiltCase]]] = deque()
        for start, stop in bounds:
            pending.append(pool.apply_async(_build_in_worker, (start, stop)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def default_workers() -> int:
    """Processes that build cases while the writer writes, unless told otherwise: one per CPU."""
    return os.cpu_count() or 1


def seed_synthetic(
    session: Session, study: Study, *, sites: int, records: int, seed: int, batch_size: int = DEFAULT_BATCH,
    workers: int = 0, study_dir: str | None = None,
) -> Iterator[int]:
    """Write `records` synthetic cases spread evenly over `sites` synthetic sites.

    Yields the number of records written after each flushed batch, so the caller decides
    where transactions end (the CLI commits per batch). Case k goes to site k mod `sites`
    and is generated from (seed, k) alone, so the result does not depend on the batch size
    or the number of `workers` (processes that build batches from the definition in
    `study_dir` while this one writes; 0 builds in this process).
    """
    site_refs = tuple(ensure_sites(session, sites))
    team = ensure_team(session, site_refs)
    plan = _Plan(CaseGenerator(study, seed), CaseBuilder(study, team), site_refs)
    writer = BulkWriter(session, team)
    for batch in _built_batches(plan, records, batch_size, workers, study_dir):
        writer.write(batch)
        yield len(batch)
