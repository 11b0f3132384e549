"""The one write path for study data.

`create_record` and `save_form` are the only functions that change records or form
values. Each checks access, validates against the study definition, evaluates
calculations and branching (a field hidden by branching is cleared, with an audit
row), refuses a stale version, and appends audit rows in the same transaction. They
flush but never commit: the request (or CLI command) commits once at its boundary.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.audit.services import AuditEntry, append, encode_cell
from app.auth.models import Site, User
from app.auth.permissions import Action, can
from app.db import utcnow
from app.errors import ConflictError, NotFoundError, PermissionDenied, ValidationFailed
from app.logic import evaluate, is_true, referenced_fields
from app.records.models import FormInstance, FormStatus, Record
from app.records.quality import rule_hits, shown_value
from app.review.models import Signature
from app.study.definition import Field, Instrument, Study
from app.study.fieldtypes import FieldValueError, field_type

RawValue = str | list[str] | None
#: Records per IN (...) list when loading states (well below every database's parameter limit).
STATE_BATCH = 500

STATUS_FIELD = "__status__"
REASON_FIELD = "reason"


@dataclass(frozen=True, slots=True)
class Submission:
    """What a user or client sent for one form instance.

    Fields absent from `values` and `missing` keep their stored state, so an API import
    can change a few fields; a web form sends every field.
    """

    values: Mapping[str, RawValue] = field(default_factory=dict)
    missing: Mapping[str, str | None] = field(default_factory=dict)
    status: int | None = None


@dataclass(slots=True)
class SaveOutcome:
    form: FormInstance
    changed: list[str]
    #: Required fields still empty on a form not marked Complete (saved, but shown).
    incomplete_required: list[str]


@dataclass(slots=True)
class RecordState:
    """What `save_form` reads about a record before changing it, held by a caller saving many forms.

    An import loads the states of all its records at once (`load_states`: two queries)
    instead of `save_form` reading them again for every form, and `save_form` keeps the
    state current as it saves. With a state, `save_form` does not flush either: the caller
    flushes once for the whole batch and turns a StaleDataError or IntegrityError there
    into its own conflict error (nothing is written then: the transaction rolls back).
    """

    #: Every form instance of the record, including those saved through this state.
    forms: list[FormInstance]
    #: Whether the record has signatures not voided yet (a change voids them).
    signed: bool


def load_states(session: Session, records: Sequence[Record]) -> dict[int, RecordState]:
    """The `RecordState` of each of `records` (already scoped by the caller), by record id."""
    ids = [record.id for record in records]
    states = {record_id: RecordState([], False) for record_id in ids}
    for start in range(0, len(ids), STATE_BATCH):
        chunk = ids[start:start + STATE_BATCH]
        for form in session.scalars(select(FormInstance).where(FormInstance.record_id.in_(chunk))):
            states[form.record_id].forms.append(form)
        signed = session.scalars(
            select(Signature.record_id).where(Signature.record_id.in_(chunk), Signature.voided_at.is_(None))
        )
        for record_id in signed:
            states[record_id].signed = True
    return states


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is writing, and through which door (web, api, cli, demo)."""

    user: User
    source: str = "web"


def audit_entry(actor: Actor, record: Record, **kwargs: Any) -> AuditEntry:
    return AuditEntry(
        user_id=actor.user.id, username=actor.user.username, site_id=record.site_id,
        record_id=record.id, record_label=record.label, source=actor.source, **kwargs,
    )


def create_record(session: Session, actor: Actor, site: Site) -> Record:
    """Create the next record of `site` (KMU-0001, KMU-0002, ...)."""
    return create_records(session, actor, [site])[0]


def create_records(session: Session, actor: Actor, sites: Sequence[Site]) -> list[Record]:
    """Create one new record at each of `sites` (repeats allowed), numbered in that order.

    Each site's counter is taken once for all its new records (UPDATE ... RETURNING locks
    the site row until the transaction ends), and the records go in with one flush, so an
    import of thousands of new records costs a few statements, not thousands.
    """
    for site in {site.id: site for site in sites}.values():
        if not can(actor.user, Action.CREATE, site.id):
            raise PermissionDenied("You cannot create records at this site.")
    next_number = take_numbers(session, Counter(site.id for site in sites))
    records = []
    for site in sites:
        number = next_number[site.id]
        next_number[site.id] += 1
        records.append(Record(site_id=site.id, number=number, label=f"{site.code}-{number:04d}",
                              created_by_id=actor.user.id))
    session.add_all(records)
    session.flush()
    append(session, [audit_entry(actor, record, action="create_record") for record in records])
    return records


def take_numbers(session: Session, counts: Mapping[int, int]) -> dict[int, int]:
    """The first of `count` new record numbers for each site id in `counts`.

    Each site's counter moves once (UPDATE ... RETURNING locks the site row until the
    transaction ends, so concurrent creators get distinct numbers), in site id order so two
    transactions never wait on each other's sites crosswise.
    """
    first: dict[int, int] = {}
    for site_id, count in sorted(counts.items()):
        last = session.execute(
            update(Site)
            .where(Site.id == site_id)
            .values(last_record_number=Site.last_record_number + count)
            .returning(Site.last_record_number)
        ).scalar_one()
        first[site_id] = last - count + 1
    return first


def record_context(
    study: Study, forms: Iterable[FormInstance], *, exclude: tuple[str, int] | None = None
) -> dict[str, Any]:
    """Values logic can see from a record: all non-repeatable forms, missing codes as codes."""
    context: dict[str, Any] = {}
    for form in forms:
        if exclude and (form.instrument, form.instance) == exclude:
            continue
        if not study.has_instrument(form.instrument) or study.instrument(form.instrument).repeatable:
            continue
        context.update(form.data)
        context.update(form.missing)
    return context


def apply_logic(
    study: Study, instrument: Instrument, data: dict[str, Any], missing: dict[str, str], context: Mapping[str, Any]
) -> list[str]:
    """Compute calc fields and clear fields hidden by branching, in place; return hidden names.

    Hidden fields count as blank for every other rule, and calcs may feed branching and
    other calcs, so the passes repeat until nothing changes. The browser (form.js) runs
    the same loop on the same trees, so what the user sees is what the server stores.
    """
    codes = study.missing_code_values
    calcs = [f for f in instrument.fields if f.calculation_tree is not None]
    hidden: list[str] = []
    for _ in range(len(instrument.fields) + 1):
        scope = {**context, **data, **missing}
        for name in hidden:
            scope[name] = None
        for f in calcs:
            scope[f.name] = data[f.name] = _number_or_none(evaluate(f.calculation_tree, scope, codes))
        now_hidden = [
            f.name for f in instrument.data_fields
            if f.branching_tree is not None and not is_true(evaluate(f.branching_tree, scope, codes))
        ]
        if now_hidden == hidden:
            break
        hidden = now_hidden
    for name in hidden:
        data[name] = None
        missing.pop(name, None)
    return hidden


_NUMERIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number_or_none(value: Any) -> float | None:
    """A calc's stored value: a number, or None. Numeric text (a field's value passed
    through `if`) counts as its number, as in form.js, because browsers hold all values
    as text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        return float(value.strip())
    return None


def _parse_submission(
    study: Study, instrument: Instrument, submission: Submission, data: dict[str, Any], missing: dict[str, str]
) -> dict[str, str]:
    """Apply the submitted raw values onto data/missing; return per-field error messages."""
    errors: dict[str, str] = {}
    known = {f.name for f in instrument.data_fields}
    for name in [*submission.values, *submission.missing]:
        if name not in known:
            errors[name] = f"'{name}' is not a field of {instrument.label}."
    for f in instrument.data_fields:
        if not field_type(f).is_input:
            continue
        has_value = f.name in submission.values
        has_code = f.name in submission.missing
        code = (submission.missing.get(f.name) or "").strip() if has_code else ""
        if code:
            if not f.allow_missing_codes:
                errors[f.name] = "This field does not take a missing-data code."
                continue
            if code not in study.missing_code_values:
                allowed = ", ".join(f"{m.code} ({m.label})" for m in study.missing_codes)
                errors[f.name] = f"'{code}' is not a missing-data code; use one of {allowed}."
                continue
        try:
            value = field_type(f).parse(f, submission.values.get(f.name)) if has_value else data.get(f.name)
        except FieldValueError as exc:
            errors[f.name] = str(exc)
            continue
        if code and has_value and value is not None:
            errors[f.name] = "Enter a value or choose a missing-data code, not both."
            continue
        if code:
            data[f.name] = None
            missing[f.name] = code
        elif has_value:
            data[f.name] = value
            if value is not None or has_code:
                missing.pop(f.name, None)
        elif has_code:
            missing.pop(f.name, None)
    return errors


def _next_instance(forms: Iterable[FormInstance], instrument: str) -> int:
    """One more than the highest instance of `instrument` among the record's forms."""
    return max((f.instance for f in forms if f.instrument == instrument), default=0) + 1


def save_form(
    session: Session,
    study: Study,
    actor: Actor,
    record: Record,
    instrument_name: str,
    instance: int | None,
    submission: Submission,
    *,
    expected_version: int | None,
    reason: str | None = None,
    confirm_warnings: bool = True,
    state: RecordState | None = None,
) -> SaveOutcome:
    """Validate and save one form instance; raise ValidationFailed/ConflictError with nothing written.

    `instance=None` adds a new instance of a repeatable instrument. `expected_version` is
    the version the user started from (0 for a form never saved); None skips the check
    (an API import with overwrite semantics). A change to a Complete form needs a
    `reason`. Data-quality rule hits raise RuleWarnings unless `confirm_warnings`; when
    confirmed they are saved and audited. `state` is the record's `RecordState` when the
    caller saves many forms in one transaction (see there: the caller then flushes).
    """
    if not can(actor.user, Action.EDIT, record.site_id):
        raise PermissionDenied("You cannot change data at this site.")
    if record.locked_at is not None:
        raise RecordLocked(
            "This record is locked after investigator sign-off. An investigator or admin must unlock it first."
        )
    if not study.has_instrument(instrument_name):
        raise NotFoundError("No such form.")
    instrument = study.instrument(instrument_name)
    if state is None:
        forms = list(session.scalars(select(FormInstance).where(FormInstance.record_id == record.id)))
    else:
        forms = state.forms
    if instance is None:
        instance = _next_instance(forms, instrument.name) if instrument.repeatable else 1
    if instance < 1 or (not instrument.repeatable and instance != 1):
        raise NotFoundError("No such form instance.")

    existing = next((f for f in forms if (f.instrument, f.instance) == (instrument.name, instance)), None)
    current_version = existing.version if existing else 0
    if expected_version is not None and expected_version != current_version:
        raise ConflictError(_conflict_message(existing), existing)

    old_data = dict(existing.data) if existing else {}
    old_missing = dict(existing.missing) if existing else {}
    old_status = existing.status if existing else None
    data = dict(old_data)
    missing = dict(old_missing)
    errors = _parse_submission(study, instrument, submission, data, missing)
    status = submission.status if submission.status is not None else (old_status or FormStatus.INCOMPLETE)
    if status not in (0, 1, 2):
        errors[STATUS_FIELD] = "Status must be 0 (Incomplete), 1 (Unverified) or 2 (Complete)."
    if errors:
        raise ValidationFailed(errors)

    context = record_context(study, forms, exclude=(instrument.name, instance))
    hidden = apply_logic(study, instrument, data, missing, context)
    empty_required = [
        f.name
        for f in instrument.data_fields
        if f.required and f.name not in hidden and data.get(f.name) is None and f.name not in missing
        and field_type(f).is_input
    ]
    if status == FormStatus.COMPLETE and empty_required:
        raise ValidationFailed(
            dict.fromkeys(empty_required, "Required to mark the form Complete: enter a value or a missing-data code."),
            "Not saved: a Complete form needs every required field. Fill them in or save it as Incomplete.",
        )
    data = {k: v for k, v in data.items() if v is not None}

    reason = (reason or "").strip() or None
    entries = _diff(actor, record, instrument, instance, old_data, old_missing, data, missing, hidden, reason)
    if old_status != status:
        entries.append(audit_entry(actor, record, action="status", instrument=instrument.name, instance=instance,
                              old=None if old_status is None else str(old_status), new=str(status), reason=reason))
    if existing is not None and not entries:
        return SaveOutcome(existing, [], empty_required)
    if old_status == FormStatus.COMPLETE and not reason:
        raise ValidationFailed(
            {REASON_FIELD: "This form was Complete: give a reason for the change."},
            "Not saved: changes to a Complete form need a reason for change.",
        )
    scope = {**context, **data, **missing}
    hits = rule_hits(study, study.rules_for(instrument.name), scope)
    if hits and not confirm_warnings:
        raise RuleWarnings({rule.field: rule.label for rule in hits})
    entries += [
        audit_entry(actor, record, action="dq_warning_confirmed", instrument=instrument.name, instance=instance,
               field=rule.field, new=shown_value(study, rule.field, scope), reason=f"{rule.id}: {rule.label}")
        for rule in hits
    ]

    if existing is None:
        existing = FormInstance(record_id=record.id, instrument=instrument.name, instance=instance)
        session.add(existing)
        if state is not None:
            state.forms.append(existing)
    existing.data = data
    existing.missing = missing
    existing.status = int(status)
    existing.updated_at = utcnow()
    existing.updated_by_id = actor.user.id
    if state is None:
        try:
            session.flush()
        except (StaleDataError, IntegrityError):
            raise ConflictError(_conflict_message(None)) from None
    append(session, entries)
    if state is None or state.signed:
        _void_signatures(session, actor, record, f"Data changed after signature ({instrument.label})")
        if state is not None:
            state.signed = False
    if not instrument.repeatable:
        others = [f for f in forms if f is not existing]
        _recalculate_dependents(session, study, actor, record, instrument, others, existing, flush=state is None)
    return SaveOutcome(existing, [e.field for e in entries if e.field], empty_required)


class RecordLocked(PermissionDenied):
    """The record is signed and locked; nothing may change until it is unlocked."""


class RuleWarnings(ValidationFailed):
    """Data-quality rules flag the values; the user may confirm them and save again."""

    def __init__(self, warnings: dict[str, str]) -> None:
        super().__init__(
            warnings,
            "Not saved yet: please check the warnings below. If the values are right, tick "
            "'The values are correct' and save again; the confirmation is recorded.",
        )


_SIGNATURE = cast(Table, Signature.__table__)
#: Built once: every save runs it.
_VOID_SIGNATURES = (
    update(_SIGNATURE)
    .where(_SIGNATURE.c.record_id == bindparam("record"), _SIGNATURE.c.voided_at.is_(None))
    .values(voided_at=bindparam("now"), void_reason=bindparam("why"))
    .returning(_SIGNATURE.c.id, _SIGNATURE.c.meaning, _SIGNATURE.c.printed_name, _SIGNATURE.c.signed_at)
)


def _void_signatures(session: Session, actor: Actor, record: Record, why: str) -> None:
    """A change to a signed record voids its signatures (shown, and audited).

    One UPDATE ... RETURNING finds and voids them: every save runs it, and nearly always
    it matches nothing. Signatures already loaded in the session are expired, so they
    show the void when read again.
    """
    voided = session.connection().execute(
        _VOID_SIGNATURES, {"record": record.id, "now": utcnow(), "why": why}
    ).all()
    if not voided:
        return
    ids = {row.id for row in voided}
    for loaded in [obj for obj in session.identity_map.values() if isinstance(obj, Signature) and obj.id in ids]:
        session.expire(loaded)
    append(session, [
        audit_entry(actor, record, action="signature_voided", old=row.meaning.value, new=None,
                    reason=f"{why}; signed by {row.printed_name} at {row.signed_at:%Y-%m-%d %H:%M} UTC")
        for row in sorted(voided, key=lambda row: row.id)
    ])


def delete_record(session: Session, actor: Actor, record: Record, reason: str) -> None:
    """Soft delete (admin only): the record disappears from lists but nothing is erased."""
    if not actor.user.is_admin:
        raise PermissionDenied("Only an admin can delete a record.")
    if not reason.strip():
        raise ValidationFailed({REASON_FIELD: "Give a reason for deleting the record."})
    if record.deleted_at is not None:
        raise ConflictError("This record is already deleted.")
    record.deleted_at = utcnow()
    record.deleted_reason = reason.strip()
    session.flush()
    append(session, [audit_entry(actor, record, action="delete_record", reason=reason.strip())])


def restore_record(session: Session, actor: Actor, record: Record, reason: str) -> None:
    """Undo a soft delete (admin only), audited with its reason."""
    if not actor.user.is_admin:
        raise PermissionDenied("Only an admin can restore a record.")
    if not reason.strip():
        raise ValidationFailed({REASON_FIELD: "Give a reason for restoring the record."})
    if record.deleted_at is None:
        raise ConflictError("This record is not deleted.")
    record.deleted_at = None
    record.deleted_reason = None
    session.flush()
    append(session, [audit_entry(actor, record, action="restore_record", reason=reason.strip())])


def _conflict_message(existing: FormInstance | None) -> str:
    when = f" at {existing.updated_at:%Y-%m-%d %H:%M} UTC" if existing is not None else ""
    return (
        f"Someone else saved this form{when} after you opened it, so your changes were not saved. "
        "Your values are kept below: compare them with the saved ones and save again."
    )


def _diff(
    actor: Actor, record: Record, instrument: Instrument, instance: int,
    old_data: Mapping[str, Any], old_missing: Mapping[str, str],
    data: Mapping[str, Any], missing: Mapping[str, str], hidden: list[str], reason: str | None,
) -> list[AuditEntry]:
    entries = []
    for f in instrument.data_fields:
        old = encode_cell(old_data.get(f.name), old_missing.get(f.name))
        new = encode_cell(data.get(f.name), missing.get(f.name))
        if old == new:
            continue
        if f.name in hidden:
            action, why = "clear_hidden", "Hidden by branching logic"
        elif f.type == "calc":
            action, why = "calculate", None
        else:
            action, why = "update", reason
        entries.append(audit_entry(actor, record, action=action, instrument=instrument.name, instance=instance,
                              field=f.name, old=old, new=new, reason=why))
    return entries


def _recalculate_dependents(
    session: Session, study: Study, actor: Actor, record: Record, changed: Instrument,
    others: list[FormInstance], saved: FormInstance, *, flush: bool = True,
) -> None:
    """Refresh calc fields of the record's other forms that use fields of the form just saved.

    Without this, changing a date of birth would leave the age at presentation stale
    until someone re-saved the lesion form. `flush=False` leaves the flush to a caller
    holding a `RecordState`.
    """
    changed_names = {f.name for f in changed.fields}
    for form in others:
        if not study.has_instrument(form.instrument):
            continue
        instrument = study.instrument(form.instrument)
        calcs = [f for f in instrument.fields if f.calculation_tree is not None]
        if not any(_uses(f, changed_names) for f in calcs):
            continue
        context = record_context(study, [*others, saved], exclude=(form.instrument, form.instance))
        data, missing = dict(form.data), dict(form.missing)
        scope = {**context, **data, **missing}
        codes = study.missing_code_values
        entries = []
        for f in calcs:
            value = _number_or_none(evaluate(f.calculation_tree, scope, codes))
            if data.get(f.name) != value:
                entries.append(audit_entry(actor, record, action="calculate", instrument=form.instrument,
                                      instance=form.instance, field=f.name, old=encode_cell(data.get(f.name)),
                                      new=encode_cell(value), reason=f"Recalculated after {changed.label} changed"))
                data[f.name] = value
                scope[f.name] = value
        if entries:
            form.data = {k: v for k, v in data.items() if v is not None}
            form.updated_at = utcnow()
            try:
                if flush:
                    session.flush()
            except StaleDataError:
                raise ConflictError(
                    f"{instrument.label} of this record was saved by someone else meanwhile, so its calculated "
                    "values could not be updated. Nothing was saved: please save again."
                ) from None
            append(session, entries)


def _uses(f: Field, names: set[str]) -> bool:
    return f.calculation_tree is not None and bool(referenced_fields(f.calculation_tree) & names)
