"""Password hashing (argon2id) and the password policy (NIST SP 800-63B style)."""

from __future__ import annotations

import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


def _hasher_from_environment() -> PasswordHasher:
    """argon2id with the library's defaults (RFC 9106 low-memory profile), tunable per
    deployment; hashes made with other parameters are upgraded at the next log-in."""
    defaults = PasswordHasher()
    return PasswordHasher(
        time_cost=int(os.environ.get("CASEBOOK_ARGON2_TIME_COST", defaults.time_cost)),
        memory_cost=int(os.environ.get("CASEBOOK_ARGON2_MEMORY_KIB", defaults.memory_cost)),
        parallelism=int(os.environ.get("CASEBOOK_ARGON2_PARALLELISM", defaults.parallelism)),
    )


_hasher = _hasher_from_environment()

MIN_LENGTH = 12
MAX_LENGTH = 128

#: The most common passwords that meet the length rule; refused outright.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012", "1234567890123", "12345678901234", "qwertyuiopas", "password1234",
        "passwordpassword", "password123456", "iloveyou1234", "qwerty123456", "aaaaaaaaaaaa",
        "abc123456789", "111111111111", "000000000000", "letmein12345", "welcome12345",
        "changeme1234", "administrator", "adminadmin12", "casebook1234", "qwertyqwerty",
    }
)


def policy_problem(password: str, username: str | None = None) -> str | None:
    """Why a new password is refused, or None if it is acceptable. No composition rules."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(password)) < 4:
        return "This password is too common or too easy to guess; choose another."
    if username and username.lower() in lowered:
        return "The password must not contain the user name."
    return None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with older parameters; it is replaced at the next log-in."""
    return _hasher.check_needs_rehash(password_hash)
