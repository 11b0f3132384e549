from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.extensions import db
from app.records.models import Record


def test_demo_loads_three_published_cases(demo):
    labels = db.session.scalars(select(Record.label).order_by(Record.label)).all()
    assert labels == ["KMU-0001", "KMU-0002", "KMU-0003"]
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) > 50
