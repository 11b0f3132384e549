"""Fixtures: an app on a freshly migrated database (SQLite, or PostgreSQL when DATABASE_URL
points at one), the demo data, and clients logged in as each role.

The schema is built once per session by running the real Alembic migrations (never
`create_all`), then each test gets an empty copy: a copied SQLite file, or TRUNCATE on
PostgreSQL. Under pytest-xdist (`make test` runs one worker per CPU) every worker gets its
own PostgreSQL database, `<DATABASE_URL's database>_<worker id>`, created here and dropped
at the end, so workers never see each other's rows.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g, has_app_context
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, make_url, text

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# Cheap argon2 parameters keep hundreds of log-ins fast; production uses the library defaults.
os.environ.setdefault("CASEBOOK_ARGON2_TIME_COST", "1")
os.environ.setdefault("CASEBOOK_ARGON2_MEMORY_KIB", "1024")
os.environ.setdefault("CASEBOOK_ARGON2_PARALLELISM", "1")

from app import create_app
from app.extensions import db

DATABASE_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = DATABASE_URL.startswith("postgresql")
DEMO_PASSWORD = "demo-password-2026"
#: "gw0", "gw1", ... under pytest-xdist; empty in a plain run.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _base_pg_url() -> str:
    return DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1)


def pg_url() -> str:
    """DATABASE_URL, or under xdist this worker's own database beside it."""
    if not XDIST_WORKER:
        return _base_pg_url()
    url = make_url(_base_pg_url())
    return url.set(database=f"{url.database}_{XDIST_WORKER}").render_as_string(hide_password=False)


def _worker_database(create: bool) -> None:
    """Create (after dropping any leftover) or drop this xdist worker's database, connected
    to DATABASE_URL's own database, which the CI script creates and drops."""
    name = make_url(pg_url()).database
    engine = create_engine(_base_pg_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if create:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


class IsolatedClient(FlaskClient):
    """A test client whose requests never see another client's log-in.

    Tests keep an app context open (to use `db.session`), and Flask reuses it for
    requests, so Flask-Login's cached user in `g` would leak from one client's request
    into the next client's. In production every request has its own context.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if has_app_context():
            g.pop("_login_user", None)
        try:
            return super().open(*args, **kwargs)
        finally:
            if has_app_context():
                g.pop("_login_user", None)


def make_app(url: str, **overrides: object) -> Flask:
    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False, **overrides}
    application = create_app(config)
    application.test_client_class = IsolatedClient
    return application


def _reset_postgres(app: Flask) -> None:
    with app.app_context():
        db.session.execute(text("DROP SCHEMA public CASCADE"))
        db.session.execute(text("CREATE SCHEMA public"))
        db.session.commit()
        db.engine.dispose()


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run the migrations once from empty; return the URL (PG) or file (SQLite) to copy."""
    if ON_POSTGRES:
        if XDIST_WORKER:
            _worker_database(create=True)
        app = make_app(pg_url())
        _reset_postgres(app)
        with app.app_context():
            upgrade()
            db.engine.dispose()
        yield pg_url()
        if XDIST_WORKER:
            _worker_database(create=False)
        return
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    app = make_app(f"sqlite:///{path}")
    with app.app_context():
        upgrade()
        db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.session.remove()
        db.engine.dispose()
    yield str(path)


TABLES_IN_ORDER: list[str] = []


def _tables() -> list[str]:
    if not TABLES_IN_ORDER:
        TABLES_IN_ORDER.extend(t.name for t in db.metadata.sorted_tables)
    return TABLES_IN_ORDER


def _pg_restore(url: str, snapshot: str | None) -> None:
    """Empty every table (TRUNCATE bypasses the audit trail's row triggers), then refill
    from a snapshot schema when one is given."""
    app = make_app(url)
    with app.app_context():
        tables = [t for t in _tables() if t != "audit_head"]
        quoted = ", ".join(f'"{name}"' for name in tables)
        db.session.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        db.session.execute(text("UPDATE audit_head SET last_hash = :g, count = 0"), {"g": "0" * 64})
        if snapshot:
            for name in tables:
                db.session.execute(text(f'INSERT INTO "{name}" SELECT * FROM {snapshot}."{name}"'))
                db.session.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('\"{name}\"', 'id'), COALESCE(MAX(id), 1), "
                    f'MAX(id) IS NOT NULL) FROM "{name}"'
                ))
            db.session.execute(text(
                f"UPDATE audit_head SET last_hash = s.last_hash, count = s.count FROM {snapshot}.audit_head s"
            ))
        db.session.commit()
        db.engine.dispose()


@pytest.fixture(scope="session")
def demo_template(database_template: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The migrated database with the demo loaded once; each demo test starts from a copy."""
    from app.demo.services import load_demo
    from app.study import current_study

    if ON_POSTGRES:
        _pg_restore(database_template, None)
        url = database_template
    else:
        path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
        shutil.copyfile(database_template, path)
        url = f"sqlite:///{path}"
    app = make_app(url)
    with app.app_context():
        load_demo(db.session, current_study())
        db.session.commit()
        if ON_POSTGRES:
            db.session.execute(text("DROP SCHEMA IF EXISTS demo_snapshot CASCADE"))
            db.session.execute(text("CREATE SCHEMA demo_snapshot"))
            for name in _tables():
                db.session.execute(text(f'CREATE TABLE demo_snapshot."{name}" AS TABLE public."{name}"'))
            db.session.commit()
        else:
            db.session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.session.remove()
        db.engine.dispose()
    return "demo_snapshot" if ON_POSTGRES else str(path)


def fresh_database_url(template: str, directory: Path, snapshot: str | None = None) -> str:
    """A migrated database for one test: empty, or a copy of the demo template."""
    if ON_POSTGRES:
        _pg_restore(template, snapshot)
        return template
    target = directory / "casebook.sqlite"
    shutil.copyfile(snapshot or template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def app(request: pytest.FixtureRequest, database_template: str, tmp_path: Path) -> Iterator[Flask]:
    wants_demo = bool({"demo", "as_user"} & set(request.fixturenames))
    snapshot = request.getfixturevalue("demo_template") if wants_demo else None
    application = make_app(fresh_database_url(database_template, tmp_path, snapshot))
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def demo(app: Flask) -> Flask:
    """The app on a database holding the demo sites, users and the three published cases."""
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def login(client: FlaskClient, username: str, password: str = DEMO_PASSWORD) -> None:
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 302, f"log-in as {username} failed: {response.status_code}"


@pytest.fixture
def as_user(demo: Flask):
    """`as_user('coordinator')` gives a test client logged in as that demo user."""

    def _client(username: str) -> FlaskClient:
        c = demo.test_client()
        login(c, username)
        return c

    return _client


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token in page"
    return match.group(1)
