"""The databases a run measures: a fresh, migrated, seeded database per size, and raw access to it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, g, has_app_context
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from app import create_app
from app.api.tokens import issue_token
from app.audit.models import AuditEvent
from app.auth.models import StudyRole, User
from app.auth.services import create_user
from app.extensions import db
from app.records.models import FormInstance
from app.runtime import settle_loaded_app
from app.study import current_study
from app.synthetic.bulk import seed_synthetic

SITES = 4
SEED = 2026
BENCH_USER = "bench_admin"
BENCH_PASSWORD = "bench-admin-password-2026"  # noqa: S105 - a throw-away benchmark database


class BenchSetupError(Exception):
    """The run cannot start (e.g. DATABASE_URL does not name a benchmark database)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One database engine to measure: `kind` is "sqlite" or "postgresql"."""

    kind: str
    url: str

    @property
    def label(self) -> str:
        return "SQLite" if self.kind == "sqlite" else "PostgreSQL"


def targets(databases: str, database_url: str, workdir: Path) -> list[Target]:
    """SQLite in `workdir`, and PostgreSQL at DATABASE_URL (whose name must contain "bench").

    The run drops and recreates the PostgreSQL schema for every size, so it refuses any
    database not named for benchmarks: a mistyped URL must not wipe real data.
    """
    chosen = []
    for kind in (d.strip().lower() for d in databases.split(",") if d.strip()):
        if kind == "sqlite":
            chosen.append(Target("sqlite", f"sqlite:///{workdir / 'bench.sqlite'}"))
        elif kind == "postgresql":
            url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
            if not url.startswith("postgresql"):
                raise BenchSetupError("PostgreSQL needs DATABASE_URL=postgresql+psycopg://user:pass@host/NAME_bench")
            if "bench" not in (make_url(url).database or ""):
                raise BenchSetupError(f"Refusing to wipe {make_url(url).database!r}: the benchmark drops its schema, "
                                      "so the database name must contain 'bench' (e.g. casebook_bench).")
            chosen.append(Target("postgresql", url))
        else:
            raise BenchSetupError(f"Unknown database {kind!r}: use sqlite and/or postgresql.")
    return chosen


def reset(target: Target) -> None:
    """An empty database: a new SQLite file, or a dropped and recreated PostgreSQL schema."""
    if target.kind == "sqlite":
        path = Path(make_url(target.url).database or "")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    engine = create_engine(target.url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@dataclass(frozen=True, slots=True)
class Seeded:
    """A database at one size, ready to measure."""

    target: Target
    app: Flask
    records: int
    seconds: float
    form_rows: int
    audit_rows: int
    token: str


class FreshUserClient(FlaskClient):
    """A test client whose every request loads its user, as a real request does.

    The benchmark keeps an app context open, and Flask reuses it for test requests, so
    Flask-Login's user cached in `g` would otherwise skip the user lookup (and leak one
    client's log-in into another's).
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if has_app_context():
            g.pop("_login_user", None)
        try:
            return super().open(*args, **kwargs)
        finally:
            if has_app_context():
                g.pop("_login_user", None)


def make_app(target: Target) -> Flask:
    """The app on `target`. CSRF is off for the in-process test client only (it cannot read tokens
    cheaply); the gunicorn benchmark runs the real configuration, CSRF included."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": target.url, "WTF_CSRF_ENABLED": False})
    app.test_client_class = FreshUserClient
    return app


def seed(target: Target, records: int) -> Seeded:
    """Migrate, add the benchmark admin and an API token, seed `records` synthetic records, analyse."""
    reset(target)
    app = make_app(target)
    with app.app_context():
        upgrade()
        admin = create_user(db.session, BENCH_USER, "Bench Admin", BENCH_PASSWORD, study_role=StudyRole.ADMIN)
        token = issue_token(db.session, admin, source="cli")
        db.session.commit()
        started = time.perf_counter()
        for _ in seed_synthetic(db.session, current_study(), sites=SITES, records=records, seed=SEED,
                                workers=os.cpu_count() or 1, study_dir=app.config["STUDY_DIR"]):
            db.session.commit()
        seconds = time.perf_counter() - started
        form_rows = db.session.scalar(select(func.count(FormInstance.id))) or 0
        audit_rows = db.session.scalar(select(func.count(AuditEvent.id))) or 0
        db.session.remove()
    analyse(target)
    # As each gunicorn worker does once it has loaded the app (gunicorn.conf.py).
    settle_loaded_app()
    return Seeded(target, app, records, seconds, form_rows, audit_rows, token)


def analyse(target: Target) -> None:
    """Planner statistics (and PostgreSQL's visibility map), as autovacuum would have made them on a live server."""
    engine = create_engine(target.url, poolclass=NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE" if target.kind == "sqlite" else "VACUUM ANALYZE"))
    engine.dispose()


def bench_admin() -> User:
    user = db.session.scalar(select(User).where(User.username == BENCH_USER))
    assert user is not None
    return user


class Raw:
    """The baseline: plain SQL on a DBAPI connection (sqlite3 or psycopg), no ORM, no app."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.engine: Engine = create_engine(target.url, poolclass=NullPool)

    def sql(self, statement: str) -> str:
        """Statements are written with `?` (sqlite3); psycopg wants `%s`. `?j` marks a JSON parameter."""
        if self.target.kind == "postgresql":
            return statement.replace("?j", "%s::jsonb").replace("?", "%s")
        return statement.replace("?j", "?")

    @contextmanager
    def connection(self) -> Iterator[Any]:
        connection = self.engine.raw_connection()
        try:
            yield connection
        finally:
            connection.close()

    def timestamp(self, value: Any) -> Any:
        """A UTC datetime as the app stores it: text on SQLite, timestamptz on PostgreSQL."""
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.target.kind == "sqlite" else value

    def dispose(self) -> None:
        self.engine.dispose()
