"""Log-in, log-out and the user's own profile."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from app.api.tokens import issue_token, revoke_tokens
from app.auth.forms import LoginForm, PasswordForm
from app.auth.passwords import verify_password
from app.auth.services import LoginRefused, authenticate, record_logout, set_password
from app.auth.sessions import start_session_clock
from app.errors import ValidationFailed
from app.extensions import db, limiter

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only redirect to a path on this site, never to another host."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.home")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = authenticate(db.session, form.username.data or "", form.password.data or "")
        except LoginRefused as exc:
            db.session.commit()  # the failed attempt must be recorded even though we refuse
            form.password.errors = [exc.message]
            return render_template("auth/login.html", form=form), 401
        session.clear()  # a fresh session at log-in (no fixation)
        login_user(user)
        session.permanent = True
        start_session_clock(session)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Response:
    record_logout(db.session, current_user._get_current_object())
    logout_user()
    session.clear()
    flash("You have logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/session/keepalive", methods=["POST"])
@login_required
def keepalive() -> Response:
    """'Stay logged in' from the idle-timeout warning: the request itself resets the clock."""
    return jsonify(idle_seconds=current_app.config["SESSION_IDLE_SECONDS"])


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> str | Response | tuple[str, int]:
    form = PasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        if not verify_password(user.password_hash, form.current.data or ""):
            form.current.errors = ["This is not your current password."]
        else:
            try:
                set_password(db.session, user, form.password.data or "")
            except ValidationFailed as exc:
                form.password.errors = [exc.errors["password"]]
            else:
                login_user(user)  # keep this session; every other one has ended
                flash("Password changed. You have been logged out everywhere else.", "success")
                return redirect(url_for("auth.profile"))
        return render_template("auth/profile.html", form=form), 422
    return render_template("auth/profile.html", form=form)


@bp.route("/profile/api-token", methods=["POST"])
@login_required
def api_token() -> str | Response:
    """Create or regenerate the user's API token (shown on this page once, never again) or revoke it."""
    user = current_user._get_current_object()
    if request.form.get("action") == "revoke":
        revoke_tokens(db.session, user)
        flash("Your API token was revoked; scripts using it no longer work.", "info")
        return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=PasswordForm(), new_token=issue_token(db.session, user))
