"""A real `mcu worker` process with MCU_WORKER_METRICS_PORT serves its Prometheus metrics: after a job, the
phase histograms of its curve, and nothing left in progress. A stack of its own (the embedded default), so the
shared stacks' workers keep running without an endpoint."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import upload_dataset, upload_model
from tests.support import free_port, wait_for, wait_for_state, wait_model

from .conftest import FAST_JOB, Stack, base_env, submit


def test_a_worker_process_serves_the_phase_histograms_of_its_job(tmp_path: Path) -> None:
    port = free_port()
    stack = Stack(base_env(tmp_path) | {"MCU_WORKER_METRICS_PORT": str(port)}, tmp_path)

    def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    try:
        stack.start_api()
        stack.start_worker()
        with stack.client() as client:
            model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
            wait_model(client, model_id)
            request = submit(client, model_id, forget={"sample_ids": ["s1"]}, config=FAST_JOB)
            wait_for_state(client, request["id"], ("awaiting_selection",))
        # The job leaves "in progress" just after its state changes: wait for the gauge.
        idle = ("mcu_worker_jobs_in_progress", frozenset({("task", "run_request")}))
        after = wait_for(lambda: (s := samples()).get(idle) == 0 and s, 10, "the job to leave the in-progress gauge")
        labels = {("base_method", request["base_method"]), ("architecture", "mlp")}
        for phase in ("mask", "base", "curve", "evaluate"):
            key = ("mcu_worker_phase_duration_seconds_count", frozenset(labels | {("phase", phase)}))
            assert after.get(key) == 1, (phase, sorted(k for k in after if "phase" in k[0]))
        ready = ("mcu_worker_model_validations_total", frozenset({("outcome", "ready")}))
        assert after.get(ready) == 1
    finally:
        stack.stop()
