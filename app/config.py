"""Configuration read from the environment, with safe defaults for the embedded setup."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from app.ratelimit import STORAGE_URI as DATABASE_RATE_LIMITS

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _secret_key(instance_path: Path) -> str:
    """SECRET_KEY from the environment, else a random key kept in the instance folder.

    Kept in a file (not generated per process) so that several worker processes share it
    and sessions survive a restart.
    """
    env = os.environ.get("SECRET_KEY")
    if env:
        return env
    return secret_file(instance_path / "secret_key")


def secret_file(path: Path) -> str:
    """The secret in `path`, created once (random, readable by its owner only) if missing.

    Created with O_EXCL: gunicorn's workers start together, and only one of them may write
    the secret; every process then reads the same one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def build_config(instance_path: Path) -> dict[str, object]:
    """Settings for `create_app`; every value can be overridden from the environment."""
    default_db = f"sqlite:///{instance_path / 'casebook.sqlite'}"
    database_url = os.environ.get("DATABASE_URL", default_db)
    if database_url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; plain URLs from hosting platforms name psycopg2.
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        # hide_parameters keeps values (possibly PHI) out of database error messages and logs.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "hide_parameters": True},
        "STUDY_DIR": os.environ.get("CASEBOOK_STUDY_DIR", str(PROJECT_ROOT / "forms")),
        "EXPORTS_DIR": os.environ.get("CASEBOOK_EXPORTS_DIR", str(PROJECT_ROOT / "exports")),
        "BOOTSTRAP_SERVE_LOCAL": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": os.environ.get("CASEBOOK_HTTPS", "") == "1",
        "REMEMBER_COOKIE_DURATION": 0,
        "PERMANENT_SESSION_LIFETIME": 12 * 3600,
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
        "WTF_CSRF_TIME_LIMIT": 12 * 3600,
        "RECORDS_PER_PAGE": 50,
        # The synthetic data page (admins): on with the built-in demo database (`make run`), off when
        # DATABASE_URL names a deployment's, where synthetic records would mix with real ones, unless set.
        "SYNTHETIC_WEB": os.environ.get("CASEBOOK_SYNTHETIC_WEB", "0" if "DATABASE_URL" in os.environ else "1") == "1",
        # Counted in the app's own database, so every worker and host shares one count
        # (app/ratelimit.py); redis://host:6379 works too.
        "RATELIMIT_STORAGE_URI": os.environ.get("RATELIMIT_STORAGE_URI", DATABASE_RATE_LIMITS),
        "RATELIMIT_HEADERS_ENABLED": True,
        "LOGIN_RATE_LIMIT": os.environ.get("CASEBOOK_LOGIN_RATE_LIMIT", "20 per minute"),
        "API_RATE_LIMIT": os.environ.get("CASEBOOK_API_RATE_LIMIT", "600 per minute"),
        # Reverse proxies in front of the app that append to X-Forwarded-For (0: none, the
        # client connects directly); their X-Forwarded-For/-Proto/-Host are trusted that many hops deep.
        "TRUSTED_PROXIES": int(os.environ.get("CASEBOOK_TRUSTED_PROXIES", "0")),
        # OWASP ASVS / REDCap defaults: 30 minutes idle, 12 hours at most.
        "SESSION_IDLE_SECONDS": int(os.environ.get("CASEBOOK_SESSION_IDLE_SECONDS", 30 * 60)),
        "SESSION_ABSOLUTE_SECONDS": int(os.environ.get("CASEBOOK_SESSION_ABSOLUTE_SECONDS", 12 * 3600)),
        "SESSION_WARNING_SECONDS": 120,
    }
