"""Prometheus metrics: HTTP traffic (middleware) and service state read from the database, at most every few
seconds whatever the number of scrapes."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.lifecycle import OPEN, overdue_at
from models import DeletionRequest, utcnow
from worker.dispatch import Dispatcher

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other is "other"
SNAPSHOT_SECONDS = 5.0  # how stale the service gauges may be: Prometheus scrapes every 15 s or more
T = TypeVar("T")


class Shared(Generic[T]):
    """`compute()` run by one caller at a time, at most once per `ttl` seconds; every other caller meanwhile gets
    the last result at once. A flood of scrapes or probes then costs one computation per `ttl`: it can
    neither exhaust a connection pool nor make anyone wait."""

    def __init__(
        self, compute: Callable[[], T], ttl: float, initial: T, reusable: Callable[[T], bool] = lambda _: True
    ) -> None:
        self.compute, self.ttl, self.value, self.reusable = compute, ttl, initial, reusable
        self.computed_at = -math.inf
        self.lock = threading.Lock()

    def get(self) -> T:
        if time.monotonic() - self.computed_at >= self.ttl and self.lock.acquire(blocking=False):
            try:
                self.value = self.compute()
            finally:  # a result that must not be reused (a failed check) is computed again by the next caller
                self.computed_at = time.monotonic() if self.reusable(self.value) else -math.inf
                self.lock.release()
        return self.value


class ServiceCollector(Collector):
    """Requests by state, overdue and due soon, queue depth and finished-job durations, computed at most once
    per SNAPSHOT_SECONDS (a scrape meanwhile gets the last snapshot), on a read session."""

    def __init__(self, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.factory, self.dispatcher = factory, dispatcher
        self.snapshot: Shared[list[Metric]] = Shared(self.measure, SNAPSHOT_SECONDS, initial=[])

    def collect(self) -> Iterator[Metric]:
        yield from self.snapshot.get()

    def measure(self) -> list[Metric]:
        by_state = GaugeMetricFamily("mcu_deletion_requests", "Deletion requests by state", labels=["state"])
        durations = SummaryMetricFamily("mcu_job_duration_seconds", "Run time of finished jobs (started to finished)")
        deadlines: list[Metric] = []
        try:
            with self.factory() as session:
                for state, count in session.execute(
                    select(DeletionRequest.state, func.count()).group_by(DeletionRequest.state)
                ):
                    by_state.add_metric([state], count)
                now = utcnow()
                for name, help_, which in (
                    ("mcu_deletion_requests_overdue", "Open requests past their due_at", overdue_at(now)),
                    (
                        "mcu_deletion_requests_due_within_7_days",
                        "Open requests due in the next 7 days",
                        DeletionRequest.state.in_(OPEN) & DeletionRequest.due_at.between(now, now + timedelta(days=7)),
                    ),
                ):
                    gauge = GaugeMetricFamily(name, help_)
                    gauge.add_metric(
                        [], session.scalar(select(func.count()).select_from(DeletionRequest).where(which)) or 0
                    )
                    deadlines.append(gauge)
                finished = session.execute(
                    select(DeletionRequest.started_at, DeletionRequest.finished_at).where(
                        DeletionRequest.started_at.is_not(None), DeletionRequest.finished_at.is_not(None)
                    )
                ).all()
            # (`if s and f` repeats the query's filter for the type checker)
            durations.add_metric([], len(finished), sum((f - s).total_seconds() for s, f in finished if s and f))
        except Exception:  # noqa: BLE001  (a scrape never fails because the database is down)
            pass
        metrics = [by_state, durations, *deadlines]
        depth = self.dispatcher.queue_depth()
        if depth is not None:
            queue = GaugeMetricFamily("mcu_queue_depth", "Tasks waiting in the broker's gpu queue")
            queue.add_metric([], depth)
            metrics.append(queue)
        return metrics


class MetricsMiddleware:
    """Request counts and latency by route template, as a plain ASGI middleware (Starlette's
    BaseHTTPMiddleware cost about a millisecond per request)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("mcu_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
        self.latency = Histogram(
            "mcu_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            # Labels from fixed sets only: any method or path a client invents would add a series for good.
            method = scope["method"] if scope["method"] in METHODS else "other"
            path = getattr(scope.get("route"), "path", "unmatched")  # the template: ids stay out of labels
            self.requests.labels(method, path, str(status)).inc()
            self.latency.labels(method, path).observe(time.perf_counter() - started)
