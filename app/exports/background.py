"""Exports started from the browser run in a background thread; their progress lives in a file.

An export of many records takes minutes, longer than a browser (or a proxy) should wait on
one request. The page starts a job, then polls its state. Several app processes may serve
one deployment, and the poll may reach any of them, so nothing about a job is kept in
memory: each job is a folder `instance/export-jobs/<job id>/` (or under `EXPORT_JOBS_DIR`) holding `state.json`
(who asked, what, progress, outcome) and, once finished, `bundle.zip`. The job id is a
random token and the bundle is handed only to the user who started the job.

Finished jobs are deleted an hour after they last changed (the bundle may hold identified
data), and a job whose state stopped changing for longer than `STALE_AFTER` is reported as
stopped: its process ended (restart, crash) before it finished.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flask import Flask

from app.auth.models import User
from app.errors import CasebookError, NotFoundError
from app.exports.services import ExportJob, ExportScope, Requester, get_profile, resolve_scope
from app.extensions import db
from app.study import current_study

log = logging.getLogger(__name__)

JOBS_FOLDER = "export-jobs"
KEEP_FINISHED_SECONDS = 3600
STALE_AFTER_SECONDS = 1800
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@dataclass(frozen=True, slots=True)
class JobState:
    """What the progress page shows; `phase` is one of counting, writing, finishing, done, failed."""

    id: str
    user_id: int
    profile: str
    site: str | None
    phase: str
    done: int = 0
    total: int = 0
    message: str = ""
    download_name: str = ""
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")

    @property
    def percent(self) -> int:
        if self.phase == "done":
            return 100
        if self.phase == "finishing":
            return 99
        return int(99 * self.done / self.total) if self.total else 0

    def as_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "done": self.done, "total": self.total, "percent": self.percent,
                "message": self.message, "finished": self.finished}


def _root(app: Flask) -> Path:
    """`EXPORT_JOBS_DIR` if set (tests, or a folder shared by several hosts), else in the instance folder."""
    return Path(app.config.get("EXPORT_JOBS_DIR") or Path(app.instance_path) / JOBS_FOLDER)


def _folder(app: Flask, job_id: str) -> Path:
    if not _JOB_ID.match(job_id):
        raise NotFoundError("No such export.")
    return _root(app) / job_id


def _save(app: Flask, state: JobState) -> JobState:
    """Write the state atomically, so a poll never reads half a file."""
    state = replace(state, updated=time.time())
    folder = _folder(app, state.id)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
    os.replace(tmp, folder / "state.json")
    return state


def _load(app: Flask, job_id: str) -> JobState | None:
    try:
        raw = json.loads((_folder(app, job_id) / "state.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return JobState(**raw)


def job_for(app: Flask, user: User, job_id: str) -> JobState:
    """The job's state for the user who started it; anyone else (or an unknown id) gets NotFoundError."""
    state = _load(app, job_id)
    if state is None or state.user_id != user.id:
        raise NotFoundError("No such export.")
    if not state.finished and time.time() - state.updated > STALE_AFTER_SECONDS:
        return replace(state, phase="failed", message="The export stopped before it finished (the server "
                       "restarted). Start it again.")
    return state


def bundle_for(app: Flask, user: User, job_id: str) -> tuple[Path, str]:
    """The finished bundle's path and download name, for its requester only."""
    state = job_for(app, user, job_id)
    path = _folder(app, job_id) / "bundle.zip"
    if state.phase != "done" or not path.is_file():
        raise NotFoundError("This export has no bundle to download.")
    return path, state.download_name


def start_export(app: Flask, user: User, profile_name: str, site_code: str | None) -> str:
    """Check the request now (so a bad one is refused at once), then export in a thread; return the job id."""
    profile = get_profile(profile_name)
    scope = resolve_scope(db.session, user, profile, site_code or None)
    _purge(app)
    job_id = secrets.token_urlsafe(24)
    folder = _folder(app, job_id)
    folder.mkdir(parents=True, mode=0o700)
    site = scope.site.code if scope.site else None
    _save(app, JobState(job_id, user.id, profile.name, site, "counting"))
    thread = threading.Thread(target=_run, args=(app, job_id), name=f"export-{job_id[:8]}", daemon=True)
    thread.start()
    return job_id


def _run(app: Flask, job_id: str) -> None:
    """The thread: its own app context and database session, one commit (the audit row) at the end."""
    with app.app_context():
        state = _load(app, job_id)
        if state is None:
            return
        folder = _folder(app, job_id)
        partial = folder / "bundle.zip.partial"
        try:
            user = db.session.get(User, state.user_id)
            if user is None or not user.is_active:
                raise NotFoundError("Your account is no longer active.")
            # Rights are checked again here: they may have changed since the request.
            scope: ExportScope = resolve_scope(db.session, user, get_profile(state.profile), state.site)
            job = ExportJob(db.session, current_study(), scope)
            state = _save(app, replace(state, phase="writing", total=job.total))
            progress = _Progress(app, state)
            result = job.write(partial, Requester.of(user), progress=progress)
            _save(app, replace(progress.state, phase="finishing", done=job.total))
            db.session.commit()
            os.replace(partial, folder / "bundle.zip")
            _save(app, replace(progress.state, phase="done", done=job.total, download_name=result.download_name,
                               message=f"{job.total} records exported."))
        except CasebookError as exc:
            db.session.rollback()
            _save(app, replace(state, phase="failed", message=exc.message))
        except Exception:
            db.session.rollback()
            log.exception("background export %s failed", job_id[:8])
            _save(app, replace(state, phase="failed", message="The export failed because of an error on the "
                               "server; it is in the server's log. Nothing was exported."))
        finally:
            partial.unlink(missing_ok=True)
            db.session.remove()


class _Progress:
    """`ExportJob.write`'s progress callback: records written so far, saved to the state file."""

    def __init__(self, app: Flask, state: JobState) -> None:
        self.app = app
        self.state = state

    def __call__(self, records: int) -> None:
        done = self.state.done + records
        phase = "finishing" if done >= self.state.total else "writing"
        self.state = _save(self.app, replace(self.state, done=done, phase=phase))


def _purge(app: Flask) -> None:
    """Delete jobs finished (or stopped) long enough ago; their bundles may hold identified data."""
    root = _root(app)
    if not root.is_dir():
        return
    now = time.time()
    for folder in root.iterdir():
        state = _load(app, folder.name) if _JOB_ID.match(folder.name) else None
        age = now - (state.updated if state else folder.stat().st_mtime)
        if age > (KEEP_FINISHED_SECONDS if state is None or state.finished else STALE_AFTER_SECONDS):
            shutil.rmtree(folder, ignore_errors=True)
