"""The home page: the user's sites and how far their data entry has got."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from app.dashboard.services import site_summaries
from app.extensions import db
from app.records.repository import RecordRepository

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@login_required
def home() -> str:
    repo = RecordRepository(db.session, current_user)
    summaries = site_summaries(db.session, repo.sites())
    return render_template("dashboard/home.html", summaries=summaries)
