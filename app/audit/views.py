"""The study-wide audit trail for admins and inspectors: filter, page, download as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

from flask import Blueprint, Response, abort, render_template, request, stream_with_context
from flask_login import current_user, login_required
from sqlalchemy import Select, select

from app.audit.models import AuditEvent
from app.auth.models import Site
from app.extensions import db

bp = Blueprint("audit", __name__)

COLUMNS = ("id", "occurred_at_utc", "username", "site", "record", "action", "instrument", "instance", "field",
           "old_value", "new_value", "reason", "source", "hash")
PER_PAGE = 100


def _admin_only() -> None:
    if not current_user.is_admin:
        abort(403, "Only an admin can see the study-wide audit trail.")


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _filtered() -> tuple[Select, dict[str, str]]:
    """The query for the request's filters: user, site, action, from/to dates (UTC days)."""
    args = {k: (request.args.get(k) or "").strip() for k in ("user", "site", "action", "from", "to")}
    stmt = select(AuditEvent, Site.code).outerjoin(Site, Site.id == AuditEvent.site_id)
    if args["user"]:
        stmt = stmt.where(AuditEvent.username == args["user"].lower())
    if args["site"]:
        stmt = stmt.where(Site.code == args["site"].upper())
    if args["action"]:
        stmt = stmt.where(AuditEvent.action == args["action"])
    start, end = _day(args["from"]), _day(args["to"])
    if start:
        stmt = stmt.where(AuditEvent.occurred_at >= datetime.combine(start, time.min, UTC))
    if end:
        stmt = stmt.where(AuditEvent.occurred_at < datetime.combine(end + timedelta(days=1), time.min, UTC))
    return stmt, args


@bp.route("/audit")
@login_required
def trail() -> str:
    _admin_only()
    stmt, args = _filtered()
    page = max(1, request.args.get("page", 1, type=int) or 1)
    rows = db.session.execute(
        stmt.order_by(AuditEvent.id.desc()).offset((page - 1) * PER_PAGE).limit(PER_PAGE + 1)
    ).all()
    actions = db.session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)).all()
    sites = db.session.scalars(select(Site.code).order_by(Site.code)).all()
    return render_template("audit/trail.html", rows=rows[:PER_PAGE], has_next=len(rows) > PER_PAGE, page=page,
                           args=args, actions=actions, sites=sites)


@bp.route("/audit.csv")
@login_required
def trail_csv() -> Response:
    """The filtered trail as CSV, streamed in id order so any size downloads."""
    _admin_only()
    stmt, _ = _filtered()

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        last_id = 0
        while True:
            batch = db.session.execute(stmt.where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(2000)).all()
            if not batch:
                break
            for event, site_code in batch:
                writer.writerow([
                    event.id, event.occurred_at.isoformat(), event.username, site_code, event.record_label,
                    event.action, event.instrument, event.instance, event.field, event.old_value,
                    event.new_value, event.reason, event.source, event.hash,
                ])
            last_id = batch[-1][0].id
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%MZ")
    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="casebook-audit-{stamp}.csv"'})
