"""Rate-limit counters kept in Casebook's own database, so that every app process shares them.

Flask-Limiter's memory:// storage counts inside one process: with gunicorn's N workers (or
several hosts) a password guesser would get N times the log-in limit. Redis would share the
counts, but it is one more server to run and secure; the database that every process already
shares does the same job for the fixed-window counters the limiter keeps, at one upsert per
limited request. This module registers the `casebook+db://` scheme with `limits`; config.py
makes it the default RATELIMIT_STORAGE_URI (redis:// and the other schemes still work).
"""

from __future__ import annotations

import time
from typing import Any

from limits.storage import Storage
from sqlalchemy import BigInteger, Float, Integer, Row, Text, case, delete, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UPSERT, Base
from app.extensions import db

SCHEME = "casebook+db"
#: The default RATELIMIT_STORAGE_URI: the app's own database, whichever it is.
STORAGE_URI = f"{SCHEME}://"



class RateLimitCounter(Base):
    """One fixed window of one limit for one client address: the hits so far and when it ends.

    Times are seconds since the epoch (a float), as the `limits` library counts them. A row
    holds a client's network address only until its window ends; expired rows are deleted
    whenever some key starts a new window.
    """

    __tablename__ = "rate_limit_counter"

    #: A surrogate id, as every table has. 64 bits: PostgreSQL draws a number for every upsert,
    #: also for the ones that only count; SQLite's INTEGER is its rowid, which does not.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    #: The limiter's key: limit, endpoint and client address, e.g. "LIMITER/203.0.113.5/auth.login/20/1/minute".
    key: Mapped[str] = mapped_column(Text, unique=True)
    hits: Mapped[int]
    #: Float, as the migration made it (a double on both databases).
    expires_at: Mapped[float] = mapped_column(Float)


COUNTERS = RateLimitCounter.__table__


class DatabaseStorage(Storage):
    """`limits` storage on the current app's database, for the fixed-window strategy (the default).

    Flask-Limiter builds its storage from the URI alone, and the one Limiter in app.extensions
    serves every app that create_app makes, so the engine is looked up (the current app's) at
    each call rather than held. Every call runs in its own short transaction on its own pooled
    connection, so a rate-limit check never commits or rolls back the request's session.

    Errors are not swallowed: with the database unreachable the check raises OperationalError,
    which the app answers with its 503 page (a log-in or an API call could not be served
    anyway), so the limit never silently stops counting.
    """

    STORAGE_SCHEME = [SCHEME]

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count `amount` hits in one atomic statement; a key that is new or whose window has
        ended starts a new window of `expiry` seconds. Returns the hits in the window."""
        engine = db.engine
        now = time.time()
        statement = UPSERT[engine.dialect.name](COUNTERS).values(key=key, hits=amount, expires_at=now + expiry)
        ended = COUNTERS.c.expires_at <= now
        proposed = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[COUNTERS.c.key],
            set_={"hits": case((ended, proposed.hits), else_=COUNTERS.c.hits + proposed.hits),
                  "expires_at": case((ended, proposed.expires_at), else_=COUNTERS.c.expires_at)},
        ).returning(COUNTERS.c.hits)
        with engine.begin() as connection:
            hits: int = connection.execute(statement).scalar_one()
        if hits == amount:
            # A new window: the moment to sweep out other keys' ended ones. A transaction of its
            # own, so that two workers' sweeps never wait on each other's freshly counted rows.
            with engine.begin() as connection:
                connection.execute(delete(COUNTERS).where(COUNTERS.c.expires_at <= now))
        return hits

    def get(self, key: str) -> int:
        window = self._window(key)
        return window.hits if window else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends (now when it has none, as the library's memory storage says)."""
        window = self._window(key)
        return window.expires_at if window else time.time()

    def check(self) -> bool:
        """Whether the database answers."""
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with db.engine.begin() as connection:
            return connection.execute(delete(COUNTERS)).rowcount

    def clear(self, key: str) -> None:
        with db.engine.begin() as connection:
            connection.execute(delete(COUNTERS).where(COUNTERS.c.key == key))

    @staticmethod
    def _window(key: str) -> Row[Any] | None:
        """The key's current window (hits, expires_at), if it has one that has not ended."""
        with db.engine.connect() as connection:
            return connection.execute(select(COUNTERS.c.hits, COUNTERS.c.expires_at).where(
                COUNTERS.c.key == key, COUNTERS.c.expires_at > time.time())).first()
