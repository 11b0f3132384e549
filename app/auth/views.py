"""Log-in (password, then a TOTP code when two-factor is on), log-out and the user's own profile."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from app.api.tokens import issue_token, revoke_tokens
from app.auth import totp
from app.auth.forms import CodeForm, DisableTotpForm, LoginForm, PasswordForm
from app.auth.models import User
from app.auth.passwords import verify_password
from app.auth.services import LoginRefused, check_password, record_login, record_logout, set_password
from app.auth.sessions import start_session_clock
from app.errors import ValidationFailed
from app.extensions import db, limiter

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only redirect to a path on this site, never to another host."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.home")


#: Session key of a log-in waiting for its TOTP code: not authenticated until the code is right.
PENDING = "_2fa_pending"
PENDING_SECONDS = 300


def _finish_login(user: User, target: str | None) -> Response:
    session.clear()  # a fresh session at log-in (no fixation)
    login_user(user)
    session.permanent = True
    start_session_clock(session)
    return redirect(_safe_next(target))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = check_password(db.session, form.username.data or "", form.password.data or "")
        except LoginRefused as exc:
            db.session.commit()  # the failed attempt must be recorded even though we refuse
            form.password.errors = [exc.message]
            return render_template("auth/login.html", form=form), 401
        if user.totp_enabled:
            session.clear()
            session[PENDING] = {"user": user.id, "token": user.session_token, "at": time.time(),
                                "next": request.args.get("next")}
            return redirect(url_for("auth.login_code"))
        record_login(db.session, user, "web")
        return _finish_login(user, request.args.get("next"))
    return render_template("auth/login.html", form=form)


def _pending_user() -> User | None:
    """The user whose password was right, if that was recent and nothing changed since."""
    pending = session.get(PENDING)
    if not isinstance(pending, dict) or time.time() - float(pending.get("at", 0)) > PENDING_SECONDS:
        return None
    user = db.session.get(User, int(pending.get("user", 0)))
    if user is None or not user.active or not user.totp_enabled or user.session_token != pending.get("token"):
        return None
    return user


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
def login_code() -> str | Response | tuple[str, int]:
    """Second log-in step; wrong codes count toward the lock-out like wrong passwords."""
    user = _pending_user()
    if user is None:
        session.pop(PENDING, None)
        flash("Please log in again.", "info")
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            totp.check_login_code(db.session, user, form.code.data or "", current_app.config["SECRET_KEY"])
        except (LoginRefused, ValidationFailed) as exc:
            db.session.commit()  # the failed code must be recorded even though we refuse
            form.code.errors = [exc.errors["code"] if isinstance(exc, ValidationFailed) else exc.message]
            return render_template("auth/login_code.html", form=form), 401
        return _finish_login(user, session[PENDING].get("next"))
    return render_template("auth/login_code.html", form=form)


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


def _profile(status: int = 200, **context: Any) -> tuple[str, int]:
    """The profile page with its password, two-factor and API-token sections."""
    user = current_user._get_current_object()
    context.setdefault("form", PasswordForm())
    key = current_app.config["SECRET_KEY"]
    if totp.may_use_totp(user) or user.totp_enabled:  # a user who changed role can still turn it off
        secret = totp.pending_secret(user, key) if not user.totp_enabled else None
        context.setdefault("code_form", CodeForm())
        context.setdefault("disable_form", DisableTotpForm())
        context["totp_allowed"] = True
        if secret:
            context["totp_secret"] = secret
            context["totp_qr"] = totp.qr_svg(totp.provisioning_uri(user, secret))
    return render_template("auth/profile.html", **context), status


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> tuple[str, int] | Response:
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
        return _profile(422, form=form)
    return _profile()


@bp.route("/profile/2fa/setup", methods=["POST"])
@login_required
def totp_setup() -> tuple[str, int] | Response:
    """Start (or restart) setting up an authenticator app: a new secret, not yet switched on."""
    try:
        totp.begin_enrolment(db.session, current_user._get_current_object(), current_app.config["SECRET_KEY"])
    except ValidationFailed as exc:
        flash(exc.message, "warning")
        return _profile(403 if not totp.may_use_totp(current_user) else 409)
    return redirect(url_for("auth.profile", _anchor="two-factor"))


@bp.route("/profile/2fa/confirm", methods=["POST"])
@login_required
def totp_confirm() -> tuple[str, int] | Response:
    form = CodeForm()
    if form.validate_on_submit():
        try:
            totp.confirm_enrolment(db.session, current_user._get_current_object(), form.code.data or "",
                                   current_app.config["SECRET_KEY"])
        except ValidationFailed as exc:
            form.code.errors = [exc.errors.get("code", exc.message)]
        else:
            flash("Two-factor log-in is on: from now on you will be asked for a code after your password.",
                  "success")
            return redirect(url_for("auth.profile", _anchor="two-factor"))
    return _profile(422, code_form=form)


@bp.route("/profile/2fa/disable", methods=["POST"])
@login_required
def totp_disable() -> tuple[str, int] | Response:
    form = DisableTotpForm()
    if form.validate_on_submit():
        try:
            totp.disable(db.session, current_user._get_current_object(), form.password.data or "",
                         form.code.data or "", current_app.config["SECRET_KEY"])
        except ValidationFailed as exc:
            for name, message in exc.errors.items():
                getattr(form, name).errors = [message]
        else:
            flash("Two-factor log-in is off.", "info")
            return redirect(url_for("auth.profile", _anchor="two-factor"))
    return _profile(422, disable_form=form)


@bp.route("/profile/api-token", methods=["POST"])
@login_required
def api_token() -> tuple[str, int] | Response:
    """Create or regenerate the user's API token (shown on this page once, never again) or revoke it."""
    user = current_user._get_current_object()
    if request.form.get("action") == "revoke":
        revoke_tokens(db.session, user)
        flash("Your API token was revoked; scripts using it no longer work.", "info")
        return redirect(url_for("auth.profile"))
    return _profile(new_token=issue_token(db.session, user))
