"""The two pages every kind of job has: its progress page and the state that page polls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template
from flask_login import current_user, login_required

from app.jobs import JobKind, JobState


def add_job_routes(bp: Blueprint, kind: JobKind, template: str,
                   context: Callable[[JobState], dict[str, Any]] | None = None) -> None:
    """Add `<bp>.job` (/jobs/<job_id>, `template` with `state` and `context(state)`) and
    `<bp>.job_state` (its JSON) to the blueprint, both for the job's starter only (404 for anyone else)."""

    def job(job_id: str) -> str:
        state = kind.for_user(current_app._get_current_object(), current_user, job_id)
        return render_template(template, state=state, **(context(state) if context else {}))

    def job_state(job_id: str) -> Response:
        """Any app process can answer the poll: the state is a file."""
        return jsonify(kind.for_user(current_app._get_current_object(), current_user, job_id).as_dict())

    bp.add_url_rule("/jobs/<job_id>", "job", login_required(job))
    bp.add_url_rule("/jobs/<job_id>/state", "job_state", login_required(job_state))
