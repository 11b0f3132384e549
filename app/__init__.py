"""Casebook: multi-site research data capture with REDCap-style case report forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import models  # noqa: F401 - registers every table on the metadata
from app.config import build_config
from app.extensions import bootstrap, csrf, db, limiter, login_manager, migrate
from app.study import load_study

__version__ = "0.1.0"


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app: config, extensions, the validated study definition, blueprints.

    The study definition is loaded here so that a broken definition stops the app from
    starting (StudyDefinitionError names the file, line and field). Migrations are never
    run here; `flask db upgrade` does that.
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(build_config(Path(app.instance_path)))
    if overrides:
        app.config.update(overrides)
    if hops := app.config["TRUSTED_PROXIES"]:
        # Behind nginx every request comes from the proxy: the limiter must count the client's
        # address, and HTTPS (Secure cookies, HSTS) is what the proxy was asked for.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    bootstrap.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.session_protection = "strong"

    app.extensions["casebook.study"] = load_study(app.config["STUDY_DIR"])

    from app import web
    from app.analysis.views import bp as analysis_bp
    from app.api.views import bp as api_bp
    from app.audit.views import bp as audit_bp
    from app.auth.views import bp as auth_bp
    from app.cli import register_cli
    from app.dashboard.views import bp as dashboard_bp
    from app.dictionary.views import bp as dictionary_bp
    from app.exports.views import bp as exports_bp
    from app.imports.views import bp as imports_bp
    from app.records.views import bp as records_bp
    from app.review.views import bp as review_bp
    from app.synthetic.views import bp as synthetic_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(records_bp)
    app.register_blueprint(review_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)  # token-authenticated, never by cookie: nothing for CSRF to protect
    app.register_blueprint(dictionary_bp)
    app.register_blueprint(exports_bp)
    app.register_blueprint(analysis_bp)
    app.register_blueprint(imports_bp)
    app.register_blueprint(synthetic_bp)
    web.init_app(app)
    register_cli(app)
    return app
