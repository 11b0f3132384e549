"""Imports every model module so that the metadata (and Alembic's autogenerate) sees all tables."""

from app.api.models import ApiToken
from app.audit.models import AuditEvent, AuditHead
from app.auth.models import Membership, Site, User
from app.ratelimit import RateLimitCounter
from app.records.models import FormInstance, Record, RememberedRow
from app.review.models import DataQuery, QueryMessage, Signature

__all__ = [
    "ApiToken", "AuditEvent", "AuditHead", "DataQuery", "FormInstance", "Membership", "QueryMessage",
    "RateLimitCounter", "Record", "RememberedRow", "Signature", "Site", "User",
]
