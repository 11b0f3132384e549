"""Record delete (`content=record&action=delete`): admin only, all or nothing.

Each record goes through the write path's soft delete (`delete_record`: the record
disappears from every list, nothing is erased, an admin can restore it, and the audit
trail says who, when and why). REDCap's call has no reason, so the client may send
`reason`; otherwise the audit row says it was deleted through the API.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from app.api.params import ApiError
from app.auth.models import User
from app.errors import NotFoundError
from app.records.repository import RecordRepository
from app.records.services import Actor, delete_record

DEFAULT_REASON = "Deleted through the API"


def delete_records(session: Session, user: User, labels: Sequence[str], reason: str = "") -> int:
    """Soft-delete the records named; refuse the whole call if any of them does not exist."""
    if not user.is_admin:
        raise ApiError("You do not have permissions to delete records.", 403)
    if not labels:
        raise ApiError('The parameter "records" is missing: name the records to delete.')
    repo = RecordRepository(session, user)
    records, absent = [], []
    for label in labels:
        try:
            records.append(repo.get(label))
        except NotFoundError:
            absent.append(label)
    if absent:
        raise ApiError("One or more of the records provided cannot be deleted because they do not exist in the "
                       f"project. The following records do not exist: {', '.join(absent)}")
    actor = Actor(user, source="api")
    for record in records:
        delete_record(session, actor, record, reason.strip() or DEFAULT_REASON)
    return len(records)
