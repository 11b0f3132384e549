"""Record-status grid, record page and data-entry forms. Thin: parse, call a service, render."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app.audit.services import VALUE_ACTIONS, decode_cell
from app.auth.permissions import Action, can
from app.db import utcnow
from app.errors import ConflictError, ValidationFailed
from app.extensions import db
from app.logic import to_json
from app.records.forms import (
    MISSING_SUFFIX,
    build_form_class,
    expected_version,
    initial_data,
    reason_from,
    submission_from,
)
from app.records.models import Record
from app.records.repository import STATUS_FILTERS, RecordRepository
from app.records.services import (
    STATUS_FIELD,
    Actor,
    RuleWarnings,
    create_record,
    delete_record,
    record_context,
    restore_record,
    save_form,
)
from app.review.forms import QueryStepForm, RaiseQueryForm, ReasonForm
from app.review.services import valid_signature
from app.study import current_study
from app.study.definition import Instrument
from app.study.fieldtypes import field_type

bp = Blueprint("records", __name__)


def _repo() -> RecordRepository:
    if current_user.is_statistician and not current_user.is_admin:
        abort(403, "Statisticians work with de-identified exports; records are not shown.")
    return RecordRepository(db.session, current_user)


@bp.route("/sites/<site_code>/records")
@login_required
def grid(site_code: str) -> str:
    repo = _repo()
    site = repo.site(site_code)
    page = request.args.get("page", "1")
    search = request.args.get("q", "").strip()[:40]
    form_name, status = request.args.get("form", ""), request.args.get("status", "")
    form_status = None
    if current_study().has_instrument(form_name) and status in STATUS_FILTERS:
        form_status = (form_name, STATUS_FILTERS[status])
    else:
        form_name = status = ""
    result = repo.page(site, search=search, page=int(page) if page.isdigit() else 1, form_status=form_status)
    cells: dict[int, dict[str, tuple[int | None, int]]] = {}
    for rec in result.records:
        row: dict[str, tuple[int | None, int]] = {}
        for summary in result.forms.get(rec.id, []):
            status, count = row.get(summary.instrument, (None, 0))
            # A repeatable form shows its least advanced instance, so nothing unfinished hides.
            worst = summary.status if status is None else min(status, summary.status)
            row[summary.instrument] = (worst, count + 1)
        cells[rec.id] = row
    return render_template(
        "records/grid.html", site=site, result=result, search=search, cells=cells,
        form_filter=form_name, status_filter=status,
        can_create=can(current_user, Action.CREATE, site.id),
    )


@bp.route("/sites/<site_code>/records", methods=["POST"])
@login_required
def create(site_code: str) -> Response:
    repo = _repo()
    site = repo.site(site_code)
    record = create_record(db.session, Actor(current_user), site)
    flash(f"Record {record.label} created.", "success")
    first = current_study().instruments[0].name
    return redirect(url_for("records.form", label=record.label, instrument=first, instance=1))


@bp.route("/records/<label>")
@login_required
def record(label: str) -> str:
    repo = _repo()
    rec = repo.get(label)
    forms = repo.forms(rec)
    study = current_study()
    by_instrument: dict[str, list[Any]] = {i.name: [] for i in study.instruments}
    for f in forms:
        by_instrument.setdefault(f.instrument, []).append(f)
    audit = [_audit_row(e) for e in repo.audit(rec)]
    return render_template(
        "records/record.html", record=rec, by_instrument=by_instrument, audit=audit,
        can_edit=can(current_user, Action.EDIT, rec.site_id) and rec.locked_at is None,
        can_review=can(current_user, Action.REVIEW, rec.site_id),
        signature=valid_signature(db.session, rec), queries=repo.queries(rec),
        reason_form=ReasonForm(),
    )


@bp.route("/records/<label>/delete", methods=["POST"])
@login_required
def delete(label: str) -> Response:
    rec = _repo().get(label)
    form = ReasonForm()
    if not form.validate():
        flash("Give a reason to delete the record.", "error")
        return redirect(url_for("records.record", label=label))
    delete_record(db.session, Actor(current_user), rec, form.reason.data or "")
    flash(f"{rec.label} deleted. An admin can restore it from the list of deleted records.", "success")
    return redirect(url_for("records.grid", site_code=rec.site.code))


@bp.route("/records/deleted")
@login_required
def deleted() -> str:
    if not current_user.is_admin:
        abort(403, "Only an admin sees deleted records.")
    return render_template("records/deleted.html", records=_repo().deleted(), reason_form=ReasonForm())


@bp.route("/records/<label>/restore", methods=["POST"])
@login_required
def restore(label: str) -> Response:
    rec = _repo().get_deleted(label)
    form = ReasonForm()
    if not form.validate():
        flash("Give a reason to restore the record.", "error")
        return redirect(url_for("records.deleted"))
    restore_record(db.session, Actor(current_user), rec, form.reason.data or "")
    flash(f"{rec.label} restored.", "success")
    return redirect(url_for("records.record", label=label))


@bp.route("/records/<label>/print")
@login_required
def print_sheet(label: str) -> str:
    """Every form's values on one page, laid out to print as a source-verification sheet."""
    repo = _repo()
    rec = repo.get(label)
    study = current_study()
    stored: dict[str, list[Any]] = {i.name: [] for i in study.instruments}
    for f in repo.forms(rec):
        stored.setdefault(f.instrument, []).append(f)
    sheets = [
        (inst, form, [(f, _shown(f, form.data.get(f.name), form.missing.get(f.name))) for f in inst.data_fields])
        for inst in study.instruments for form in stored[inst.name]
    ]
    return render_template("records/print.html", record=rec, sheets=sheets, unsaved=[
        i for i in study.instruments if not stored[i.name]], signature=valid_signature(db.session, rec),
        printed_at=utcnow())


def _shown(field: Any, value: Any, code: str | None) -> str:
    """A stored value as people read it: choice labels, or the missing-data code and its meaning."""
    if code:
        return f"{code} ({current_study().missing_label(code) or 'missing'})"
    return field_type(field).to_text(field, value)


def _audit_row(event: Any) -> dict[str, Any]:
    study = current_study()
    field = study.field(event.field) if event.field and study.has_field(event.field) else None

    def show(text: str | None) -> str:
        if text is None:
            return ""
        if event.action == "status":
            return {"0": "Incomplete", "1": "Unverified", "2": "Complete"}.get(text, text)
        if not (field and event.action in VALUE_ACTIONS):  # query, warning, signature rows hold text
            return text
        value, code = decode_cell(text)
        return _shown(field, value, code)

    return {
        "event": event,
        "field_label": field.label if field else (event.field or ""),
        "old": show(event.old_value),
        "new": show(event.new_value),
    }


def _instrument_or_404(name: str) -> Instrument:
    study = current_study()
    if not study.has_instrument(name):
        abort(404, "No such form.")
    return study.instrument(name)


@bp.route("/records/<label>/<instrument>/new", methods=["GET", "POST"])
@bp.route("/records/<label>/<instrument>/<int:instance>", methods=["GET", "POST"])
@login_required
def form(label: str, instrument: str, instance: int | None = None) -> str | Response | tuple[str, int]:
    repo = _repo()
    rec = repo.get(label)
    study = current_study()
    inst = _instrument_or_404(instrument)
    if instance is None and not inst.repeatable:
        abort(404, "This form has only one instance.")
    if instance is not None and (instance < 1 or (not inst.repeatable and instance != 1)):
        abort(404, "No such form instance.")
    stored = repo.form(rec, inst.name, instance) if instance is not None else None
    if stored is None and instance is not None and instance > 1 and request.method == "GET":
        abort(404, "No such form instance.")
    form_class = build_form_class(study, inst)
    can_edit = can(current_user, Action.EDIT, rec.site_id)
    form = form_class(data=initial_data(inst, stored)) if request.method == "GET" else form_class()
    status = 200
    conflict = None
    warnings = False
    if request.method == "POST":
        if not can_edit:
            abort(403, "You can view this form but not change it.")
        if rec.locked_at is not None:
            abort(403, "This record is locked after sign-off; it must be unlocked before it can change.")
        if form.validate():
            try:
                outcome = save_form(
                    db.session, study, Actor(current_user), rec, inst.name, instance,
                    submission_from(inst, form), expected_version=expected_version(form),
                    reason=reason_from(form), confirm_warnings=bool(form.confirm_warnings.data),
                )
            except RuleWarnings as exc:
                _attach_errors(form, exc.errors)
                flash(exc.message, "warning")
                warnings = True
                status = 422
            except ValidationFailed as exc:
                _attach_errors(form, exc.errors)
                flash(exc.message, "error")
                status = 422
            except ConflictError as exc:
                conflict = _conflict_details(inst, exc, form)
                flash(exc.message, "error")
                status = 409
            else:
                if outcome.incomplete_required:
                    flash(f"Saved. {len(outcome.incomplete_required)} required field(s) are still empty.", "warning")
                else:
                    flash(f"{inst.label} saved.", "success")
                if request.form.get("next") == "stay":
                    return redirect(url_for("records.form", label=rec.label, instrument=inst.name,
                                            instance=outcome.form.instance))
                following = study.instrument_after(inst.name)
                if request.form.get("next") == "form" and following is not None:
                    return redirect(_first_form_url(repo, rec, following))
                return redirect(url_for("records.record", label=rec.label))
        else:
            status = 422
    others = [f for f in repo.forms(rec) if (f.instrument, f.instance) != (inst.name, instance)]
    queries: dict[str, list[Any]] = {}
    for query in repo.queries(rec):
        if (query.instrument, query.instance) == (inst.name, instance):
            queries.setdefault(query.field, []).append(query)
    return render_template(
        "records/form.html", record=rec, instrument=inst, instance=instance, form=form, stored=stored,
        can_edit=can_edit and rec.locked_at is None, conflict=conflict, missing_suffix=MISSING_SUFFIX,
        warnings=warnings, queries=queries, can_query=can(current_user, Action.QUERY, rec.site_id),
        can_answer=can(current_user, Action.EDIT, rec.site_id), step_form=QueryStepForm(),
        raise_form=RaiseQueryForm(instrument=inst.name, instance=instance or 1),
        logic=_logic_for(inst), rules=_rules_for(inst), context=record_context(study, others),
        following=study.instrument_after(inst.name),
        missing_codes=sorted(study.missing_code_values),
    ), status


def _first_form_url(repo: RecordRepository, rec: Record, inst: Instrument) -> str:
    """Where "Save and go to next form" leads: the form's first instance, or a new one of a
    repeatable form the record does not have yet (REDCap's "Save & Go To Next Form")."""
    if inst.repeatable and repo.form(rec, inst.name, 1) is None:
        return url_for("records.form", label=rec.label, instrument=inst.name)
    return url_for("records.form", label=rec.label, instrument=inst.name, instance=1)


def _attach_errors(form: Any, errors: dict[str, str]) -> None:
    for name, message in errors.items():
        if name == STATUS_FIELD:
            form.form_status.errors = [message]
        elif name in form:
            form[name].errors = [message]


def _conflict_details(inst: Instrument, exc: ConflictError, form: Any) -> list[dict[str, str]]:
    """Fields where the saved version differs from what this user typed; version moved on."""
    current = exc.current
    if current is None:
        return []
    form.version.data = str(current.version)
    rows = []
    for f in inst.data_fields:
        saved_code = current.missing.get(f.name)
        saved = saved_code or field_type(f).to_text(f, current.data.get(f.name))
        mine = form[f.name].data
        if field_type(f).has_choices:  # both sides as labels, so a choice compares like with like
            mine_text = field_type(f).to_text(f, mine or None)
        else:
            mine_text = ", ".join(mine) if isinstance(mine, list) else (mine or "")
        code_field = f.name + MISSING_SUFFIX
        if code_field in form and form[code_field].data:
            mine_text = form[code_field].data
        if field_type(f).is_input and str(saved) != str(mine_text):
            rows.append({"label": f.label, "saved": str(saved), "mine": str(mine_text)})
    return rows


def _logic_for(inst: Instrument) -> dict[str, dict[str, Any]]:
    """Branching and calc trees as JSON for the browser, from the same parse as the server's."""
    logic: dict[str, dict[str, Any]] = {}
    for f in inst.fields:
        entry = {}
        if f.branching_tree is not None:
            entry["branching"] = to_json(f.branching_tree)
        if f.calculation_tree is not None:
            entry["calc"] = to_json(f.calculation_tree)
        if entry:
            logic[f.name] = entry
    return logic


def _rules_for(inst: Instrument) -> list[dict[str, Any]]:
    """Data-quality rules of this form for live warnings in the browser."""
    return [{"field": r.field, "label": r.label, "tree": to_json(r.tree)} for r in current_study().rules_for(inst.name)]
