"""Rate limits hold across app processes and see the client's address behind a reverse proxy.

The counters live in the app's database (app/ratelimit.py), so two apps on one database (as
two gunicorn workers, or a second process) share one log-in limit. Run on SQLite, and on
PostgreSQL with DATABASE_URL set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from limits.storage import storage_from_string
from sqlalchemy import select, update

from app.extensions import db
from app.ratelimit import STORAGE_URI, DatabaseStorage, RateLimitCounter
from tests.conftest import make_app

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 4
CONFIG = {"LOGIN_RATE_LIMIT": f"{LIMIT} per minute"}
GUESS = {"username": "jane.doe.1961", "password": "Guessed-Password-123"}
#: Fail `count` log-ins in a process of its own, on the same database; print the status codes.
OTHER_PROCESS = """
import json, sys
from app import create_app
app = create_app(json.loads(sys.argv[1]))
client = app.test_client()
print(json.dumps([client.post("/login", data=json.loads(sys.argv[2])).status_code for _ in range(int(sys.argv[3]))]))
"""


def fail_log_in(client: FlaskClient, address: str = "127.0.0.1", **headers: str) -> int:
    return client.post("/login", data=GUESS, environ_base={"REMOTE_ADDR": address}, headers=headers).status_code


def counters() -> dict[str, int]:
    """Every counter in the database, by key (after a rollback, so that what the other apps
    committed since is seen)."""
    db.session.rollback()
    return {row.key: row.hits for row in db.session.scalars(select(RateLimitCounter))}


def second_app(app: Flask, **config: object) -> Flask:
    """Another app on the test's database, as another gunicorn worker would be."""
    return make_app(app.config["SQLALCHEMY_DATABASE_URI"], **{**CONFIG, **config})


def test_two_apps_on_one_database_share_one_log_in_limit(app):
    first, second = second_app(app).test_client(), second_app(app).test_client()
    codes = [fail_log_in(client) for client in (first, second) * (LIMIT // 2)]
    assert codes == [401] * LIMIT
    refused = first.post("/login", data=GUESS)
    assert fail_log_in(second) == 429 and refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert "Too many attempts" in page and "<html" in page and refused.mimetype == "text/html"
    for leak in (GUESS["username"], GUESS["password"], "Traceback", "LIMITER/"):
        assert leak not in page
    assert refused.headers["Retry-After"].isdigit()
    [(key, hits)] = counters().items()
    assert "127.0.0.1" in key and "auth.login" in key and hits == LIMIT + 2


def test_a_separate_process_counts_toward_the_same_limit(app):
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False,
              "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"], **CONFIG}
    child = subprocess.run([sys.executable, "-c", OTHER_PROCESS, json.dumps(config), json.dumps(GUESS), str(LIMIT - 1)],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           timeout=120, check=True)
    assert json.loads(child.stdout) == [401] * (LIMIT - 1)
    here = second_app(app).test_client()
    assert [fail_log_in(here), fail_log_in(here)] == [401, 429]


def test_the_window_resets_and_ended_windows_are_swept_out(app):
    client = second_app(app).test_client()
    assert [fail_log_in(client) for _ in range(LIMIT + 1)][-1] == 429
    db.session.add(RateLimitCounter(key="LIMITER/198.51.100.9/auth.login/4/1/minute", hits=2,
                                    expires_at=time.time() - 600))
    db.session.execute(update(RateLimitCounter).values(expires_at=time.time() - 1))  # the minute is over
    db.session.commit()
    assert fail_log_in(client) == 401
    [(key, hits)] = counters().items()  # the other address's ended window is gone
    assert "127.0.0.1" in key and hits == 1


def test_each_client_address_has_its_own_count(app):
    client = second_app(app).test_client()
    assert [fail_log_in(client, "203.0.113.5") for _ in range(LIMIT + 1)][-1] == 429
    assert fail_log_in(client, "203.0.113.6") == 401
    assert fail_log_in(client, "203.0.113.5") == 429
    assert sorted(counters().values()) == [1, LIMIT + 2]


def test_behind_one_trusted_proxy_the_forwarded_address_is_counted(app):
    client = second_app(app, TRUSTED_PROXIES=1).test_client()
    proxy = "127.0.0.1"
    codes = [fail_log_in(client, proxy, **{"X-Forwarded-For": "198.51.100.1"}) for _ in range(LIMIT + 1)]
    assert codes[-1] == 429
    assert fail_log_in(client, proxy, **{"X-Forwarded-For": "198.51.100.2"}) == 401
    # Only the last hop, which the proxy appended, is believed: a client's own entry changes nothing.
    assert fail_log_in(client, proxy, **{"X-Forwarded-For": "10.9.9.9, 198.51.100.1"}) == 429
    assert all("198.51.100." in key for key in counters())
    https = client.get("/login", headers={"X-Forwarded-For": "198.51.100.3", "X-Forwarded-Proto": "https"})
    assert https.headers["Strict-Transport-Security"].startswith("max-age=")


def test_without_trusted_proxies_x_forwarded_for_is_ignored(app):
    client = second_app(app).test_client()
    codes = [fail_log_in(client, "127.0.0.1", **{"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(LIMIT + 1)]
    assert codes[-1] == 429  # a new made-up address per try does not escape the limit
    assert all("198.51.100." not in key for key in counters())
    plain = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in plain.headers


def test_trusted_proxies_and_storage_come_from_the_environment(monkeypatch, app):
    monkeypatch.setenv("CASEBOOK_TRUSTED_PROXIES", "2")
    configured = make_app(app.config["SQLALCHEMY_DATABASE_URI"])
    assert configured.config["TRUSTED_PROXIES"] == 2
    assert configured.config["RATELIMIT_STORAGE_URI"] == STORAGE_URI
    assert isinstance(storage_from_string(STORAGE_URI), DatabaseStorage)
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "memory://")
    assert make_app(app.config["SQLALCHEMY_DATABASE_URI"]).config["RATELIMIT_STORAGE_URI"] == "memory://"


def test_concurrent_hits_are_all_counted(app):
    """The upsert is one atomic statement: hits from many threads at once are never lost."""
    storage, threads, each = DatabaseStorage(), 4, 15

    def hit() -> None:
        with app.app_context():
            for _ in range(each):
                storage.incr("LIMITER/203.0.113.7/api.endpoint/600/1/minute", 60)

    workers = [threading.Thread(target=hit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert storage.get("LIMITER/203.0.113.7/api.endpoint/600/1/minute") == threads * each
    assert time.time() < storage.get_expiry("LIMITER/203.0.113.7/api.endpoint/600/1/minute") <= time.time() + 60
    storage.clear("LIMITER/203.0.113.7/api.endpoint/600/1/minute")
    assert storage.get("LIMITER/203.0.113.7/api.endpoint/600/1/minute") == 0 and storage.check()


def test_an_unreachable_database_answers_503_not_500(app):
    """The limiter fails closed: no count, no log-in or API call, the app's plain 503."""
    gone = make_app("postgresql+psycopg://casebook_dev:casebook_dev@127.0.0.1:9/none", **CONFIG)
    client = gone.test_client()
    page = client.post("/login", data=GUESS)
    assert page.status_code == 503 and "Database unavailable" in page.get_data(as_text=True)
    answer = client.post("/api/", data={"token": "0" * 32, "content": "record", "format": "json"})
    assert answer.status_code == 503 and "cannot be reached" in answer.json["error"]
    for response in (page, answer):
        assert "Traceback" not in response.get_data(as_text=True) and GUESS["username"] not in response.get_data(
            as_text=True)
