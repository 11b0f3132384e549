"""`POST /api/`: the REDCap-compatible endpoint; `/api/help` and `/api/openapi.json` describe it.

The endpoint authenticates by token only (never by the session cookie), which is why the
blueprint is exempt from CSRF protection. Every refusal is turned into REDCap's error
shape here, with a 4xx status so `app.web` rolls the request back.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.api.handlers import CONTENTS, Call, dispatch
from app.api.openapi import openapi
from app.api.params import ApiError, Format, Params
from app.api.render import error_response
from app.api.tokens import active_token, authenticate
from app.errors import CasebookError, NotFoundError, PermissionDenied
from app.extensions import db, limiter
from app.study import current_study

bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger(__name__)


def _error_format() -> Format:
    """The format the client reads errors in; JSON when the request itself could not be read."""
    try:
        return Params(request.form).return_format()
    except (HTTPException, ApiError):
        return "json"


@bp.route("/", methods=["POST"])
@limiter.limit(lambda: current_app.config["API_RATE_LIMIT"])
def endpoint() -> Response:
    params = Params(request.form)
    user = authenticate(db.session, params.text("token"))
    return dispatch(Call(db.session, current_study(), user, params))


@bp.route("/", methods=["GET"])
def index() -> Response:
    return redirect(url_for("api.help_page"))


@bp.route("/help")
@login_required
def help_page() -> str:
    return render_template("api/help.html", contents=CONTENTS.values(),
                           endpoint=url_for("api.endpoint", _external=True),
                           has_token=active_token(db.session, current_user) is not None)


@bp.route("/openapi.json")
def openapi_json() -> Response:
    return jsonify(openapi(url_for("dashboard.home", _external=True).rstrip("/")))


@bp.app_context_processor
def _token_status() -> dict[str, object]:
    """`api_token()` for templates (the profile page): the user's live token, dates only."""

    def api_token() -> object:
        return active_token(db.session, current_user) if current_user.is_authenticated else None

    return {"api_token": api_token}


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.message, exc.status, _error_format())


@bp.errorhandler(CasebookError)
def _domain_error(exc: CasebookError) -> Response:
    status = 403 if isinstance(exc, PermissionDenied) else 404 if isinstance(exc, NotFoundError) else 400
    return error_response(exc.message, status, _error_format())


@bp.errorhandler(OperationalError)
def _database_down(exc: OperationalError) -> Response:
    db.session.rollback()
    log.error("API database error: %s", type(exc.orig).__name__ if exc.orig else "unknown")
    return error_response("The database cannot be reached just now; nothing was changed. Please try again.", 503,
                          _error_format())


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response | HTTPException:
    """REDCap's error shape for the endpoint (e.g. a payload over the size limit); pages keep theirs."""
    if request.method != "POST":
        return exc
    return error_response(exc.description or exc.name, exc.code or 400, _error_format())
