"""Engine and session factory for Postgres (production) and SQLite (the embedded default)."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """Postgres: one pool for everything. SQLite: a `read_only` engine's transactions begin deferred, so
    readers share the database (WAL); the other engine's take the write lock up front."""
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        # One connection per API worker thread, so no request waits for a connection (SQLAlchemy's default of
        # 5 + 10 made 200 concurrent clients wait 30 s and fail); the write lock is what serialises writers.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS},
            pool_size=API_THREADS,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_SECONDS,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:
            connection.isolation_level = None  # SQLAlchemy, not the driver, begins transactions (below)
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection) -> None:
            # A writer takes the write lock up front: a deferred transaction that reads, then writes, fails
            # with "database is locked" under concurrency instead of waiting for its turn.
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # Up to as many connections as the API's worker threads, so no request queues for one; beyond, fail fast
    # (a 503). Only KEPT_OPEN stay open between bursts: every process (API replicas, workers, the CLI) makes an
    # engine, and idle connections held by each would use up the server's max_connections (100 by default).
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=KEPT_OPEN,
        max_overflow=API_THREADS - KEPT_OPEN,
        pool_timeout=POOL_TIMEOUT_SECONDS,
    )


# AnyIO's default thread limiter, the most threads of an API process that can hold a connection: the routes'
# database work takes MCU_API_DB_THREADS of them (api/deps.py), routes that move objects and sync
# dependencies the rest. Each holds one connection at most, and only while its SQL runs (SessionRoute), so
# with a pool this large no request waits for a connection: a wait means one was leaked, or the database is down.
API_THREADS = 40
KEPT_OPEN = 5  # Postgres connections a pool keeps between bursts (SQLAlchemy's default)
BUSY_TIMEOUT_SECONDS = 10  # SQLite: how long a writer waits for the write lock
POOL_TIMEOUT_SECONDS = 5  # how long a request waits for a free connection


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def private_sqlite_file(url: str) -> None:
    """The embedded database holds key hashes and every audit event: readable by its owner only (0600)."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
