"""Optional TOTP two-factor log-in: set-up from the profile, the code step at log-in (replays
refused, failures locking the account), turning it off, and the admin's reset."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.auth.models import User
from app.extensions import db
from tests.conftest import DEMO_PASSWORD, login


def user(username: str) -> User:
    db.session.expire_all()
    return db.session.scalar(select(User).where(User.username == username))


def enrol(client, username: str) -> pyotp.TOTP:
    """Set up two-factor through the profile page; returns the authenticator the user scanned."""
    assert client.post("/profile/2fa/setup").status_code == 302
    page = client.get("/profile").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    authenticator = pyotp.TOTP(secret)
    response = client.post("/profile/2fa/confirm", data={"code": authenticator.now()})
    assert response.status_code == 302
    assert user(username).totp_enabled
    return authenticator


def next_code(authenticator: pyotp.TOTP, steps: int = 1) -> str:
    """A code from a later 30-second step (still inside the accepted window), so not a replay."""
    return authenticator.at(time.time() + steps * authenticator.interval)


def actions(username: str, action: str) -> int:
    return db.session.scalar(select(func.count()).where(AuditEvent.username == username,
                                                        AuditEvent.action == action))


def test_setup_shows_inline_qr_and_key_and_needs_a_right_code(as_user):
    client = as_user("investigator")
    assert "Set up two-factor log-in" in client.get("/profile").get_data(as_text=True)
    client.post("/profile/2fa/setup")
    page = client.get("/profile").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    assert "<svg" in page and "otpauth" not in page and "http://www.w3.org/2000/svg" in page
    stored = user("investigator")
    assert stored.totp_secret and secret not in stored.totp_secret  # encrypted at rest
    assert not stored.totp_enabled

    wrong = client.post("/profile/2fa/confirm", data={"code": "000000" if pyotp.TOTP(secret).now() != "000000"
                                                               else "111111"})
    assert wrong.status_code == 422
    assert 'id="code-error"' in wrong.get_data(as_text=True) and "not right" in wrong.get_data(as_text=True)
    assert not user("investigator").totp_enabled

    assert client.post("/profile/2fa/confirm", data={"code": pyotp.TOTP(secret).now()}).status_code == 302
    assert user("investigator").totp_enabled
    assert actions("investigator", "totp_enabled") == 1
    assert "Two-factor log-in is <strong>on</strong>" in client.get("/profile").get_data(as_text=True)


def test_login_asks_for_the_code_and_is_not_authenticated_before_it(as_user, demo):
    authenticator = enrol(as_user("admin"), "admin")
    client = demo.test_client()
    response = client.post("/login?next=/audit", data={"username": "admin", "password": DEMO_PASSWORD})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login/code")
    assert client.get("/").status_code == 302  # the password alone does not log in
    assert actions("admin", "login") == 1  # only the enrolment session's log-in so far

    replay = client.post("/login/code", data={"code": authenticator.now()})  # used at enrolment
    assert replay.status_code == 401 and "already used" in replay.get_data(as_text=True)
    response = client.post("/login/code", data={"code": next_code(authenticator)})
    assert response.status_code == 302 and response.headers["Location"] == "/audit"
    assert client.get("/audit").status_code == 200
    assert actions("admin", "login") == 2

    again = demo.test_client()
    again.post("/login", data={"username": "admin", "password": DEMO_PASSWORD})
    refused = again.post("/login/code", data={"code": next_code(authenticator)})
    assert refused.status_code == 401  # the same code cannot log in a second browser


def test_wrong_codes_count_toward_the_lockout(as_user, demo):
    authenticator = enrol(as_user("investigator"), "investigator")
    client = demo.test_client()
    client.post("/login", data={"username": "investigator", "password": DEMO_PASSWORD})
    good = next_code(authenticator)
    bad = "123456" if good != "123456" else "654321"
    for _ in range(5):
        assert client.post("/login/code", data={"code": bad}).status_code == 401
    locked = client.post("/login/code", data={"code": good})
    assert locked.status_code == 401 and "locked for 15 minutes" in locked.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert db.session.scalar(select(func.count()).where(
        AuditEvent.username == "investigator", AuditEvent.action == "login_failed", AuditEvent.reason == "totp")) == 5


def test_code_step_without_a_password_goes_back_to_login(demo):
    client = demo.test_client()
    response = client.post("/login/code", data={"code": "123456"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_turning_off_needs_password_and_code(as_user):
    client = as_user("admin")
    authenticator = enrol(client, "admin")
    response = client.post("/profile/2fa/disable", data={"password": "wrong password here", "code": "12"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and 'id="password-error"' in page and 'id="code-error"' in page
    assert user("admin").totp_enabled
    response = client.post("/profile/2fa/disable", data={"password": DEMO_PASSWORD,
                                                         "code": next_code(authenticator)})
    assert response.status_code == 302
    stored = user("admin")
    assert not stored.totp_enabled and stored.totp_secret is None
    assert actions("admin", "totp_disabled") == 1
    login(client.application.test_client(), "admin")  # the password alone is enough again


@pytest.mark.parametrize("username", ["coordinator", "monitor", "statistician"])
def test_other_roles_cannot_turn_it_on(as_user, username):
    client = as_user(username)
    assert "two-factor" not in client.get("/profile").get_data(as_text=True).lower()
    assert client.post("/profile/2fa/setup").status_code == 403
    assert user(username).totp_secret is None


def test_admin_resets_a_lost_authenticator_from_the_cli(as_user, demo):
    enrol(as_user("investigator"), "investigator")
    result = demo.test_cli_runner().invoke(args=["users", "reset-2fa", "investigator"])
    assert result.exit_code == 0 and "reset for investigator" in result.output
    assert not user("investigator").totp_enabled
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "totp_reset"))
    assert event.username == "cli" and event.old_value == "investigator" and event.source == "cli"
    login(demo.test_client(), "investigator")
    missing = demo.test_cli_runner().invoke(args=["users", "reset-2fa", "nobody"])
    assert missing.exit_code == 1 and "No user named nobody" in missing.output
