"""What a task needs from the outside world, built once per worker process."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from domain.lifecycle import send_follow_ups_after_commit
from domain.signing import SigningKeys
from models import make_engine, make_session_factory
from settings import Settings
from storage import LocalCache, ObjectStore, open_store
from worker.dispatch import Dispatcher


@dataclass
class Services:
    settings: Settings
    factory: sessionmaker[Session]
    store: ObjectStore
    cache: LocalCache
    dispatcher: Dispatcher
    # Named in the events of the jobs it claims: the host (a container's id) and the process.
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


def connect(settings: Settings) -> Services:
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    store = open_store(settings.resolved_storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    dispatcher = Dispatcher(settings.resolved_broker_url)
    send_follow_ups_after_commit(factory, dispatcher)
    SigningKeys(factory, settings)  # seals the audit chains this process's sessions extend (models/audit.py)
    return Services(settings, factory, store, LocalCache(settings.cache_dir, store, settings.cache_bytes), dispatcher)


class StopJob(Exception):
    """The request left the state this worker was serving (cancelled elsewhere, taken over)."""
