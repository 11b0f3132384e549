"""The Data Import Tool pages: upload a CSV, follow its import job. Thin: parse, call a service, render.

Open to the users the API lets import (`may_import`: coordinators and admins); which records
they may create or change is decided record by record by the import service, at their sites.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from app.api.imports import may_import
from app.auth.permissions import Action
from app.errors import PermissionDenied
from app.extensions import db
from app.imports.forms import ImportForm
from app.imports.services import IMPORT_JOBS, UploadError, start_import, template_columns
from app.jobs.views import add_job_routes
from app.records.repository import RecordRepository
from app.study import current_study

bp = Blueprint("imports", __name__, url_prefix="/imports")
bp.add_app_template_global(may_import, "may_import")


@bp.before_request
@login_required
def _importers_only() -> None:
    if not may_import(current_user):
        raise PermissionDenied("Your role cannot import data: coordinators import at their sites, admins at any.")


def _page(form: ImportForm, status: int = 200) -> tuple[str, int]:
    sites = RecordRepository(db.session, current_user).sites(Action.CREATE)
    return render_template("imports/page.html", form=form, sites=sites), status


@bp.route("", methods=["GET", "POST"])
def page() -> tuple[str, int] | Response:
    form = ImportForm()
    if not form.validate_on_submit():
        return _page(form, 422 if request.method == "POST" else 200)
    upload = form.file.data
    try:
        job_id = start_import(current_app._get_current_object(), current_user._get_current_object(), upload.read(),
                              form.options(), upload.filename or "")
    except UploadError as exc:
        form.file.errors = [exc.message]
        return _page(form, 422)
    return redirect(url_for("imports.job", job_id=job_id), code=303)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> tuple[str, int]:
    """Too large a file is a message next to the upload field (the size limit is the app's MAX_CONTENT_LENGTH)."""
    if not current_user.is_authenticated or not may_import(current_user):
        # Refused before the log-in and role checks ran (reading the form for CSRF): no form to show.
        return render_template("error.html", title=exc.name, message=exc.description), 413
    form = ImportForm(formdata=None)
    limit = current_app.config["MAX_CONTENT_LENGTH"] or 0
    size = f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit / 2**10:g} KB"
    form.file.errors = [f"The file is larger than {size}, the most one upload may be: split it into "
                        "several files (whole records in each) and import them one after the other."]
    return _page(form, 413)


@bp.route("/template.csv")
def template() -> Response:
    """The header line of an import file (REDCap's 'Download your Data Import Template')."""
    study = current_study()
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(template_columns(study))
    name = f"{study.id}_ImportTemplate_{datetime.now(UTC):%Y-%m-%d}.csv"
    return Response(buffer.getvalue().encode("utf-8"), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


add_job_routes(bp, IMPORT_JOBS, "imports/job.html")
