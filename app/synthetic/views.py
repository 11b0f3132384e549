"""The synthetic data page (admins): the form of `flask seed-synthetic`, run as a background job.

Synthetic records beside real ones would end up in pooled exports and the analysis, so the
page exists only where the configuration says so (`SYNTHETIC_WEB`, from CASEBOOK_SYNTHETIC_WEB:
on for the built-in demo database, off for a deployment's database unless set); elsewhere
every route of it is a 404.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, Field, IntegerField
from wtforms.validators import InputRequired, NumberRange, ValidationError

from app.errors import PermissionDenied
from app.extensions import db
from app.jobs.views import add_job_routes
from app.synthetic.bulk import real_record_count
from app.synthetic.jobs import MAX_RECORDS, MAX_SITES, SYNTHETIC_JOBS, start_seeding

bp = Blueprint("synthetic", __name__, url_prefix="/admin/synthetic")


class SyntheticForm(FlaskForm):
    sites = IntegerField("Synthetic sites", default=2, validators=[
        InputRequired("Give the number of sites."),
        NumberRange(1, MAX_SITES, f"A whole number from 1 to {MAX_SITES}.")])
    records = IntegerField("Records", default=1000, validators=[
        InputRequired("Give the number of records."),
        NumberRange(1, MAX_RECORDS, f"A whole number from 1 to {MAX_RECORDS:,}.")],
        description="Spread evenly over the sites.")
    seed = IntegerField("Seed", default=0, validators=[
        InputRequired("Give a seed."), NumberRange(0, 2**31 - 1, "A whole number from 0 to 2,147,483,647.")],
        description="The same seed gives the same cases.")
    confirm = BooleanField("Add them although this database holds real records")

    #: Records at non-synthetic sites, set by the view: then `confirm` must be ticked.
    real_records = 0

    def validate_confirm(self, field: Field) -> None:
        if self.real_records and not field.data:
            raise ValidationError(f"This database holds {self.real_records:,} real records: pooled exports and the "
                                  "analysis would include the synthetic ones too. Tick the box to add them anyway.")

    def validate(self, extra_validators: Mapping[str, Sequence[Any]] | None = None) -> bool:
        """Validate, keeping one message per field (a word typed as a number would otherwise get two)."""
        valid = super().validate(extra_validators)
        for field in self:
            field.errors = field.errors[:1]
        return valid


@bp.before_request
def _enabled() -> None:
    if not current_app.config.get("SYNTHETIC_WEB"):
        abort(404)


@bp.before_request
@login_required
def _admins_only() -> None:
    if not current_user.is_admin:
        raise PermissionDenied("Only an admin adds synthetic data.")


@bp.route("", methods=["GET", "POST"])
def page() -> tuple[str, int] | Response:
    form = SyntheticForm()
    form.real_records = real_record_count(db.session)
    if not form.validate_on_submit():
        return render_template("synthetic/page.html", form=form), 422 if request.method == "POST" else 200
    job_id = start_seeding(current_app._get_current_object(), current_user._get_current_object(),
                           sites=form.sites.data, records=form.records.data, seed=form.seed.data)
    return redirect(url_for("synthetic.job", job_id=job_id), code=303)


add_job_routes(bp, SYNTHETIC_JOBS, "synthetic/job.html")
