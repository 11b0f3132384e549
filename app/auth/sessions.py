"""Session lifetime: 30 minutes idle, 12 hours at most, checked on the server each request.

The times live in the signed session cookie, so every app process enforces them alike;
ending a session early (log-out, password change) is done by the user's session token.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

STARTED = "_started"
SEEN = "_seen"


def start_session_clock(session: MutableMapping[str, Any], now: float | None = None) -> None:
    now = time.time() if now is None else now
    session[STARTED] = now
    session[SEEN] = now


def expiry_reason(session: MutableMapping[str, Any], idle: int, absolute: int, now: float | None = None) -> str | None:
    """Why the session must end now ('idle' or 'absolute'), or None; refreshes the idle clock."""
    now = time.time() if now is None else now
    started = session.get(STARTED)
    seen = session.get(SEEN)
    if not isinstance(started, int | float) or not isinstance(seen, int | float):
        return "idle"  # a session without clocks predates them or was tampered with
    if now - started > absolute:
        return "absolute"
    if now - seen > idle:
        return "idle"
    session[SEEN] = now
    return None
