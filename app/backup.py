"""Online backup and restore of the whole database.

SQLite uses its online backup API (a consistent copy while the app keeps serving);
PostgreSQL uses pg_dump/pg_restore in custom format. Credentials are passed to the
PostgreSQL tools through their environment, never on the command line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import Engine, make_url

from app.errors import CasebookError


class BackupError(CasebookError):
    pass


def _pg_environment(engine: Engine) -> dict[str, str]:
    url = engine.url
    env = dict(os.environ)
    for key, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                       ("PGPASSWORD", url.password), ("PGDATABASE", url.database)):
        if value is not None:
            env[key] = str(value)
    return env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (Debian package postgresql-client).")
    return found


def _run(args: list[str], engine: Engine) -> None:
    result = subprocess.run(args, env=_pg_environment(engine), capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {result.stderr.strip().splitlines()[-1:] or ['no output']}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backup(engine: Engine, target: Path) -> str:
    """Write a consistent copy of the database to `target`; return its SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if engine.dialect.name == "sqlite":
        with sqlite3.connect(str(target)) as destination:
            raw = engine.raw_connection()
            try:
                raw.driver_connection.backup(destination)
            finally:
                raw.close()
        destination.close()
    elif engine.dialect.name == "postgresql":
        _run([_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={target}"], engine)
    else:
        raise BackupError(f"Backups of {engine.dialect.name} databases are not supported.")
    return sha256_of(target)


def restore(engine: Engine, source: Path) -> str:
    """Replace the database's contents with the backup at `source`; return its SHA-256."""
    if not source.is_file():
        raise BackupError(f"No backup file at {source}.")
    digest = sha256_of(source)
    engine.dispose()
    if engine.dialect.name == "sqlite":
        try:
            with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as backup_db:
                backup_db.execute("SELECT count(*) FROM alembic_version").fetchone()
                live = sqlite3.connect(make_url(str(engine.url)).database or "")
                try:
                    backup_db.backup(live)
                finally:
                    live.close()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{source} is not a Casebook SQLite backup.") from exc
    elif engine.dialect.name == "postgresql":
        _run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
              f"--dbname={engine.url.database}", str(source)], engine)
    else:
        raise BackupError(f"Restoring {engine.dialect.name} databases is not supported.")
    return digest
