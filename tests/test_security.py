"""Log-in and session hardening, headers and request limits."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.sessions import SEEN, STARTED
from app.extensions import db
from tests.conftest import DEMO_PASSWORD, login, make_app


def last_action(username: str) -> str:
    return db.session.scalar(select(AuditEvent.action).where(AuditEvent.username == username)
                             .order_by(AuditEvent.id.desc()).limit(1))


def test_idle_session_ends_after_30_minutes(as_user):
    client = as_user("coordinator")
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        session[SEEN] -= 31 * 60
    response = client.get("/sites/KMU/records")
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    assert last_action("coordinator") == "session_expired"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "logged out after 30 minutes without activity" in page
    assert client.get("/").status_code == 302  # really logged out


def test_activity_keeps_the_session_and_absolute_limit_ends_it(as_user):
    client = as_user("investigator")
    with client.session_transaction() as session:
        session[SEEN] -= 29 * 60
    assert client.post("/session/keepalive").status_code == 200
    with client.session_transaction() as session:
        assert session[SEEN] > session[STARTED]  # the keep-alive moved the idle clock
        session[STARTED] -= 12 * 3600 + 1
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_logout_ends_every_session_of_the_user(demo):
    first, second = demo.test_client(), demo.test_client()
    login(first, "monitor")
    login(second, "monitor")
    assert second.get("/").status_code == 200
    assert first.post("/logout").status_code == 302
    assert second.get("/").status_code == 302  # the other browser's cookie no longer works


def test_password_change_ends_other_sessions_but_not_this_one(demo):
    here, elsewhere = demo.test_client(), demo.test_client()
    login(here, "coordinator")
    login(elsewhere, "coordinator")
    response = here.post("/profile", data={"current": DEMO_PASSWORD, "password": "a much longer passphrase",
                                           "confirm": "a much longer passphrase"})
    assert response.status_code == 302
    assert here.get("/").status_code == 200
    assert elsewhere.get("/").status_code == 302


def test_password_policy_on_profile(as_user):
    client = as_user("coordinator")
    for password, message in [("short pass", "at least 12 characters"),
                              ("passwordpassword", "too common"),
                              ("coordinator-is-me", "must not contain the user name")]:
        response = client.post("/profile", data={"current": DEMO_PASSWORD, "password": password,
                                                 "confirm": password})
        assert response.status_code == 422 and message in response.get_data(as_text=True)
    long_one = "x" * 50 + " a long sentence of 64+ characters is fine"
    response = client.post("/profile", data={"current": DEMO_PASSWORD, "password": long_one, "confirm": long_one})
    assert response.status_code == 302


def test_login_is_rate_limited_per_address(demo):
    app = make_app(demo.config["SQLALCHEMY_DATABASE_URI"], LOGIN_RATE_LIMIT="3 per minute")
    client = app.test_client()
    codes = [client.post("/login", data={"username": "nobody", "password": "x" * 12}).status_code
             for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert "Too many attempts" in client.post("/login", data={}).get_data(as_text=True)


def test_security_headers_on_every_response(as_user, client):
    for response in (client.get("/login"), as_user("coordinator").get("/records/KMU-0001"), client.get("/nope")):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in response.headers  # only over HTTPS
    assert as_user("coordinator").get("/").headers["Cache-Control"] == "no-store"
    secure = client.get("/login", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


def test_session_cookie_flags(demo):
    client = demo.test_client()
    response = client.post("/login", data={"username": "admin", "password": DEMO_PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # a bounded lifetime (12 hours), no year-long remember-me
    assert "remember_token" not in response.headers.get_all("Set-Cookie").__str__()


def test_oversized_request_is_refused_cleanly(as_user):
    client = as_user("coordinator")
    response = client.post("/records/KMU-0001/treatment/1", data={"treatment_other": "x" * (17 * 1024 * 1024)})
    assert response.status_code == 413
    assert "Request Entity Too Large" in response.get_data(as_text=True)


def test_open_redirect_after_login_is_refused(demo):
    client = demo.test_client()
    response = client.post("/login?next=//evil.example/x", data={"username": "admin", "password": DEMO_PASSWORD})
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(("path", "status"), [
    ("/records/%00", 404),  # a record ID with NUL: was a database error (500) on PostgreSQL
    ("/records/KMU-0001%00/enrolment/1", 404),
    ("/records/?q=%00", 400),
    ("/audit/?record=KMU%00", 400),
])
def test_a_nul_character_in_the_address_is_refused_not_a_database_error(as_user, path, status):
    response = as_user("admin").get(path)
    assert response.status_code == status
    if status == 400:
        assert "contains a NUL character" in response.get_data(as_text=True)
