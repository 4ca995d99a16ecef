"""The worker's Prometheus metrics (docs/telemetry.md, "Worker metrics"), served by `mcu worker` on
MCU_WORKER_METRICS_PORT: phase durations, jobs in progress, failures by problem type, CUDA memory peaks,
model validations and the broker's queue depth.

Every label takes values from a fixed set (phases, tasks, problem types, verdicts) or from what a job ran
(its base method, and its model's architecture, which validation accepted): nothing a client sends unchecked.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from models import DeletionRequest, Model
from settings import Settings
from worker.dispatch import Dispatcher
from worker.errors import KNOWN
from worker.services import Services

RUN, MATERIALIZE, VALIDATE = "run_request", "materialize_selection", "validate_model"  # Celery's names less "mcu."
CURVE_PHASES = ("mask", "base", "curve", "evaluate")  # CurveResult.timings (its "total" is their sum)
EXPECTED = tuple(slug for slug, _ in KNOWN.values())  # the causes worker/errors.py names for the user
PROBLEMS = (*EXPECTED, "job-failed", "other")  # "job-failed": any other error (worker/errors.py)
VERDICTS = ("ready", "invalid", "interrupted")
# From half a second (a small job's mask) to a day (a large curve on a slow GPU).
BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
QUEUE_READ_EVERY_SECONDS = 5.0  # Prometheus scrapes every 15 s or more
QUEUE_WAIT_SECONDS = 1.0  # the longest a scrape waits for the broker; it gets the last reading otherwise

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
PHASE_SECONDS = Histogram(
    "mcu_worker_phase_duration_seconds",
    "Duration of a job's phase, when it completed",
    ["phase", "base_method", "architecture"],
    buckets=BUCKETS,
    registry=REGISTRY,
)
IN_PROGRESS = Gauge("mcu_worker_jobs_in_progress", "Jobs this worker is running", ["task"], registry=REGISTRY)
FAILURES = Counter(
    "mcu_worker_job_failures", "Jobs that ended failed, by problem type", ["task", "problem"], registry=REGISTRY
)
CUDA_PEAK = Gauge(
    "mcu_worker_job_device_memory_peak_bytes",
    "CUDA memory allocated at the peak of this worker's last job of the task (torch.cuda.max_memory_allocated)",
    ["task"],
    registry=REGISTRY,
)
VALIDATIONS = Counter("mcu_worker_model_validations", "Model validations by verdict", ["outcome"], registry=REGISTRY)
for _task in (RUN, MATERIALIZE, VALIDATE):  # every series exists from the start: rate() and alerts see zeros
    IN_PROGRESS.labels(_task)
for _task in (RUN, MATERIALIZE):
    for _problem in PROBLEMS:
        FAILURES.labels(_task, _problem)
for _verdict in VERDICTS:
    VALIDATIONS.labels(_verdict)


@contextmanager
def running(task: str) -> Iterator[None]:
    """A job of `task` in progress; with CUDA in use, the peak of device memory it allocated is kept."""
    if torch.cuda.is_initialized():  # else the first job initialises CUDA: its peak counts from zero
        torch.cuda.reset_peak_memory_stats()
    try:
        with IN_PROGRESS.labels(task).track_inprogress():
            yield
    finally:
        if torch.cuda.is_initialized():
            CUDA_PEAK.labels(task).set(torch.cuda.max_memory_allocated())


def job_labels(services: Services, request: DeletionRequest) -> dict[str, str]:
    try:  # a metric never fails a job
        with services.factory() as session:
            architecture = session.scalar(select(Model.architecture).where(Model.id == request.model_id))
    except Exception:  # noqa: BLE001
        architecture = None
    return {"base_method": request.base_method, "architecture": architecture or "unknown"}


def observe_curve(services: Services, request: DeletionRequest, timings: dict[str, float], resumed: bool) -> None:
    """The curve job's phases; a base phase skipped on resume (θ_p was stored) is no measurement of it."""
    labels = job_labels(services, request)
    for phase in CURVE_PHASES:
        if phase in timings and not (resumed and phase == "base"):
            PHASE_SECONDS.labels(phase=phase, **labels).observe(timings[phase])


@contextmanager
def phase(services: Services, request: DeletionRequest, name: str) -> Iterator[None]:
    """Observed when the block completes: a phase that failed or was cancelled measured nothing."""
    started = time.perf_counter()
    yield
    PHASE_SECONDS.labels(phase=name, **job_labels(services, request)).observe(time.perf_counter() - started)


def problem_label(problem: dict[str, str]) -> str:
    """A failed job's problem type (its slug), or "other" for one this module does not know."""
    slug = problem["type"].rsplit("/", 1)[-1]
    return slug if slug in PROBLEMS else "other"


def count_validation(outcome: str) -> None:
    VALIDATIONS.labels(outcome).inc()


class ScrapeTime(Collector):
    """Read at scrape time: the process's peak RSS, and the gpu queue's depth where the broker can tell
    (Redis; the embedded broker cannot). The broker is read in a thread, at most every
    QUEUE_READ_EVERY_SECONDS: a scrape waits QUEUE_WAIT_SECONDS at most, and meanwhile gets the last reading."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher, self.read_at = dispatcher, -QUEUE_READ_EVERY_SECONDS
        self.depth: int | None = None
        self.reading: threading.Thread | None = None
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        # ru_maxrss: KiB on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        yield GaugeMetricFamily(
            "mcu_worker_process_peak_rss_bytes", "Peak resident memory of this worker since it started", value=peak
        )
        with self.lock:
            if self.reading is None and time.monotonic() - self.read_at >= QUEUE_READ_EVERY_SECONDS:
                self.read_at, self.reading = time.monotonic(), threading.Thread(target=self._read, daemon=True)
                self.reading.start()
            reading = self.reading
        if reading is not None:
            reading.join(QUEUE_WAIT_SECONDS)
        if self.depth is not None:
            yield GaugeMetricFamily("mcu_queue_depth", "Tasks waiting in the broker's gpu queue", value=self.depth)

    def _read(self) -> None:
        try:
            self.depth = self.dispatcher.queue_depth()  # None when unknown or unreachable: the gauge is left out
        finally:
            with self.lock:
                self.reading = None


def serve_metrics(settings: Settings) -> WSGIServer | None:
    """The metrics endpoint on all interfaces at MCU_WORKER_METRICS_PORT (a container's port must be reachable
    from outside it); nothing when the setting is unset. Each worker process on a host needs its own port."""
    port = settings.worker_metrics_port
    if port is None:
        return None
    served = CollectorRegistry()  # this module's metrics and those read at scrape time
    served.register(REGISTRY)
    served.register(ScrapeTime(Dispatcher(settings.resolved_broker_url)))
    try:
        server, _ = start_http_server(port, registry=served)
    except OSError as error:
        raise RuntimeError(
            f"the worker's metrics endpoint cannot listen on MCU_WORKER_METRICS_PORT={port} ({error}): every worker "
            "process on a host needs a port of its own"
        ) from error
    return server
