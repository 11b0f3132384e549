"""What every web request shares: the transaction boundary, error pages, headers, log-in.

One commit or rollback per request happens here, never in services: a response below
400 commits what the services flushed; anything else rolls back, so a refused save
leaves nothing half-written.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask, Response, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import BadRequest, HTTPException, NotFound

from app.audit.services import AuditEntry, append
from app.auth.models import Site, User
from app.auth.sessions import expiry_reason
from app.errors import ConflictError, NotFoundError, PermissionDenied
from app.extensions import db, login_manager

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


#: The user and their site roles (every page checks them) in one statement, built once.
_LOAD_USER = select(User).options(joinedload(User.memberships)).where(User.id == bindparam("id"))


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """Session ids are 'user id:session token'; a changed token ends old sessions everywhere."""
    user_id, _, token = session_id.partition(":")
    if not user_id.isdigit():
        return None
    user = db.session.execute(_LOAD_USER, {"id": int(user_id)}).unique().scalar_one_or_none()
    if user is None or not user.active or user.session_token != token:
        return None
    return user


def _finish_transaction(response: Response) -> Response:
    if response.status_code < 400:
        db.session.commit()
    else:
        db.session.rollback()
    return response


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if current_user.is_authenticated:
        response.headers["Cache-Control"] = "no-store"
    return response


SESSION_ENDED = {
    "idle": "You were logged out after {minutes} minutes without activity. Nothing unsaved was kept.",
    "absolute": "Your session reached its {hours}-hour limit; please log in again.",
}


def _enforce_session_lifetime() -> Response | None:
    """End a logged-in web session that was idle too long or is too old (API tokens are exempt)."""
    if request.blueprint == "api" or request.endpoint == "static" or not current_user.is_authenticated:
        return None
    config = current_app.config
    reason = expiry_reason(session, config["SESSION_IDLE_SECONDS"], config["SESSION_ABSOLUTE_SECONDS"])
    if reason is None:
        return None
    user = current_user._get_current_object()
    append(db.session, [AuditEntry(action="session_expired", user_id=user.id, username=user.username,
                                   reason=reason)])
    db.session.commit()
    logout_user()
    session.clear()
    flash(SESSION_ENDED[reason].format(minutes=config["SESSION_IDLE_SECONDS"] // 60,
                                       hours=config["SESSION_ABSOLUTE_SECONDS"] // 3600), "warning")
    target = request.full_path if request.method == "GET" else None
    return redirect(url_for("auth.login", next=target))


def _refuse_nul_in_address() -> None:
    """PostgreSQL cannot hold a NUL character in text, so looking up a record ID or a filter
    that has one failed as a database error; no page, record or filter value has one."""
    if "\x00" in request.path:
        raise NotFound()
    if any("\x00" in key or "\x00" in value for key, value in request.args.items(multi=True)):
        raise BadRequest("The address contains a NUL character (\\0), which no filter or value may hold.")


def init_app(app: Flask) -> None:
    app.before_request(_refuse_nul_in_address)
    app.before_request(_enforce_session_lifetime)
    # Flask runs after-request functions last registered first: the headers are set before
    # the commit, while the user loaded for this request is still fresh (after the commit
    # reading `current_user` would load the user and their memberships again).
    app.after_request(_finish_transaction)
    app.after_request(_security_headers)

    @app.teardown_request
    def _rollback_on_error(exc: BaseException | None) -> None:
        if exc is not None:
            db.session.rollback()

    @app.errorhandler(NotFoundError)
    def _not_found(exc: NotFoundError) -> tuple[str, int]:
        return render_template("error.html", title="Not found", message=exc.message), 404

    @app.errorhandler(PermissionDenied)
    def _forbidden(exc: PermissionDenied) -> tuple[str, int]:
        return render_template("error.html", title="Not allowed", message=exc.message), 403

    @app.errorhandler(ConflictError)
    def _conflict(exc: ConflictError) -> tuple[str, int]:
        return render_template("error.html", title="Changed by someone else", message=exc.message), 409

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Response:
        flash("Your form had expired, so nothing was saved. Please try again.", "warning")
        return redirect(request.referrer or url_for("dashboard.home"))

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> tuple[str, int]:
        db.session.rollback()
        # The page is drawn as for a visitor: looking the user up again would need the database.
        g._login_user = login_manager.anonymous_user()
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else "unknown")
        return render_template(
            "error.html", title="Database unavailable",
            message="The database cannot be reached just now. Nothing was saved; please try again in a minute.",
        ), 503

    @app.errorhandler(429)
    def _too_many(exc: HTTPException) -> tuple[str, int]:
        return render_template(
            "error.html", title="Too many requests",
            message="Too many attempts from your network address. Please wait a minute and try again.",
        ), 429

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[str, int]:
        return render_template("error.html", title=exc.name, message=exc.description), exc.code or 500

    @app.template_filter("sitetime")
    def _sitetime(value: datetime | None, site: Site | None = None) -> str:
        """A UTC time shown in the site's zone, with the zone named (ICH E6: unambiguous times)."""
        if value is None:
            return ""
        zone = ZoneInfo(site.timezone) if site is not None and site.timezone else UTC
        local = value.astimezone(zone)
        return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"

    @app.context_processor
    def _globals() -> dict[str, object]:
        from app.study import current_study

        return {"study": current_study(), "session_idle_seconds": current_app.config["SESSION_IDLE_SECONDS"],
                "session_warning_seconds": current_app.config["SESSION_WARNING_SECONDS"]}
