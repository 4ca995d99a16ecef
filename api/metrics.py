"""Prometheus metrics: HTTP traffic (middleware) and service state read from the database at scrape time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from models import DeletionRequest
from worker.dispatch import Dispatcher


class ServiceCollector(Collector):
    """Requests by state, queue depth and finished-job durations, computed when scraped."""

    def __init__(self, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.factory, self.dispatcher = factory, dispatcher

    def collect(self) -> Iterator[GaugeMetricFamily | SummaryMetricFamily]:
        by_state = GaugeMetricFamily("mcu_deletion_requests", "Deletion requests by state", labels=["state"])
        durations = SummaryMetricFamily("mcu_job_duration_seconds", "Run time of finished jobs (started to finished)")
        try:
            with self.factory() as session:
                for state, count in session.execute(select(DeletionRequest.state, func.count())
                                                    .group_by(DeletionRequest.state)):
                    by_state.add_metric([state], count)
                finished = session.execute(select(DeletionRequest.started_at, DeletionRequest.finished_at).where(
                    DeletionRequest.started_at.is_not(None), DeletionRequest.finished_at.is_not(None))).all()
            durations.add_metric([], len(finished), sum((f - s).total_seconds() for s, f in finished))
        except Exception:  # noqa: BLE001  (a scrape never fails because the database is down)
            pass
        yield by_state
        yield durations
        depth = self.dispatcher.queue_depth()
        if depth is not None:
            queue = GaugeMetricFamily("mcu_queue_depth", "Tasks waiting in the broker's gpu queue")
            queue.add_metric([], depth)
            yield queue


def install_metrics(registry: CollectorRegistry) -> Callable[[Request, Callable[[Request], Awaitable[Response]]],
                                                              Awaitable[Response]]:
    requests = Counter("mcu_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("mcu_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                        registry=registry)

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the template, so ids do not explode the label space
        requests.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    return middleware
