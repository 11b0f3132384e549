"""Long work started from the browser (exports, imports, synthetic data) runs in a background
thread; its progress lives in a file.

Such work takes minutes, longer than a browser (or a proxy) should wait on one request. The
page starts a job, then polls its state. Several app processes may serve one deployment, and
the poll may reach any of them, so nothing about a job is kept in memory: each job is a
folder `instance/<kind>-jobs/<job id>/` (or under `<KIND>_JOBS_DIR`, e.g. `EXPORT_JOBS_DIR`)
holding `state.json` (who asked, what, progress, outcome) and whatever files the work reads
or writes (an uploaded CSV, an export bundle). The job id is a random token and a job is
shown only to the user who started it: anyone else gets a 404, as for a record at another site.

Finished jobs are deleted an hour after they last changed (their files may hold identified
data), and a job whose state stopped changing for longer than `STALE_AFTER_SECONDS` is
reported as stopped: its process ended (restart, crash) before it finished.
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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from flask import Flask

from app.auth.models import User
from app.errors import CasebookError, NotFoundError
from app.extensions import db

log = logging.getLogger(__name__)

KEEP_FINISHED_SECONDS = 3600
STALE_AFTER_SECONDS = 1800
#: The state file is rewritten at most this often while a job advances (every poll still sees
#: progress at least once a second; a 100,000-record job does not write 100,000 files).
SAVE_EVERY_SECONDS = 0.5
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@dataclass(frozen=True, slots=True)
class JobState:
    """What the progress page shows.

    `phase` is the kind's own word for the step it is in (e.g. "writing"), or "done" or
    "failed"; `params` is what the user asked for and `result` what the finished work left
    for the page (a download name, counts, problems), both plain JSON.
    """

    id: str
    user_id: int
    phase: str
    done: int = 0
    total: int = 0
    message: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")

    @property
    def percent(self) -> int:
        if self.phase == "done":
            return 100
        return min(99, int(99 * self.done / self.total)) if self.total else 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON the progress page polls (never `params` or `result`: they may hold record data)."""
        return {"phase": self.phase, "done": self.done, "total": self.total, "percent": self.percent,
                "message": self.message, "finished": self.finished}


class RunningJob:
    """The handle the work function gets: its folder, and the state it moves along."""

    def __init__(self, app: Flask, kind: JobKind, state: JobState) -> None:
        self.app = app
        self.kind = kind
        self.state = state
        self.folder = kind.folder(app, state.id)
        self._saved_at = 0.0

    def update(self, **changes: Any) -> None:
        """Change the state and save it now (phase changes, the outcome)."""
        self.state = self.kind.save(self.app, replace(self.state, **changes))
        self._saved_at = time.monotonic()

    def advance(self, count: int, then: str | None = None) -> None:
        """The progress callback: `count` more units done; once all are, the phase becomes `then` if given.

        Saved when a phase changes, and otherwise at most every SAVE_EVERY_SECONDS.
        """
        done = self.state.done + count
        phase = then if then is not None and done >= self.state.total else self.state.phase
        if phase != self.state.phase or time.monotonic() - self._saved_at >= SAVE_EVERY_SECONDS:
            self.update(done=done, phase=phase)
        else:
            self.state = replace(self.state, done=done)


#: The work of a job, run in its thread with an app context: it commits what it writes and
#: ends by setting the phase to "done" (or "failed" for an outcome it reports itself).
Work = Callable[[RunningJob, User], None]


class JobKind:
    """One kind of background job: where its folders live and what its messages call it.

    `noun` names the work in messages ("export": "No such export."); `unexpected` is the
    message of a job that failed on a server error (it says what was kept, if anything).
    """

    def __init__(self, name: str, *, noun: str, unexpected: str) -> None:
        self.name = name
        self.noun = noun
        self.unexpected = unexpected

    def root(self, app: Flask) -> Path:
        """`<NAME>_JOBS_DIR` if set (tests, or a folder shared by several hosts), else in the instance folder."""
        return Path(app.config.get(f"{self.name.upper()}_JOBS_DIR") or Path(app.instance_path) / f"{self.name}-jobs")

    def folder(self, app: Flask, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise NotFoundError(f"No such {self.noun}.")
        return self.root(app) / job_id

    def save(self, app: Flask, state: JobState) -> JobState:
        """Write the state atomically, so a poll never reads half a file."""
        state = replace(state, updated=time.time())
        folder = self.folder(app, state.id)
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
        os.replace(tmp, folder / "state.json")
        return state

    def load(self, app: Flask, job_id: str) -> JobState | None:
        try:
            raw = json.loads((self.folder(app, job_id) / "state.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return JobState(**raw)

    def for_user(self, app: Flask, user: User, job_id: str) -> JobState:
        """The job's state for the user who started it; anyone else (or an unknown id) gets NotFoundError."""
        state = self.load(app, job_id)
        if state is None or state.user_id != user.id:
            raise NotFoundError(f"No such {self.noun}.")
        if not state.finished and time.time() - state.updated > STALE_AFTER_SECONDS:
            return replace(state, phase="failed", message=f"The {self.noun} stopped before it finished (the "
                           "server restarted). Start it again.")
        return state

    def start(self, app: Flask, user: User, work: Work, *, phase: str, total: int = 0,
              params: Mapping[str, Any] | None = None, files: Mapping[str, bytes] | None = None) -> str:
        """Create the job's folder (with `files` in it) and state, run `work` in a thread; return the job id.

        The caller checks the request first, so a bad one is refused at once, not as a failed job.
        """
        self.purge(app)
        job_id = secrets.token_urlsafe(24)
        folder = self.folder(app, job_id)
        folder.mkdir(parents=True, mode=0o700)
        for name, content in (files or {}).items():
            (folder / name).write_bytes(content)
        self.save(app, JobState(job_id, user.id, phase, total=total, params=dict(params or {})))
        thread = threading.Thread(target=self._run, args=(app, job_id, work), name=f"{self.name}-{job_id[:8]}",
                                  daemon=True)
        thread.start()
        return job_id

    def _run(self, app: Flask, job_id: str, work: Work) -> None:
        """The thread: its own app context and database session; the user's rights are the work's to check again."""
        with app.app_context():
            state = self.load(app, job_id)
            if state is None:
                return
            job = RunningJob(app, self, state)
            try:
                user = db.session.get(User, state.user_id)
                if user is None or not user.is_active:
                    raise NotFoundError("Your account is no longer active.")
                work(job, user)
            except CasebookError as exc:
                db.session.rollback()
                job.update(phase="failed", message=exc.message)
            except Exception:
                db.session.rollback()
                log.exception("background %s %s failed", self.name, job_id[:8])
                job.update(phase="failed", message=self.unexpected)
            finally:
                db.session.remove()

    def purge(self, app: Flask) -> None:
        """Delete jobs finished (or stopped) long enough ago; their files may hold identified data."""
        root = self.root(app)
        if not root.is_dir():
            return
        now = time.time()
        for folder in root.iterdir():
            state = self.load(app, folder.name) if _JOB_ID.match(folder.name) else None
            age = now - (state.updated if state else folder.stat().st_mtime)
            if age > (KEEP_FINISHED_SECONDS if state is None or state.finished else STALE_AFTER_SECONDS):
                shutil.rmtree(folder, ignore_errors=True)
