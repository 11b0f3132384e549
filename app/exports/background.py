"""Exports started from the browser: a background job (app/jobs) that writes the bundle.

The job's folder holds, once finished, `bundle.zip`, handed only to the user who started
the job (app/jobs answers anyone else with a 404).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from app.auth.models import User
from app.errors import NotFoundError
from app.exports.services import ExportJob, ExportScope, Requester, get_profile, resolve_scope
from app.extensions import db
from app.jobs import JobKind, RunningJob
from app.study import current_study

EXPORT_JOBS = JobKind("export", noun="export", unexpected="The export failed because of an error on the server; "
                      "it is in the server's log. Nothing was exported.")


def bundle_for(app: Flask, user: User, job_id: str) -> tuple[Path, str]:
    """The finished bundle's path and download name, for its requester only."""
    state = EXPORT_JOBS.for_user(app, user, job_id)
    path = EXPORT_JOBS.folder(app, job_id) / "bundle.zip"
    if state.phase != "done" or not path.is_file():
        raise NotFoundError("This export has no bundle to download.")
    return path, state.result["download_name"]


def start_export(app: Flask, user: User, profile_name: str, site_code: str | None) -> str:
    """Check the request now (so a bad one is refused at once), then export in a thread; return the job id."""
    profile = get_profile(profile_name)
    scope = resolve_scope(db.session, user, profile, site_code or None)
    site = scope.site.code if scope.site else None
    return EXPORT_JOBS.start(app, user, _export, phase="counting", params={"profile": profile.name, "site": site})


def _export(job: RunningJob, user: User) -> None:
    """The work: the disclosure check and count, the bundle, then one commit (the audit row)."""
    partial = job.folder / "bundle.zip.partial"
    try:
        # Rights are checked again here: they may have changed since the request.
        scope: ExportScope = resolve_scope(db.session, user, get_profile(job.state.params["profile"]),
                                           job.state.params["site"])
        export = ExportJob(db.session, current_study(), scope)
        job.update(phase="writing", total=export.total)
        result = export.write(partial, Requester.of(user), progress=lambda records: job.advance(records, "finishing"))
        job.update(phase="finishing", done=export.total)
        db.session.commit()
        os.replace(partial, job.folder / "bundle.zip")
        job.update(phase="done", done=export.total, result={"download_name": result.download_name},
                   message=f"{export.total} records exported.")
    finally:
        partial.unlink(missing_ok=True)
