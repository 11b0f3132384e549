"""Pseudonymous study IDs, site pseudonyms and date-shift offsets from one secret key.

Everything here is an HMAC-SHA-256 under a key kept outside the database (environment
or a 0600 file in the instance folder), so the same record gets the same study ID in
every export (successive exports merge) while nobody holding only the exports, or
only a database dump, can link a study ID back to a record or to patient data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from app.config import secret_file
from app.errors import CasebookError

KEY_ENV = "CASEBOOK_PSEUDONYM_KEY"
KEY_FILE = "pseudonym_key"
MIN_KEY_LENGTH = 32
MAX_SHIFT_DAYS = 364


class PseudonymKeyError(CasebookError):
    """The configured key is unusable; the message names the setting, never the key."""


def load_key(instance_path: Path) -> bytes:
    """The key from CASEBOOK_PSEUDONYM_KEY, else from `instance/pseudonym_key` (created once).

    Generated once and kept (not per process) so that every worker and every later
    export derives the same pseudonyms; the file is readable by its owner only.
    """
    env = os.environ.get(KEY_ENV)
    if env is not None:
        if len(env) < MIN_KEY_LENGTH:
            raise PseudonymKeyError(f"{KEY_ENV} must be at least {MIN_KEY_LENGTH} characters long.")
        return env.encode("utf-8")
    key_file = instance_path / KEY_FILE
    key = secret_file(key_file)
    if len(key) < MIN_KEY_LENGTH:
        raise PseudonymKeyError(f"{key_file.name} in the instance folder is shorter than {MIN_KEY_LENGTH} characters.")
    return key.encode("utf-8")


class Pseudonymiser:
    """Derives every pseudonym of one study; domain-separated so no two uses share a digest."""

    def __init__(self, key: bytes, study_id: str) -> None:
        #: Keyed once; each digest continues a copy (the hmac module's way for many messages
        #: under one key: a third of the cost of keying afresh, once per exported record).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self._study = study_id
        #: Site pseudonyms by code: an export asks once per record, and sites are few.
        self._sites: dict[str, str] = {}

    def _digest(self, purpose: str, value: str) -> bytes:
        mac = self._keyed.copy()
        mac.update("\x1f".join((purpose, self._study, value)).encode("utf-8"))
        return mac.digest()

    def subject(self, record_label: str) -> str:
        """Study ID: 64 bits of HMAC, so collisions stay negligible far beyond any registry's size."""
        return "P" + self._digest("subject", record_label)[:8].hex()

    def site(self, site_code: str) -> str:
        pseudonym = self._sites.get(site_code)
        if pseudonym is None:
            pseudonym = self._sites[site_code] = "S" + self._digest("site", site_code)[:4].hex()
        return pseudonym

    def identity(self) -> str:
        """Differs between keys and studies without revealing the key: for cache keys."""
        return self._digest("identity", "").hex()

    def shift_days(self, record_label: str) -> int:
        """How many days (1-364) every date of the record moves back, as REDCap's date shifting does."""
        return 1 + int.from_bytes(self._digest("date-shift", record_label)[:8], "big") % MAX_SHIFT_DAYS
