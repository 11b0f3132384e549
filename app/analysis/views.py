"""The case-series analysis page and its plots as downloads. Thin: parse, call the service, render."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, render_template
from flask.blueprints import BlueprintSetupState
from flask_login import current_user, login_required

from app.analysis.fields import check_definition
from app.analysis.services import Analysis, page_analysis
from app.errors import NotFoundError
from app.exports.pseudonyms import Pseudonymiser, load_key
from app.exports.services import all_profiles
from app.extensions import db
from app.study import current_study

bp = Blueprint("analysis", __name__, url_prefix="/analysis")
#: A downloaded SVG opened in the browser is its own document: it may use its inline styles, nothing else.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


@bp.record_once
def _check_definition(state: BlueprintSetupState) -> None:
    check_definition(state.app.extensions["casebook.study"])


def _analysis() -> Analysis:
    study = current_study()
    pseudonyms = Pseudonymiser(load_key(Path(current_app.instance_path)), study.id)
    return page_analysis(db.session, study, current_user, all_profiles().values(), pseudonyms)


@bp.route("")
@login_required
def page() -> str:
    return render_template("analysis/page.html", analysis=_analysis(), title="Case-series analysis")


@bp.route("/summary")
@login_required
def summary() -> str:
    """The key figures alone, for the study dashboard to load after its own page."""
    return render_template("analysis/summary.html", analysis=_analysis())


@bp.route("/plots/<name>.<fmt>")
@login_required
def plot(name: str, fmt: str) -> Response:
    if fmt not in ("svg", "png"):
        raise NotFoundError("Plots download as .svg or .png.")
    chart = _analysis().chart(name)
    if fmt == "svg":
        response = Response('<?xml version="1.0" encoding="utf-8"?>\n' + chart.svg(), mimetype="image/svg+xml")
        response.headers["Content-Security-Policy"] = SVG_POLICY
    else:
        response = Response(chart.png(), mimetype="image/png")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response
