"""Logs and traces of real processes (docs/telemetry.md): one deletion request is one trace from the API's
POST through the Celery task headers to the worker's phases and the publication; every worker line of its
job carries its request id; a job that fails logs its traceback once, and the API shows none of it.

A stack of its own (its Postgres schema, Redis database and bucket) with JSON logs and the traces file, and
the reconciler's re-send left at its default: a run task re-sent while the first waits would start a trace
of its own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.digits import DigitsUpload
from tests.support import redis_url, wait_for, wait_for_state

from .conftest import FAST_JOB, Stack, own_stack, register, submit

BROKER_URL = redis_url("own-stack")
PHASES = ["mask", "base", "curve", "evaluate", "materialize", "evidence"]  # evidence: attacks on the published point


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("telemetry")
    settings = {
        "MCU_REQUEUE_AFTER_SECONDS": "300",
        "MCU_LOG_FORMAT": "json",
        "MCU_TRACES_FILE": str(data_dir / "traces.jsonl"),
    }
    yield from own_stack(data_dir, s3_endpoint, "telemetry", BROKER_URL, settings)


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a process's log (Celery's start-up banner, printed to stdout, is not one)."""
    lines = []
    for text in path.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


# Not a job's lines: Celery's "received" (logged before a task starts, between the request's tasks), and the
# reconciler's rounds (a thread of their own, about every request).
NOT_THE_JOB = ("celery.worker.strategy", "worker.reconciler", "worker.sweeper")


def job_lines(lines: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    """The worker's lines from the first that names the request to the last, less those NOT_THE_JOB."""
    marked = [i for i, line in enumerate(lines) if line.get("request_id") == request_id]
    assert marked, f"no worker line carries {request_id}"
    return [line for line in lines[marked[0] : marked[-1] + 1] if line["logger"] not in NOT_THE_JOB]


def spans_of(stack: Stack, trace_id: str) -> list[dict[str, Any]]:
    path = stack.data_dir / "traces.jsonl"
    if not path.exists():
        return []
    return [span for span in map(json.loads, path.read_text().splitlines()) if span["trace_id"] == trace_id]


def test_one_request_is_one_trace_from_the_post_to_the_publication(traced: Stack, digits_upload: DigitsUpload) -> None:
    with traced.client() as client:
        _, model_id = register(client, digits_upload)
        request_id = submit(client, model_id, forget={"classes": [3]}, config=FAST_JOB, selection="auto")["id"]
        wait_for_state(client, request_id, ("succeeded",))
    worker_log = traced.data_dir / "worker-1.log"
    wait_for(
        lambda: re.search(rb"Task mcu.cleanup_request\[[0-9a-f-]+\] succeeded", worker_log.read_bytes()), 60, "clean-up"
    )

    job = job_lines(log_lines(worker_log), request_id)
    unmarked = [line for line in job if line.get("request_id") != request_id]
    assert not unmarked, unmarked
    messages = " ".join(line["message"] for line in job)
    for task in ("mcu.run_request", "mcu.materialize_selection", "mcu.cleanup_request"):
        assert re.search(rf"Task {task}\[[0-9a-f-]+\] succeeded", messages), task
    trace_ids = {line.get("trace_id") for line in job}
    assert len(trace_ids) == 1 and None not in trace_ids, trace_ids
    (trace_id,) = trace_ids
    api_lines = log_lines(traced.data_dir / "api.log")
    (post,) = [line for line in api_lines if line.get("trace_id") == trace_id and line["logger"] == "uvicorn.access"]
    assert '"POST /v1/deletion-requests HTTP/1.1" 202' in post["message"], post
    polls = [line for line in api_lines if f"/v1/deletion-requests/{request_id} " in line["message"]]
    assert polls and all(line.get("request_id") == request_id for line in polls)  # the id in the path, bound

    def whole_trace() -> list[dict[str, Any]] | None:
        """The trace once every span of it is written (each process writes its batch every 5 s)."""
        spans = spans_of(traced, trace_id)
        ids = {span["span_id"] for span in spans}
        names = {span["name"] for span in spans}
        done = {"publish", "run/mcu.cleanup_request"} <= names
        return spans if done and all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"]) else None

    spans = wait_for(whole_trace, 30, f"the spans of trace {trace_id} in {traced.data_dir}", interval=0.5)
    by_id = {span["span_id"]: span for span in spans}
    (root,) = [span for span in spans if span["parent_span_id"] is None]
    assert (root["service"], root["kind"], root["name"]) == ("mcu-api", "SERVER", "POST /v1/deletion-requests")
    assert root["attributes"]["mcu.request_id"] == request_id

    def named(name: str) -> dict[str, Any]:
        (span,) = [span for span in spans if span["name"] == name]
        return span

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parent_span_id"]]

    send = named("send mcu.run_request")  # in the API, after the POST's transaction committed
    assert (send["service"], send["kind"], send["attributes"]["mcu.request_id"]) == ("mcu-api", "PRODUCER", request_id)
    run = named("run/mcu.run_request")  # in the worker, from the context the message's headers carried
    assert (run["service"], run["kind"], run["attributes"]["mcu.request_id"]) == ("mcu-worker", "CONSUMER", request_id)
    assert parent(run) is send and parent(send)["service"] == "mcu-api"
    phases = sorted((span for span in spans if span["name"].startswith("phase ")), key=lambda s: s["start_ns"])
    assert [span["attributes"]["mcu.phase"] for span in phases][:4] == PHASES[:4]
    assert {span["attributes"]["mcu.phase"] for span in phases} == set(PHASES)
    materialize = named("run/mcu.materialize_selection")
    assert parent(materialize)["name"] == "send mcu.materialize_selection" and parent(parent(materialize)) is run
    assert all(parent(span) in (run, materialize) for span in phases)
    assert parent(named("publish")) is materialize
    # The libraries' spans are in it too: the database from both processes, the object store from the worker.
    databases = {span["service"] for span in spans if "db.system" in span["attributes"]}
    assert databases == {"mcu-api", "mcu-worker"}
    assert any(span["attributes"].get("rpc.service") == "S3" for span in spans)


def test_a_failed_job_logs_its_traceback_once_and_the_api_none(traced: Stack, digits_upload: DigitsUpload) -> None:
    with traced.client() as client:
        _, model_id = register(client, digits_upload)
        sha256 = client.get(f"/v1/models/{model_id}/versions").json()["items"][0]["sha256"]
        cached = traced.data_dir / "cache" / sha256  # the worker's copy of the weights, read without a check
        cached.parent.mkdir(exist_ok=True)
        cached.write_bytes(b"these are not safetensors")
        try:
            request_id = submit(client, model_id, forget={"classes": [3]}, config=FAST_JOB)["id"]
            failed = wait_for_state(client, request_id, ("failed",))
        finally:
            cached.unlink(missing_ok=True)  # the next job fetches the weights from the store again

    assert failed["error"]["type"].endswith("/job-failed") and "deserializing" in failed["error"]["detail"]
    shown = json.dumps(failed)
    assert "Traceback" not in shown and 'File "' not in shown
    lines = [line for line in log_lines(traced.data_dir / "worker-1.log") if line.get("request_id") == request_id]
    tracebacks = [line for line in lines if "exception" in line]
    assert len(tracebacks) == 1, tracebacks
    (logged,) = tracebacks
    assert logged["level"] == "error" and logged["exception"].startswith("Traceback (most recent call last)")
    assert "SafetensorError" in logged["exception"] and logged["trace_id"]
    api_lines = log_lines(traced.data_dir / "api.log")
    assert not [line for line in api_lines if "exception" in line], "the API logged a traceback"
