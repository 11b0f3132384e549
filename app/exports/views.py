"""Export pages: pick a profile, preview it, download the bundle. Thin: parse, call a service, render.

From the preview page an export runs as a background job (app/exports/background.py, on
app/jobs) whose progress page polls its state; `POST /exports/<name>` still answers the
bundle itself in the one request, for scripts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import Blueprint, abort, current_app, redirect, render_template, request, send_file, url_for
from flask.blueprints import BlueprintSetupState
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from app.errors import PermissionDenied
from app.exports.background import EXPORT_JOBS, bundle_for, start_export
from app.exports.disclosure import ExportRefused
from app.exports.services import (
    ExportJob,
    ExportRequestError,
    Requester,
    export_sites,
    get_profile,
    init_profiles,
    resolve_scope,
    usable_profiles,
)
from app.extensions import db
from app.jobs.views import add_job_routes
from app.study import current_study

bp = Blueprint("exports", __name__, url_prefix="/exports")


@bp.record_once
def _load_profiles(state: BlueprintSetupState) -> None:
    init_profiles(state.app)


def _job(name: str, site_code: str | None) -> ExportJob:
    profile = get_profile(name)
    try:
        scope = resolve_scope(db.session, current_user, profile, site_code or None)
    except ExportRequestError as exc:
        abort(400, exc.message)
    return ExportJob(db.session, current_study(), scope)


@bp.route("")
@login_required
def index() -> str:
    profiles = usable_profiles(current_user)
    if not profiles:
        raise PermissionDenied("Your role has no exports.")
    sites = export_sites(db.session, current_user) if any(p.per_site for p in profiles) else []
    return render_template("exports/index.html", profiles=profiles, sites=sites)


@bp.route("/<name>")
@login_required
def preview(name: str) -> str:
    site_code = request.args.get("site", "").strip()
    job = _job(name, site_code)
    return render_template("exports/preview.html", job=job, preview=job.preview(), site_code=site_code)


@bp.route("/<name>", methods=["POST"])
@login_required
def download(name: str) -> Response:
    job = _job(name, request.form.get("site", "").strip())
    handle, tmp = tempfile.mkstemp(prefix="casebook-", suffix=".zip")
    os.close(handle)
    path = Path(tmp)
    try:
        result = job.write(path, Requester.of(current_user))
    except ExportRefused as exc:
        path.unlink(missing_ok=True)
        abort(409, exc.message)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    response = send_file(path, mimetype="application/zip", as_attachment=True, download_name=result.download_name)
    response.call_on_close(lambda: path.unlink(missing_ok=True))
    return response


@bp.route("/<name>/jobs", methods=["POST"])
@login_required
def start(name: str) -> Response:
    """Start the export in the background and show its progress page."""
    try:
        job_id = start_export(current_app._get_current_object(), current_user._get_current_object(), name,
                              request.form.get("site", "").strip())
    except ExportRequestError as exc:
        abort(400, exc.message)
    return redirect(url_for("exports.job", job_id=job_id), code=303)


add_job_routes(bp, EXPORT_JOBS, "exports/job.html", lambda state: {"profile": get_profile(state.params["profile"])})


@bp.route("/jobs/<job_id>/bundle")
@login_required
def job_bundle(job_id: str) -> Response:
    path, download_name = bundle_for(current_app._get_current_object(), current_user, job_id)
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=download_name)
