"""Faults: the server killed mid-import, the database going away, and many users saving at once.

(a) A real server process is SIGKILLed while it writes a large API import: the database
    stays consistent (the audit chain verifies) and the import is entirely absent.
(b) The database becomes unreachable (PostgreSQL: a TCP proxy this test controls is cut;
    SQLite: the database file disappears): pages answer a plain 503 page and the API a
    503 in REDCap's error shape, with no stack trace or data; when the database returns
    the app serves again by itself.
(c) A bounded load test on loopback: concurrent users saving their forms; no request
    fails and no update is lost (one audit row per successful save).
Run on SQLite, and on PostgreSQL with DATABASE_URL set. Nothing here asserts timing.
"""

from __future__ import annotations

import json
import os
import re
import select as selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app.audit.models import AuditEvent
from app.audit.services import verify_chain
from app.auth.models import Site, User
from app.extensions import db
from app.records.models import FormInstance, Record
from app.records.services import Actor, Submission, create_records, save_form
from app.study import current_study
from tests.browser_support import live_server
from tests.conftest import DEMO_PASSWORD, ON_POSTGRES, csrf_token, make_app
from tests.test_api import token

ROOT = Path(__file__).resolve().parent.parent
#: Serve the app in a child process (so it can be SIGKILLed) and print the port it listens on.
SERVER = """
import json, sys
from werkzeug.serving import make_server
from app import create_app
app = create_app(json.loads(sys.argv[1]))
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""
UNLIMITED = {"API_RATE_LIMIT": "100000 per minute", "LOGIN_RATE_LIMIT": "100000 per minute"}
IMPORT_RECORDS = 3000


@contextmanager
def server_process(url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = {"SQLALCHEMY_DATABASE_URI": url, **UNLIMITED}
    process = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(config)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        ready, _, _ = selectors.select([process.stdout], [], [], 60)
        assert ready, "the server process did not start"
        yield f"http://127.0.0.1:{int(process.stdout.readline())}", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()


def import_rows(count: int) -> str:
    return json.dumps([{"record_id": f"new-{n}", "sex": str(1 + n % 2), "ga_weeks": str(30 + n % 10)}
                       for n in range(count)])


def writing_now(url: str) -> bool:
    """Whether another connection holds an uncommitted write on the database right now."""
    if url.startswith("sqlite"):
        probe = sqlite3.connect(make_url(url).database, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with db.engine.connect() as connection:
        return bool(connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL")))


def counts() -> tuple[int, int, int, int]:
    """Records, forms, audit rows, and the record numbers handed out (an import moves all four)."""
    db.session.expire_all()
    return (db.session.scalar(select(func.count()).select_from(Record)),
            db.session.scalar(select(func.count()).select_from(FormInstance)),
            db.session.scalar(select(func.count()).select_from(AuditEvent)),
            db.session.scalar(select(func.sum(Site.last_record_number))))


def test_sigkill_during_a_large_import_leaves_nothing_of_it(demo):
    url = demo.config["SQLALCHEMY_DATABASE_URI"]
    api_token = token("coordinator")
    before = counts()
    db.session.remove()
    answer: dict[str, Any] = {}

    with server_process(url) as (base, process):
        def send() -> None:
            try:
                answer["response"] = requests.post(f"{base}/api/", timeout=300, data={
                    "token": api_token, "content": "record", "format": "json", "forceAutoNumber": "true",
                    "data": import_rows(IMPORT_RECORDS)})
            except requests.ConnectionError as exc:
                answer["error"] = exc

        client = threading.Thread(target=send)
        client.start()
        deadline = time.monotonic() + 120
        while not writing_now(url):
            assert client.is_alive() and time.monotonic() < deadline, "the import finished before it was caught"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        client.join(timeout=60)

    assert "response" not in answer, "the server answered: the kill came after the import"
    assert counts() == before
    report = verify_chain(db.session)
    assert report.ok, report.problem
    # The database is usable: the same import, without a kill, goes in whole.
    with server_process(url) as (base, _):
        done = requests.post(f"{base}/api/", timeout=300, data={
            "token": api_token, "content": "record", "format": "json", "forceAutoNumber": "true",
            "data": import_rows(50)})
    assert done.status_code == 200 and done.json() == {"count": 50}
    assert counts()[0] == before[0] + 50
    assert verify_chain(db.session).ok


# --- (b) the database goes away ------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones
    refused) and restore, standing in for a database server that goes away and comes back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for s in self.sockets:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@contextmanager
def database_that_can_vanish(url: str, tmp_path: Path) -> Iterator[tuple[str, Any, Any]]:
    """(url for the app, cut(), restore()) for the test's database."""
    if url.startswith("postgresql"):
        real = make_url(url)
        proxy = CuttableProxy((real.host or "127.0.0.1", real.port or 5432))
        try:
            yield real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), \
                proxy.cut, proxy.restore
        finally:
            proxy.close()
        return
    # SQLite: the database file (with its WAL) moves away, as a detached disk would.
    path = Path(make_url(url).database)
    hidden = tmp_path / "elsewhere"
    hidden.mkdir()
    names = [path.name, path.name + "-wal", path.name + "-shm"]

    def cut() -> None:
        for name in names:
            if (path.parent / name).exists():
                (path.parent / name).rename(hidden / name)

    def restore() -> None:
        for name in names:
            if (hidden / name).exists():
                (hidden / name).rename(path.parent / name)

    yield f"sqlite:///file:{path}?mode=rw&uri=true", cut, restore


def assert_plain_503(response: requests.Response, *secrets: str) -> None:
    assert response.status_code == 503
    body = response.text
    for leak in ("Traceback", "sqlalchemy", "psycopg", "sqlite3", "OperationalError", *secrets):
        assert leak not in body, f"{leak!r} shown to the user"


def test_database_outage_gives_503_and_the_app_recovers_by_itself(demo, tmp_path):
    url = demo.config["SQLALCHEMY_DATABASE_URI"]
    api_token = token("coordinator")
    db.session.remove()
    db.engine.dispose()
    with database_that_can_vanish(url, tmp_path) as (app_url, cut, restore):
        # SQLite keeps an open file usable after it moves, so each request opens its own
        # connection there; PostgreSQL keeps the production pool (with pre-ping).
        options = {} if ON_POSTGRES else {"SQLALCHEMY_ENGINE_OPTIONS": {"poolclass": _null_pool()}}
        app = make_app(app_url, **UNLIMITED, **options)
        with live_server(app) as base:
            browser = requests.Session()
            browser.post(f"{base}/login", data={"username": "coordinator", "password": DEMO_PASSWORD})
            assert browser.get(f"{base}/records/KMU-0001").status_code == 200
            api = {"token": api_token, "content": "record", "format": "json", "records": "KMU-0001"}
            assert requests.post(f"{base}/api/", data=api).status_code == 200

            cut()
            page = browser.get(f"{base}/records/KMU-0001")
            assert_plain_503(page, "KMU-0001", api_token)
            assert "Database unavailable" in page.text and "Nothing was saved" in page.text
            anonymous = requests.get(f"{base}/login")
            assert anonymous.status_code in (200, 503)  # the log-in form itself needs no database
            answer = requests.post(f"{base}/api/", data=api)
            assert_plain_503(answer, "KMU-0001", api_token)
            assert answer.json() == {"error": "The database cannot be reached just now; nothing was changed. "
                                              "Please try again."}

            restore()
            assert browser.get(f"{base}/records/KMU-0001").status_code == 200  # same session, no restart
            assert requests.post(f"{base}/api/", data=api).json()[0]["record_id"] == "KMU-0001"
        with app.app_context():
            db.engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


# --- (c) bounded load ---------------------------------------------------------------------

LOAD_CLIENTS = 20
LOAD_SECONDS = float(os.environ.get("CASEBOOK_LOAD_SECONDS", "8"))


def test_concurrent_saves_all_succeed_and_none_is_lost(demo):
    study = current_study()
    field = next(f for f in study.iter_fields() if f.type == "notes" and not f.identifier and f.branching is None)
    instrument = study.instrument(field.instrument)
    coordinator = db.session.scalar(select(User).where(User.username == "coordinator"))
    site = db.session.scalar(select(Site).where(Site.code == "KMU"))
    actor = Actor(coordinator)
    records = create_records(db.session, actor, [site] * LOAD_CLIENTS)
    for rec in records:  # each user's form exists, so every timed save is exactly one field update
        save_form(db.session, study, actor, rec, instrument.name, 1, Submission(values={}, missing={}, status=0),
                  expected_version=0)
    db.session.commit()
    labels = [r.label for r in records]
    baseline = db.session.scalar(select(func.max(AuditEvent.id)))
    db.session.remove()

    # A connection per client thread, as a gunicorn worker's pool is sized to its threads: on a
    # busy machine 20 threads sharing the default 15 would wait out the pool timeout.
    engine = {**demo.config["SQLALCHEMY_ENGINE_OPTIONS"], "pool_size": LOAD_CLIENTS, "max_overflow": 0}
    app = make_app(demo.config["SQLALCHEMY_DATABASE_URI"], WTF_CSRF_ENABLED=True, SQLALCHEMY_ENGINE_OPTIONS=engine,
                   **UNLIMITED)
    saved: dict[str, list[str]] = {label: [] for label in labels}
    failures: list[str] = []

    def user(label: str) -> None:
        browser = requests.Session()
        form_url = f"{base}/records/{label}/{instrument.name}/1"
        login_page = browser.get(f"{base}/login").text
        browser.post(f"{base}/login", data={"username": "coordinator", "password": DEMO_PASSWORD,
                                            "csrf_token": csrf_token(login_page)})
        n = 0
        stop = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < stop:
            page = browser.get(form_url)
            version = re.search(r'name="version" type="hidden" value="(\d+)"', page.text)
            if page.status_code != 200 or version is None:
                failures.append(f"GET {label}: {page.status_code}")
                return
            value = f"note {n} from {label}"
            response = browser.post(form_url, allow_redirects=False, data={
                "csrf_token": csrf_token(page.text), "version": version.group(1), "form_status": "0",
                field.name: value})
            if response.status_code != 302:
                failures.append(f"POST {label}: {response.status_code}")
                return
            saved[label].append(value)
            n += 1

    with live_server(app) as base:
        threads = [threading.Thread(target=user, args=(label,)) for label in labels]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=LOAD_SECONDS + 120)
    with app.app_context():
        db.engine.dispose()

    assert failures == []
    db.session.expire_all()
    updates = db.session.scalar(select(func.count()).where(
        AuditEvent.id > baseline, AuditEvent.action.in_(["update", "status"]), AuditEvent.record_label.in_(labels)))
    assert updates == sum(len(values) for values in saved.values()) > 0
    for rec in db.session.scalars(select(Record).where(Record.label.in_(labels))):
        form = db.session.scalar(select(FormInstance).where(FormInstance.record_id == rec.id,
                                                            FormInstance.instrument == instrument.name))
        assert form.data[field.name] == saved[rec.label][-1]  # the last save is what is stored
        assert form.version == len(saved[rec.label]) + 1
    assert verify_chain(db.session).ok
