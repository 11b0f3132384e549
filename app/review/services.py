"""Sign-off, locking and data queries: the review workflow's rules, audited in the same
transaction as each step. Services flush; the request commits."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from app.audit.services import append
from app.auth.models import User
from app.auth.passwords import verify_password
from app.auth.permissions import Action, can, site_ids_for
from app.db import utcnow
from app.errors import ConflictError, NotFoundError, PermissionDenied, ValidationFailed
from app.records.models import FormInstance, FormStatus, Record
from app.records.services import REASON_FIELD, Actor, audit_entry
from app.review.models import DataQuery, QueryMessage, QueryStatus, Signature, SignatureMeaning
from app.study.definition import Study

MAX_TEXT = 4000


def valid_signature(session: Session, record: Record) -> Signature | None:
    return session.scalar(
        select(Signature)
        .where(Signature.record_id == record.id, Signature.voided_at.is_(None))
        .order_by(Signature.id.desc())
    )


def sign_record(session: Session, actor: Actor, record: Record, password: str, meaning: str) -> Signature:
    """E-signature (21 CFR 11.50/11.200): the signer re-enters their password; the record locks."""
    if not can(actor.user, Action.REVIEW, record.site_id):
        raise PermissionDenied("Only an investigator of this site (or an admin) can sign records.")
    if meaning not in {m.value for m in SignatureMeaning}:
        raise ValidationFailed({"meaning": "Choose what your signature means."})
    if not verify_password(actor.user.password_hash, password):
        append(session, [audit_entry(actor, record, action="signature_failed", reason="wrong password")])
        raise ValidationFailed({"password": "That is not your password; the record was not signed."})
    statuses = session.scalars(select(FormInstance.status).where(FormInstance.record_id == record.id)).all()
    if not statuses or any(s != FormStatus.COMPLETE for s in statuses):
        raise ConflictError("Every form of the record must be Complete before it can be signed.")
    if valid_signature(session, record) is not None:
        raise ConflictError("This record is already signed.")
    signature = Signature(record_id=record.id, user_id=actor.user.id, printed_name=actor.user.full_name,
                          meaning=SignatureMeaning(meaning), signed_at=utcnow())
    session.add(signature)
    record.locked_at = signature.signed_at
    session.flush()
    append(session, [
        audit_entry(actor, record, action="sign", new=meaning, reason=SignatureMeaning(meaning).label),
        audit_entry(actor, record, action="lock", reason="Locked by signature"),
    ])
    return signature


def unlock_record(session: Session, actor: Actor, record: Record, reason: str) -> None:
    """Investigator or admin unlocks with a reason; the signature stays until data change."""
    if not can(actor.user, Action.REVIEW, record.site_id):
        raise PermissionDenied("Only an investigator of this site (or an admin) can unlock records.")
    if not reason.strip():
        raise ValidationFailed({REASON_FIELD: "Give a reason for unlocking the record."})
    if record.locked_at is None:
        raise ConflictError("This record is not locked.")
    record.locked_at = None
    session.flush()
    append(session, [audit_entry(actor, record, action="unlock", reason=reason.strip()[:MAX_TEXT])])


@dataclass(frozen=True, slots=True)
class ReviewItem:
    record: Record
    forms: int


def _awaiting(*columns: Any) -> Select:
    """Live records whose forms are all Complete and that nobody has signed (one row each)."""
    complete = func.sum(case((FormInstance.status == FormStatus.COMPLETE, 1), else_=0))
    return (
        select(*columns)
        .join(FormInstance, FormInstance.record_id == Record.id)
        .where(Record.deleted_at.is_(None))
        .where(~select(Signature.id).where(Signature.record_id == Record.id, Signature.voided_at.is_(None)).exists())
        .group_by(Record.id)
        .having(func.count(FormInstance.id) == complete)
    )


def awaiting_signature(session: Session, user: User, site_id: int | None = None) -> list[ReviewItem]:
    """Records of the user's review sites whose forms are all Complete and that nobody has signed."""
    allowed = site_ids_for(user, Action.REVIEW)
    stmt = _awaiting(Record, func.count(FormInstance.id)).order_by(Record.site_id, Record.number)
    if allowed is not None:
        stmt = stmt.where(Record.site_id.in_(allowed))
    if site_id is not None:
        stmt = stmt.where(Record.site_id == site_id)
    return [ReviewItem(record, count) for record, count in session.execute(stmt)]


def awaiting_signature_counts(session: Session, site_ids: Collection[int]) -> dict[int, int]:
    """Site id -> records awaiting signature, for dashboards (the caller scoped the sites)."""
    awaiting = _awaiting(Record.site_id).where(Record.site_id.in_(list(site_ids))).subquery()
    rows = session.execute(select(awaiting.c.site_id, func.count()).group_by(awaiting.c.site_id))
    return {site_id: count for site_id, count in rows}


def raise_query(
    session: Session, study: Study, actor: Actor, record: Record, instrument: str, instance: int, field: str,
    text: str,
) -> DataQuery:
    """A monitor, investigator or admin asks about one field of one form instance."""
    if not can(actor.user, Action.QUERY, record.site_id):
        raise PermissionDenied("Only monitors, investigators and admins raise data queries.")
    if not study.has_field(field) or study.field(field).instrument != instrument or instance < 1:
        raise NotFoundError("No such field on this form.")
    text = text.strip()
    if not text:
        raise ValidationFailed({"text": "Say what should be checked."})
    query = DataQuery(record_id=record.id, site_id=record.site_id, instrument=instrument, instance=instance,
                      field=field, raised_by_id=actor.user.id, status=QueryStatus.OPEN)
    session.add(query)
    session.flush()
    _add_step(session, actor, record, query, "raise", text[:MAX_TEXT])
    return query


def _add_step(session: Session, actor: Actor, record: Record, query: DataQuery, action: str, text: str) -> None:
    session.add(QueryMessage(query_id=query.id, user_id=actor.user.id, action=action, text=text))
    query.updated_at = utcnow()
    session.flush()
    append(session, [audit_entry(actor, record, action=f"query_{action}", instrument=query.instrument,
                            instance=query.instance, field=query.field, new=query.status.value,
                            reason=f"query #{query.id}: {text}")])


def answer_query(session: Session, actor: Actor, record: Record, query: DataQuery, text: str) -> None:
    """The site's coordinator answers (and usually corrects the value separately)."""
    if not can(actor.user, Action.EDIT, record.site_id):
        raise PermissionDenied("Only the site's coordinators answer data queries.")
    if query.status != QueryStatus.OPEN:
        raise ConflictError("Only an open query can be answered.")
    if not text.strip():
        raise ValidationFailed({"text": "Write your answer."})
    query.status = QueryStatus.ANSWERED
    _add_step(session, actor, record, query, "answer", text.strip()[:MAX_TEXT])


def close_query(session: Session, actor: Actor, record: Record, query: DataQuery, text: str = "") -> None:
    """The raiser (or an admin) closes the query once satisfied."""
    if actor.user.id != query.raised_by_id and not actor.user.is_admin:
        raise PermissionDenied("Only the person who raised the query (or an admin) can close it.")
    if query.status == QueryStatus.CLOSED:
        raise ConflictError("This query is already closed.")
    query.status = QueryStatus.CLOSED
    _add_step(session, actor, record, query, "close", text.strip()[:MAX_TEXT] or "Closed")


def reopen_query(session: Session, actor: Actor, record: Record, query: DataQuery, text: str) -> None:
    """The raiser (or an admin) reopens an answered or closed query with a note."""
    if actor.user.id != query.raised_by_id and not actor.user.is_admin:
        raise PermissionDenied("Only the person who raised the query (or an admin) can reopen it.")
    if query.status == QueryStatus.OPEN:
        raise ConflictError("This query is already open.")
    if not text.strip():
        raise ValidationFailed({"text": "Say why the query is reopened."})
    query.status = QueryStatus.OPEN
    _add_step(session, actor, record, query, "reopen", text.strip()[:MAX_TEXT])
