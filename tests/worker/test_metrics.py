"""The worker's Prometheus endpoint (worker/metrics.py), started as `mcu worker` starts it and scraped over HTTP
while real jobs run in-process on the embedded default: phase histograms, jobs in progress, failures by problem
type (logged once, with a traceback only when the cause is unknown), validations, and the broker's queue depth.

The metrics are the process's: every assertion compares a scrape after an action with one before it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from domain.tasks import RUN_REQUEST
from settings import Settings
from tests.support import QUICK_EVIDENCE, free_port, redis_url
from worker import artifacts, jobs, metrics
from worker.metrics import serve_metrics
from worker.services import Services, connect
from worker.validation import validate_model

from ..api.conftest import upload_dataset, upload_model

FAST = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}, "evidence": QUICK_EVIDENCE}
ACK = "erasure criterion not met: a metrics test"
QUEUE_BROKER = redis_url("queue-metrics")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    server = serve_metrics(Settings(data_dir=tmp_path / "endpoint", worker_metrics_port=free_port()))
    assert server is not None
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()


class Env:
    def __init__(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path, bootstrap_api_key="k")
        self.client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
        self.services: Services = connect(settings)
        self.model_id = upload_model(self.client, upload_dataset(self.client).json()["id"]).json()["id"]

    def curve(self, sample: str) -> dict:
        """A request for one sample, trained up to its curve."""
        body = {"model_id": self.model_id, "config": FAST, "forget": {"sample_ids": [sample]}}
        request_id = self.client.post("/v1/deletion-requests", json=body).json()["id"]
        jobs.run_request(self.services, request_id)
        return self.get(request_id)

    def select(self, request_id: str) -> None:
        response = self.client.post(
            f"/v1/deletion-requests/{request_id}/selection", json={"t": 0.5, "acknowledge": ACK}
        )
        assert response.status_code == 202, response.text

    def get(self, request_id: str) -> dict:
        return self.client.get(f"/v1/deletion-requests/{request_id}").json()


def test_a_published_request_shows_its_phase_durations_and_nothing_stays_in_progress(
    tmp_path: Path, endpoint: str
) -> None:
    env = Env(tmp_path)
    before = scrape(endpoint)
    validate_model(env.services, env.model_id)
    request = env.curve("s1")
    assert request["state"] == "awaiting_selection"
    env.select(request["id"])
    jobs.materialize_selection(env.services, request["id"])
    assert env.get(request["id"])["state"] == "succeeded"

    after = scrape(endpoint)
    labels = {"base_method": request["base_method"], "architecture": "mlp"}
    for phase in ("mask", "base", "curve", "evaluate", "materialize", "publish"):
        name = "mcu_worker_phase_duration_seconds"
        count = value(after, f"{name}_count", phase=phase, **labels) - value(
            before, f"{name}_count", phase=phase, **labels
        )
        assert count == 1, phase
        assert value(after, f"{name}_sum", phase=phase, **labels) > value(before, f"{name}_sum", phase=phase, **labels)
        assert value(after, f"{name}_bucket", phase=phase, le="+Inf", **labels) == value(
            after, f"{name}_count", phase=phase, **labels
        )
    assert not [key for key in after if key[0].startswith("mcu_worker_phase") and ("phase", "total") in key[1]]
    for task in ("run_request", "materialize_selection", "validate_model"):
        assert ("mcu_worker_jobs_in_progress", (("task", task),)) in after
        assert value(after, "mcu_worker_jobs_in_progress", task=task) == 0
    ready = "mcu_worker_model_validations_total"
    assert value(after, ready, outcome="ready") == value(before, ready, outcome="ready") + 1
    assert value(after, "mcu_worker_process_peak_rss_bytes") > 10 << 20  # a process with torch loaded
    assert not [key for key in after if key[0] == "mcu_queue_depth"]  # the embedded broker cannot tell


def test_failed_jobs_are_counted_by_problem_type_and_logged_once(
    tmp_path: Path, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = Env(tmp_path)
    validate_model(env.services, env.model_id)
    failures = "mcu_worker_job_failures_total"
    body = {"model_id": env.model_id, "config": FAST, "forget": {"sample_ids": ["s2"]}}
    corrupt = env.client.post("/v1/deletion-requests", json=body).json()["id"]
    artifacts.save(env.services, corrupt, artifacts.THETA_P, b"not safetensors")  # a stored θ_p, damaged
    missing = env.curve("s3")["id"]
    env.select(missing)
    env.services.store.delete_prefix(f"requests/{missing}")  # its curve's artifacts are gone
    before = scrape(endpoint)

    with caplog.at_level(logging.INFO):
        jobs.run_request(env.services, corrupt)
        jobs.materialize_selection(env.services, missing)

    after = scrape(endpoint)
    unexpected = env.get(corrupt)
    assert unexpected["state"] == "failed" and unexpected["error"]["type"].endswith("/job-failed")
    assert "Traceback" not in json.dumps(unexpected["error"])  # the log has it; the API does not
    expected = env.get(missing)
    assert expected["state"] == "failed" and expected["error"]["type"].endswith("/artifact-missing")
    for task, problem in (("run_request", "job-failed"), ("materialize_selection", "artifact-missing")):
        assert (
            value(after, failures, task=task, problem=problem)
            == value(before, failures, task=task, problem=problem) + 1
        )
    assert sum(after.get(k, 0) - v for k, v in before.items() if k[0] == failures) == 2
    for task in ("run_request", "materialize_selection"):
        assert value(after, "mcu_worker_jobs_in_progress", task=task) == 0

    def lines(request_id: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if request_id in r.getMessage() and "failed" in r.getMessage()]

    [traced] = lines(corrupt)
    assert traced.levelno == logging.ERROR and traced.exc_info is not None and "(job-failed)" in traced.getMessage()
    assert [r for r in caplog.records if r.exc_info] == [traced]  # no other line carries a traceback
    [plain] = lines(missing)
    assert plain.levelno == logging.WARNING and plain.exc_info is None and "(artifact-missing)" in plain.getMessage()


def test_a_job_that_raises_out_of_its_task_leaves_nothing_in_progress(endpoint: str) -> None:
    # What a database outage while storing a curve does: the task raises, and Celery redelivers it later.
    with pytest.raises(ConnectionError), metrics.running(metrics.RUN):
        assert value(scrape(endpoint), "mcu_worker_jobs_in_progress", task="run_request") == 1
        raise ConnectionError("the database went away")
    assert value(scrape(endpoint), "mcu_worker_jobs_in_progress", task="run_request") == 0


def test_the_queue_depth_is_shown_where_the_broker_tells(tmp_path: Path) -> None:
    redis.Redis.from_url(QUEUE_BROKER).flushdb()
    settings = Settings(data_dir=tmp_path, broker_url=QUEUE_BROKER, worker_metrics_port=free_port())
    server = serve_metrics(settings)
    assert server is not None
    try:
        services = connect(Settings(data_dir=tmp_path, broker_url=QUEUE_BROKER))
        for request_id in ("dr_a", "dr_b"):
            assert services.dispatcher.send(RUN_REQUEST, request_id)
        samples = scrape(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")
        assert value(samples, "mcu_queue_depth") == 2
        with pytest.raises(RuntimeError, match="MCU_WORKER_METRICS_PORT"):  # a second worker on the same port
            serve_metrics(settings)
    finally:
        server.shutdown()
        server.server_close()
        redis.Redis.from_url(QUEUE_BROKER).flushdb()


def test_no_endpoint_without_a_port(tmp_path: Path) -> None:
    assert serve_metrics(Settings(data_dir=tmp_path)) is None
