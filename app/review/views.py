"""Review list, sign-off, unlock, data queries and the data-quality report. Thin views."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app.auth.permissions import Action, can
from app.errors import ValidationFailed
from app.extensions import db
from app.records.quality import site_report
from app.records.repository import RecordRepository
from app.records.services import Actor
from app.review.forms import QueryStepForm, RaiseQueryForm, ReasonForm, SignForm
from app.review.models import QueryStatus
from app.review.services import (
    answer_query,
    awaiting_signature,
    close_query,
    raise_query,
    reopen_query,
    sign_record,
    unlock_record,
)
from app.study import current_study

bp = Blueprint("review", __name__)


def _repo() -> RecordRepository:
    if current_user.is_statistician and not current_user.is_admin:
        abort(403, "Statisticians work with de-identified exports; records are not shown.")
    return RecordRepository(db.session, current_user)


def _back_to_record(label: str) -> Response:
    return redirect(url_for("records.record", label=label))


@bp.route("/review")
@login_required
def review_list() -> str:
    repo = _repo()
    code = request.args.get("site", "").strip()
    site = repo.site(code, Action.REVIEW) if code else None  # the dashboards link one site's list
    items = awaiting_signature(db.session, current_user, site.id if site else None)
    return render_template("review/list.html", items=items, site=site)


@bp.route("/records/<label>/sign", methods=["GET", "POST"])
@login_required
def sign(label: str) -> str | Response | tuple[str, int]:
    record = _repo().get(label)
    if not can(current_user, Action.REVIEW, record.site_id):
        abort(403, "Only an investigator of this site (or an admin) can sign records.")
    form = SignForm()
    if form.validate_on_submit():
        try:
            sign_record(db.session, Actor(current_user), record, form.password.data or "", form.meaning.data or "")
        except ValidationFailed as exc:
            for name, message in exc.errors.items():
                form[name].errors = [message]
            db.session.commit()  # a failed signature attempt is itself audited
            return render_template("review/sign.html", record=record, form=form), 422
        flash(f"{record.label} signed and locked.", "success")
        return _back_to_record(record.label)
    status = 422 if request.method == "POST" else 200
    return render_template("review/sign.html", record=record, form=form), status


@bp.route("/records/<label>/unlock", methods=["POST"])
@login_required
def unlock(label: str) -> Response:
    record = _repo().get(label)
    form = ReasonForm()
    if not form.validate():
        flash("Give a reason to unlock the record.", "error")
        return _back_to_record(label)
    unlock_record(db.session, Actor(current_user), record, form.reason.data or "")
    flash(f"{record.label} unlocked.", "success")
    return _back_to_record(label)


@bp.route("/records/<label>/queries", methods=["POST"])
@login_required
def raise_(label: str) -> Response:
    repo = _repo()
    record = repo.get(label)
    form = RaiseQueryForm()
    target = url_for("records.form", label=label, instrument=form.instrument.data or "enrolment",
                     instance=form.instance.data or 1)
    if not form.validate():
        flash("Choose a field and say what should be checked.", "error")
        return redirect(request.form.get("back") or target)
    try:
        raise_query(db.session, current_study(), Actor(current_user), record, form.instrument.data or "",
                    form.instance.data or 1, form.field.data or "", form.text.data or "")
    except ValidationFailed as exc:
        flash(exc.message, "error")
    else:
        flash("Query raised; the site's coordinators will see it.", "success")
    back = request.form.get("back", "")
    return redirect(back if back.startswith("/") and not back.startswith("//") else target)


STEPS = {"answer": answer_query, "close": close_query, "reopen": reopen_query}


@bp.route("/records/<label>/queries/<int:query_id>/<step>", methods=["POST"])
@login_required
def query_step(label: str, query_id: int, step: str) -> Response:
    if step not in STEPS:
        abort(404)
    repo = _repo()
    record = repo.get(label)
    query = repo.query(record, query_id)
    form = QueryStepForm()
    try:
        STEPS[step](db.session, Actor(current_user), record, query, form.text.data or "")
    except ValidationFailed as exc:
        flash(exc.message if not exc.errors else next(iter(exc.errors.values())), "error")
    else:
        flash(f"Query #{query.id} {query.status.value}.", "success")
    return redirect(url_for("records.form", label=label, instrument=query.instrument, instance=query.instance)
                    + f"#row-{query.field}")


@bp.route("/sites/<site_code>/queries")
@login_required
def site_queries(site_code: str) -> str:
    repo = _repo()
    site = repo.site(site_code)
    wanted = request.args.get("status", "open")
    status = QueryStatus(wanted) if wanted in {s.value for s in QueryStatus} else None
    rows = repo.site_queries(site, status)
    return render_template("review/queries.html", site=site, rows=rows, status=wanted)


@bp.route("/sites/<site_code>/quality")
@login_required
def quality(site_code: str) -> str:
    repo = _repo()
    site = repo.site(site_code)
    hits = list(site_report(db.session, current_study(), site.id))
    return render_template("review/quality.html", site=site, hits=hits,
                           can_query=can(current_user, Action.QUERY, site.id))
