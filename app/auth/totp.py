"""Optional TOTP two-factor log-in (RFC 6238) for the roles that can change or sign data broadly.

The secret must be recoverable to check a code, so it is kept encrypted (Fernet, with a
key derived from the deployment's SECRET_KEY by HKDF), never in clear. A secret is only
switched on after the user has typed a first code from it, and each accepted code's
time-step is remembered so that the same code (seen over a shoulder, or replayed) is
refused. Failed codes are audited as failed log-ins, so they count toward the lock-out.
Services here know nothing of HTTP; the key is passed in by the caller.
"""

from __future__ import annotations

import base64
import hmac
import io
import time

import pyotp
import qrcode
import qrcode.image.svg
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from app.audit.services import AuditEntry, append
from app.auth.models import SiteRole, User
from app.auth.passwords import verify_password
from app.auth.services import LoginRefused, check_lockout, record_failure, record_login
from app.errors import ValidationFailed

ISSUER = "Casebook"
#: Codes from the previous and next 30-second step are accepted too (clock drift on phones).
VALID_WINDOW = 1
BAD_CODE = "This code is not right (or was already used); type the current 6-digit code from your app."


def may_use_totp(user: User) -> bool:
    """Admins and investigators may turn two-factor on: they manage users or sign for a site.

    Other roles cannot (one less thing to lose for coordinators entering data daily);
    SECURITY.md records this choice.
    """
    return user.is_admin or any(m.role == SiteRole.INVESTIGATOR for m in user.memberships)


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"casebook totp secret").derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _secret(user: User, secret_key: str) -> str:
    if not user.totp_secret:
        raise ValidationFailed({"code": "Two-factor log-in is not set up."}, "Two-factor log-in is not set up.")
    try:
        return _fernet(secret_key).decrypt(user.totp_secret.encode()).decode()
    except InvalidToken:
        # SECRET_KEY changed since enrolment: the secret is unreadable; an admin must reset it.
        raise ValidationFailed({"code": "Two-factor log-in cannot be checked; ask an admin to reset it."},
                               "The two-factor secret cannot be decrypted with this deployment's key.") from None


def _accepted_step(user: User, secret_key: str, code: str) -> int | None:
    """The time-step the code belongs to if it is valid and newer than the last one used."""
    code = "".join(code.split())
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(_secret(user, secret_key))
    current = int(time.time()) // totp.interval
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return None  # this code, or a later one, was already used
            return step
    return None


def begin_enrolment(session: Session, user: User, secret_key: str) -> str:
    """Give the user a new, not yet active secret (replacing an unconfirmed one); returns it."""
    if not may_use_totp(user):
        raise ValidationFailed({"code": "Your role does not use two-factor log-in."},
                               "Only admins and investigators can turn on two-factor log-in.")
    if user.totp_enabled:
        raise ValidationFailed({"code": "Two-factor log-in is already on."}, "Two-factor log-in is already on.")
    secret = pyotp.random_base32()
    user.totp_secret = _fernet(secret_key).encrypt(secret.encode()).decode()
    user.totp_last_step = None
    session.flush()
    return secret


def pending_secret(user: User, secret_key: str) -> str | None:
    """The secret being set up (shown again if the first code was wrong), or None."""
    if user.totp_enabled or not user.totp_secret:
        return None
    return _secret(user, secret_key)


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code: drawn here, so no external service sees the secret."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    return svg[svg.index("<svg"):]


def confirm_enrolment(session: Session, user: User, code: str, secret_key: str) -> None:
    """Switch two-factor on once the user proves their app produces the right codes."""
    if user.totp_enabled or not user.totp_secret:
        raise ValidationFailed({"code": "Start the set-up again."}, "There is no two-factor set-up to confirm.")
    step = _accepted_step(user, secret_key, code)
    if step is None:
        raise ValidationFailed({"code": BAD_CODE}, BAD_CODE)
    user.totp_enabled = True
    user.totp_last_step = step
    append(session, [AuditEntry(action="totp_enabled", user_id=user.id, username=user.username,
                                field="user", new=user.username)])


def check_login_code(session: Session, user: User, code: str, secret_key: str, *, source: str = "web") -> None:
    """The second log-in step: a wrong or replayed code is a failed log-in (lock-out counts it)."""
    check_lockout(session, user.username, user, source)
    step = _accepted_step(user, secret_key, code)
    if step is None:
        record_failure(session, user.username, user, source, reason="totp")
        raise LoginRefused(BAD_CODE)
    user.totp_last_step = step
    record_login(session, user, source)


def disable(session: Session, user: User, password: str, code: str, secret_key: str) -> None:
    """Turn two-factor off; both factors are asked so a borrowed open session cannot do it."""
    errors: dict[str, str] = {}
    if not verify_password(user.password_hash, password):
        errors["password"] = "This is not your current password."  # noqa: S105 - a message, not a password
    step = _accepted_step(user, secret_key, code) if user.totp_enabled else None
    if step is None:
        errors["code"] = BAD_CODE
    if errors:
        raise ValidationFailed(errors, "Two-factor log-in was not turned off.")
    _clear(user)
    append(session, [AuditEntry(action="totp_disabled", user_id=user.id, username=user.username,
                                field="user", old=user.username)])


def reset(session: Session, user: User, *, by: str, source: str) -> bool:
    """An admin's reset for a user who lost their phone; returns whether anything was set."""
    had = user.totp_enabled or user.totp_secret is not None
    _clear(user)
    append(session, [AuditEntry(action="totp_reset", user_id=user.id, username=by, field="user",
                                old=user.username, source=source)])
    return had


def _clear(user: User) -> None:
    user.totp_secret = None
    user.totp_enabled = False
    user.totp_last_step = None
