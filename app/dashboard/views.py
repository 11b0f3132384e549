"""The home page and the dashboards: the user's sites and how far their data entry has got."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, render_template
from flask_login import current_user, login_required

from app.auth.permissions import Action, can
from app.dashboard.services import (
    Disclosure,
    all_sites,
    cumulative_enrolment_svg,
    monthly_enrolment_svg,
    site_dashboards,
    site_summaries,
)
from app.exports.pseudonyms import Pseudonymiser, load_key
from app.exports.services import get_profile
from app.extensions import db
from app.records.repository import RecordRepository
from app.study import current_study

bp = Blueprint("dashboard", __name__)

#: The statistician's study dashboard follows this export profile's site pseudonyms and k.
DEIDENTIFIED_PROFILE = "pooled_case_series"


@bp.route("/")
@login_required
def home() -> str:
    repo = RecordRepository(db.session, current_user)
    summaries = site_summaries(db.session, repo.sites())
    return render_template("dashboard/home.html", summaries=summaries)


@bp.route("/sites/<site_code>/dashboard")
@login_required
def site(site_code: str) -> str:
    if current_user.is_statistician and not current_user.is_admin:
        abort(403, "Statisticians see the study dashboard's de-identified aggregates, not a site's records.")
    site = RecordRepository(db.session, current_user).site(site_code)
    [dashboard] = site_dashboards(db.session, current_study(), [site])
    return render_template(
        "dashboard/site.html", d=dashboard, chart=cumulative_enrolment_svg(dashboard),
        can_review=can(current_user, Action.REVIEW, site.id),
    )


@bp.route("/dashboard/study")
@login_required
def study() -> str:
    if not (current_user.is_admin or current_user.is_statistician):
        abort(403, "The study dashboard is for data managers and statisticians.")
    study = current_study()
    dashboards = site_dashboards(db.session, study, all_sites(db.session))
    deidentified = not current_user.is_admin
    if deidentified:
        profile = get_profile(DEIDENTIFIED_PROFILE)
        disclosure = Disclosure(profile.disclosure.k if profile.disclosure else 0)
        if profile.site == "pseudonym":
            pseudonyms = Pseudonymiser(load_key(Path(current_app.instance_path)), study.id)
            names = {d.site.id: pseudonyms.site(d.site.code) for d in dashboards}
        else:
            names = {d.site.id: d.site.code for d in dashboards}
        dashboards.sort(key=lambda d: names[d.site.id])  # by code would hint which pseudonym is which
    else:
        disclosure = Disclosure()
        names = {d.site.id: d.site.code for d in dashboards}
    series = [(names[d.site.id], {m: disclosure.value(n) for m, n in d.months.items()}) for d in dashboards]
    note = f"Months with fewer than {disclosure.k} records are not drawn." if disclosure.k else ""
    return render_template(
        "dashboard/study.html", dashboards=dashboards, names=names, disclosure=disclosure,
        links=not deidentified, chart=monthly_enrolment_svg(series, note),
    )
