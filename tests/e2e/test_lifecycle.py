"""A request's life over real processes: signed callbacks and their retries, cancellation at every stage,
automatic selection, a second erasure on version 2, re-delivered tasks, racing selections, and the
embedded default with no servers at all."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest
import redis
from standardwebhooks import Webhook

from cli.digits import DigitsUpload
from domain.tasks import MATERIALIZE_SELECTION, RUN_REQUEST
from storage import S3Store
from tests.support import wait_for_state
from worker.artifacts import artifact_key
from worker.dispatch import Dispatcher

from .conftest import (
    FAST_JOB,
    REDIS_URL,
    WEBHOOK_SECRET,
    Stack,
    add_model,
    free_port,
    register,
    submit,
    wait_for,
)

# Small batches over the whole retain set: an epoch takes about a second, so a cancel lands mid-training.
SLOW_CURVE = {"epochs": 20, "batch_size": 8, "retain_ratio": 1.0, "grid_points": 5, "base": {"epochs": 1}}
PROBLEM_JSON = "application/problem+json"


# --- a loopback receiver for callbacks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.monotonic()
    status: int  # what the receiver answered

    @property
    def type(self) -> str:
        return json.loads(self.body)["type"]


class CallbackReceiver:
    """An HTTP server on 127.0.0.1 that records every POST; chosen deliveries are answered 500 a few times."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._failures: dict[tuple[str, str], int] = {}  # (path, event type) -> 500s still to answer
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status = receiver._answer(self.path, body)
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), body, time.monotonic(), status)
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, path: str, body: bytes) -> int:
        try:
            kind = json.loads(body)["type"]
        except (ValueError, KeyError):
            return 400
        with self._lock:
            left = self._failures.get((path, kind), 0)
            if left:
                self._failures[(path, kind)] = left - 1
                return 500
        return 200

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{name}-{secrets.token_hex(4)}"

    def fail_first(self, url: str, event_type: str, attempts: int) -> None:
        with self._lock:
            self._failures[(httpx.URL(url).path, event_type)] = attempts

    def received(self, url: str, event_type: str | None = None) -> list[Delivery]:
        path = httpx.URL(url).path
        with self._lock:
            return [d for d in self.deliveries if d.path == path and event_type in (None, d.type)]

    def wait(self, url: str, event_type: str, count: int = 1, timeout: float = 30) -> list[Delivery]:
        wait_for(lambda: len(self.received(url, event_type)) >= count, timeout, f"{count} × {event_type} at {url}")
        return self.received(url, event_type)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def callbacks() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def verified(delivery: Delivery, request_id: str, state: str) -> dict:
    """The Standard Webhooks signature holds and the body names the request and its state."""
    payload = Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
    assert payload["id"] == delivery.headers["webhook-id"]
    assert payload["type"] == f"deletion_request.{state}"
    assert datetime.fromisoformat(payload["created_at"]).tzinfo is not None
    assert payload["data"]["id"] == request_id and payload["data"]["state"] == state
    return payload


# --- shared helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_id(stack: Stack, digits_upload: DigitsUpload) -> str:
    with stack.client() as client:
        return register(client, digits_upload)[0]


@pytest.fixture
def model_id(stack: Stack, dataset_id: str, digits_upload: DigitsUpload) -> str:
    """A fresh model (version 1) on the module's digits dataset."""
    with stack.client() as client:
        return add_model(client, dataset_id, digits_upload)


def events(client: httpx.Client, request_id: str) -> list[dict]:
    return client.get(f"/v1/deletion-requests/{request_id}/events", params={"page_size": 500}).json()["items"]


def states_of(trail: list[dict]) -> list[str]:
    return [e["state"] for e in trail if e["type"] == "state_changed"]


def at(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"])


def wait_event(client: httpx.Client, request_id: str, event_type: str, timeout: float = 30) -> dict:
    found = wait_for(
        lambda: [e for e in events(client, request_id) if e["type"] == event_type],
        timeout,
        f"a {event_type} event of {request_id}",
        interval=0.2,
    )
    return found[0]  # type: ignore[index]


def artifacts_in_bucket(stack: Stack, request_id: str) -> list[str]:
    """Every object left under requests/<id>/ in the stack's bucket."""
    bucket, endpoint = stack.env["MCU_STORAGE_URL"].removeprefix("s3://"), stack.env["MCU_S3_ENDPOINT_URL"]
    store = S3Store(bucket, endpoint_url=endpoint)
    known = [
        key
        for key in (artifact_key(request_id, name) for name in ("theta_p", "theta_c", "checkpoint"))
        if store.exists(key)
    ]
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=f"requests/{request_id}/")
    return sorted({*known, *(o["Key"] for o in listing.get("Contents", []))})


def select(client: httpx.Client, request_id: str, t: float) -> httpx.Response:
    return client.post(f"/v1/deletion-requests/{request_id}/selection", json={"t": t})


def cancel(client: httpx.Client, request_id: str) -> httpx.Response:
    return client.post(f"/v1/deletion-requests/{request_id}/cancel")


def versions(client: httpx.Client, model_id: str) -> list[dict]:
    return client.get(f"/v1/models/{model_id}/versions").json()["items"]


# --- 1. callbacks ------------------------------------------------------------------------------------------


def test_callbacks_are_signed_and_retried_with_backoff(
    stack: Stack, callbacks: CallbackReceiver, model_id: str
) -> None:
    url = callbacks.url("flow")
    callbacks.fail_first(url, "deletion_request.awaiting_selection", 2)  # attempts 1 and 2 answered 500
    with stack.client() as client:
        request = submit(
            client, model_id, forget={"classes": [3]}, config=FAST_JOB, callback_url=url, external_id="GDPR-CB-1"
        )
        waiting = wait_for_state(client, request["id"], ("awaiting_selection",))
        first, second, third = callbacks.wait(url, "deletion_request.awaiting_selection", 3)
        assert [d.status for d in (first, second, third)] == [500, 500, 200]
        # The retries went through the control queue with countdowns of 2**attempt seconds: 2 s, then 4 s.
        backoff = (second.received_at - first.received_at, third.received_at - second.received_at)
        assert 1.8 <= backoff[0] < backoff[1] and 3.8 <= backoff[1] < 20, backoff
        bodies = [verified(d, request["id"], "awaiting_selection") for d in (first, second, third)]
        assert len({d.headers["webhook-id"] for d in (first, second, third)}) == 1  # one message, retried
        assert bodies[0]["data"]["external_id"] == "GDPR-CB-1" and bodies[0]["data"]["model_id"] == model_id

        assert select(client, request["id"], waiting["curve"]["recommended_t"]).status_code == 202
        wait_for_state(client, request["id"], ("succeeded",))
        (done,) = callbacks.wait(url, "deletion_request.succeeded")
        succeeded = verified(done, request["id"], "succeeded")["data"]
        # Recipients of the model (GDPR Art. 19) learn the new version and where the evidence is.
        assert (
            succeeded["model_version"]
            == client.get(f"/v1/deletion-requests/{request['id']}").json()["selection"]["model_version"]
        )
        assert succeeded["report_url"] == f"/v1/deletion-requests/{request['id']}/report"
        assert done.headers["webhook-id"] != first.headers["webhook-id"]

        def attempts() -> list[tuple]:
            return [
                (
                    e["state"],
                    e["detail"]["attempt"],
                    e["detail"]["status"],
                    e["detail"]["delivered"],
                    e["detail"]["message_id"],
                    e["detail"]["url"],
                )
                for e in events(client, request["id"])
                if e["type"] == "callback_attempt"
            ]

        wait_for(lambda: len(attempts()) == 4, 10, "four callback_attempt events")
        recorded = attempts()
    awaiting_id, succeeded_id = first.headers["webhook-id"], done.headers["webhook-id"]
    assert recorded == [
        ("awaiting_selection", 1, 500, False, awaiting_id, url),
        ("awaiting_selection", 2, 500, False, awaiting_id, url),
        ("awaiting_selection", 3, 200, True, awaiting_id, url),
        ("succeeded", 1, 200, True, succeeded_id, url),
    ]
    assert len(callbacks.received(url)) == 4  # nothing more was sent


def test_callback_to_a_host_off_the_allow_list_is_refused(stack: Stack, model_id: str) -> None:
    with stack.client() as client:
        response = client.post(
            "/v1/deletion-requests",
            json={"model_id": model_id, "forget": {"classes": [3]}, "callback_url": "http://169.254.169.254/latest"},
        )
        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        problem = response.json()
        assert problem["status"] == 422 and "callback_url" in problem["detail"]
        assert [e["loc"] for e in problem["errors"]] == [["callback_url"]]
        assert client.get("/v1/deletion-requests", params={"model_id": model_id}).json()["items"] == []


# --- 2. cancellation ---------------------------------------------------------------------------------------


def test_cancel_queued_awaiting_unclaimed_and_running_requests(
    stack: Stack, callbacks: CallbackReceiver, model_id: str
) -> None:
    urls = {name: callbacks.url(f"cancel-{name}") for name in ("awaiting", "selected", "queued", "running")}
    with stack.client() as client:
        # Two requests reach awaiting_selection while the worker is free.
        awaiting = submit(client, model_id, forget={"classes": [1]}, config=FAST_JOB, callback_url=urls["awaiting"])
        selected = submit(client, model_id, forget={"classes": [2]}, config=FAST_JOB, callback_url=urls["selected"])
        for request in (awaiting, selected):
            wait_for_state(client, request["id"], ("awaiting_selection",))

        # A slow job keeps the only worker busy in its curve phase.
        running = submit(client, model_id, forget={"classes": [3]}, config=SLOW_CURVE, callback_url=urls["running"])

        def curve_epoch(at_least: int) -> dict | None:
            body = client.get(f"/v1/deletion-requests/{running['id']}").json()
            progress = body["progress"]
            return body if progress["phase"] == "curve" and (progress.get("epoch") or 0) >= at_least else None

        in_curve = wait_for(lambda: curve_epoch(2), 120, "curve training to reach epoch 2", interval=0.05)["progress"]
        # One bar for the whole job: past mask and base, short of the end, and an estimate of the time left.
        assert 0.0 < in_curve["overall"] < 1.0 and in_curve["eta_seconds"] > 0, in_curve

        # Behind it, a queued request and a selection no worker has taken yet: both are cancelled at once.
        queued = submit(client, model_id, forget={"classes": [4]}, config=FAST_JOB, callback_url=urls["queued"])
        assert queued["state"] == "queued"
        response = cancel(client, queued["id"])
        assert response.status_code == 202 and response.json()["state"] == "cancelled"
        assert select(client, selected["id"], 0.5).json()["state"] == "materializing"
        response = cancel(client, selected["id"])
        assert response.status_code == 202 and response.json()["state"] == "cancelled"
        response = cancel(client, awaiting["id"])
        assert response.status_code == 202 and response.json()["state"] == "cancelled"

        # The running one: cancelling now, cancelled within one batch.
        epoch = curve_epoch(2)["progress"]["epoch"]  # type: ignore[index]
        wait_for(lambda: curve_epoch(epoch + 1), 30, "the next curve epoch", interval=0.02)
        started = time.monotonic()
        next_epoch = wait_for(lambda: curve_epoch(epoch + 2), 30, "another curve epoch", interval=0.02)
        epoch_seconds = time.monotonic() - started  # progress is written at most once a second: an estimate
        response = cancel(client, running["id"])
        assert response.status_code == 202 and response.json()["state"] == "cancelling"
        at_cancel = response.json()["progress"]
        assert at_cancel["phase"] == "curve" and at_cancel["epoch"] >= next_epoch["progress"]["epoch"]  # type: ignore[index]
        cancelled = wait_for_state(client, running["id"], ("cancelled",), timeout=15)
        assert cancel(client, running["id"]).status_code == 409  # finished

        trail = events(client, running["id"])
        assert states_of(trail) == ["queued", "running", "cancelling", "cancelled"]
        cancelling_at, cancelled_at = (
            at(e) for e in trail if e["type"] == "state_changed" and e["state"] in ("cancelling", "cancelled")
        )
        assert (cancelled_at - cancelling_at).total_seconds() < max(1.5, epoch_seconds), (epoch_seconds, trail)
        assert cancelled["progress"]["phase"] == "curve"
        assert cancelled["progress"]["epoch"] - at_cancel["epoch"] <= 1
        assert cancelled["finished_at"] is not None and cancelled["curve"] is None
        deleted = wait_event(client, running["id"], "artifacts_deleted")  # recorded just after the state
        assert deleted["detail"]["objects"] >= 2  # θ_p and the epoch checkpoint
        assert artifacts_in_bucket(stack, running["id"]) == []
        verified(
            callbacks.wait(url=urls["running"], event_type="deletion_request.cancelled")[0], running["id"], "cancelled"
        )

        # The worker, free again, drops the stale tasks and deletes what the other requests left.
        for request in (awaiting, selected):
            assert wait_event(client, request["id"], "artifacts_deleted")["detail"]["objects"] == 3
            assert artifacts_in_bucket(stack, request["id"]) == []
        for request, url in ((awaiting, urls["awaiting"]), (selected, urls["selected"]), (queued, urls["queued"])):
            verified(callbacks.wait(url, "deletion_request.cancelled")[0], request["id"], "cancelled")
        broker = redis.Redis.from_url(REDIS_URL)
        wait_for(lambda: broker.llen("gpu") == 0, 30, "the stale run and materialize tasks to be taken")
        time.sleep(1)  # and to run: each ends at its claim
        for request in (awaiting, selected, queued):
            body = client.get(f"/v1/deletion-requests/{request['id']}").json()
            assert body["state"] == "cancelled", body
        assert states_of(events(client, queued["id"])) == ["queued", "cancelled"]
        assert states_of(events(client, selected["id"])) == [
            "queued",
            "running",
            "awaiting_selection",
            "materializing",
            "cancelled",
        ]
        assert [v["version"] for v in versions(client, model_id)] == [1]  # nothing was published
        assert client.get(f"/v1/models/{model_id}").json()["current_version"] == 1


# --- 3 and 5. automatic selection; re-delivered tasks ------------------------------------------------------


@pytest.fixture(scope="module")
def auto_request(stack: Stack, dataset_id: str, digits_upload: DigitsUpload) -> dict:
    """A request with selection: auto, run to succeeded."""
    with stack.client() as client:
        model_id = add_model(client, dataset_id, digits_upload)
        request = submit(client, model_id, forget={"subject_ids": ["w3", "w11"]}, config=FAST_JOB, selection="auto")
        done = wait_for_state(client, request["id"], ("succeeded",))
        wait_event(client, request["id"], "artifacts_deleted")  # the job's last act, just after the state
        return done


def test_auto_selection_publishes_the_recommended_point(stack: Stack, auto_request: dict) -> None:
    selection, curve = auto_request["selection"], auto_request["curve"]
    assert selection["selected_by"] == "auto"
    assert selection["t"] == curve["recommended_t"] and selection["model_version"] == 2
    with stack.client() as client:
        published = versions(client, auto_request["model_id"])[1]
        trail = events(client, auto_request["id"])
    assert (published["version"], published["t"], published["deletion_request_id"]) == (
        2,
        curve["recommended_t"],
        auto_request["id"],
    )
    assert states_of(trail) == ["queued", "running", "awaiting_selection", "materializing", "succeeded"]
    assert [e["detail"] for e in trail if e["type"] == "state_changed" and e["state"] == "materializing"] == [
        {"t": curve["recommended_t"], "selected_by": "auto"}
    ]


def _finished_tasks(stack: Stack, task_name: str) -> int:
    pattern = re.compile(rf"Task {re.escape(task_name)}\[[0-9a-f-]+\] succeeded")
    return sum(len(pattern.findall(log.read_text(errors="replace"))) for log in stack.data_dir.glob("worker-*.log"))


def test_redelivered_tasks_of_a_finished_request_change_nothing(stack: Stack, auto_request: dict) -> None:
    request_id, model_id = auto_request["id"], auto_request["model_id"]
    with stack.client() as client:

        def snapshot() -> tuple:
            return (
                client.get(f"/v1/deletion-requests/{request_id}").json(),
                versions(client, model_id),
                client.get(f"/v1/models/{model_id}").json(),
                events(client, request_id),
            )

        before = snapshot()
        dispatcher = Dispatcher(stack.env["MCU_BROKER_URL"])
        for task in (RUN_REQUEST, MATERIALIZE_SELECTION):
            done = _finished_tasks(stack, task)
            assert dispatcher.send(task, request_id)
            wait_for(lambda task=task, done=done: _finished_tasks(stack, task) > done, 30, f"the worker to run {task}")
        time.sleep(2)
        after = snapshot()
    assert after == before
    assert len(after[1]) == 2 and after[0]["state"] == "succeeded"


# --- 4. a second erasure, on version 2 ---------------------------------------------------------------------


def test_second_request_runs_on_version_2_without_the_erased_rows(
    stack: Stack, model_id: str, digits_upload: DigitsUpload
) -> None:
    train_labels = digits_upload.train_labels
    threes = [f"d{row}" for row, label in enumerate(train_labels) if label == 3]
    fives = [f"d{row}" for row, label in enumerate(train_labels) if label == 5][:10]
    with stack.client() as client:
        first = submit(client, model_id, forget={"classes": [3]}, config=FAST_JOB, selection="auto")
        assert first["forget_count"] == len(threes)
        wait_for_state(client, first["id"], ("succeeded",))

        # Naming only rows the first request erased: nothing to do, and the answer says who erased them.
        response = client.post(
            "/v1/deletion-requests", json={"model_id": model_id, "forget": {"sample_ids": threes[:5]}}
        )
        assert response.status_code == 409
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert response.json()["type"].endswith("/already-erased") and first["id"] in response.json()["detail"]
        response = client.post("/v1/deletion-requests", json={"model_id": model_id, "forget": {"classes": [3]}})
        assert response.status_code == 409 and first["id"] in response.json()["detail"]

        # Some erased and some new rows: only the new ones count.
        every_retain_row = FAST_JOB | {"eval": {"retain_rows": 100_000}}  # RA over all rows, not a subset
        second = submit(client, model_id, forget={"sample_ids": threes[:4] + fives}, config=every_retain_row)
        assert second["model_version"] == 2 and second["forget_count"] == len(fives)
        assert second["forget_fingerprint"] == hashlib.sha256("\n".join(sorted(fives)).encode()).hexdigest()
        submitted = events(client, second["id"])[0]
        assert submitted["detail"]["already_erased_by"] == {first["id"]: 4}
        waiting = wait_for_state(client, second["id"], ("awaiting_selection",))

        t = waiting["curve"]["recommended_t"]
        assert select(client, second["id"], t).status_code == 202
        done = wait_for_state(client, second["id"], ("succeeded",))
        listing = versions(client, model_id)

    points = waiting["curve"]["points"]
    # Every point was measured on exactly the rows left: the first request's class is out of the retain set
    # (version 2 misclassifies it, so it would pull retain accuracy near 0.9), and so are the ten forgotten.
    retain_rows = len(train_labels) - len(threes) - len(fives)

    def whole(share: float, rows: int) -> bool:
        return abs(share * rows - round(share * rows)) < 1e-3

    assert points[0]["retain_accuracy"] > 0.97
    assert all(whole(p["retain_accuracy"], retain_rows) and whole(p["forget_accuracy"], len(fives)) for p in points)
    assert not all(whole(p["retain_accuracy"], retain_rows + len(threes)) for p in points)  # the check can tell
    assert done["selection"]["model_version"] == 3
    assert [(v["version"], v["parent_version"], v["deletion_request_id"]) for v in listing] == [
        (1, None, None),
        (2, 1, first["id"]),
        (3, 2, second["id"]),
    ]


# --- 6. racing selections ----------------------------------------------------------------------------------


def test_two_racing_selections_publish_one_version(stack: Stack, model_id: str) -> None:
    with stack.client() as client:
        request = submit(client, model_id, forget={"classes": [7]}, config=FAST_JOB)
        wait_for_state(client, request["id"], ("awaiting_selection",))
    barrier = threading.Barrier(2)
    answers: dict[float, httpx.Response] = {}

    def choose(t: float) -> None:
        with stack.client() as own:
            barrier.wait()
            answers[t] = select(own, request["id"], t)

    threads = [threading.Thread(target=choose, args=(t,)) for t in (0.25, 0.75)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.status_code for r in answers.values()) == [202, 409]
    (winner,) = [t for t, r in answers.items() if r.status_code == 202]
    (loser,) = [r for r in answers.values() if r.status_code == 409]
    assert loser.headers["content-type"].startswith(PROBLEM_JSON)
    with stack.client() as client:
        done = wait_for_state(client, request["id"], ("succeeded",))
        time.sleep(1)  # a second materialisation, were there one, would have been picked up by now
        listing = versions(client, model_id)
        trail = events(client, request["id"])
    assert done["selection"]["t"] == winner
    assert [(v["version"], v["t"]) for v in listing] == [(1, None), (2, winner)]
    assert states_of(trail).count("materializing") == 1
    assert len([e for e in trail if e["type"] == "version_published"]) == 1


def test_cancel_during_materialization_publishes_nothing(
    stack: Stack, callbacks: CallbackReceiver, model_id: str
) -> None:
    url = callbacks.url("cancel-materializing")
    with stack.client() as client:
        request = submit(client, model_id, forget={"classes": [8]}, config=FAST_JOB, callback_url=url)
        waiting = wait_for_state(client, request["id"], ("awaiting_selection",))
        assert select(client, request["id"], waiting["curve"]["recommended_t"]).status_code == 202

        def claimed() -> dict | None:  # a worker took the selection and is building φ(t)
            body = client.get(f"/v1/deletion-requests/{request['id']}").json()
            return body if body["progress"]["phase"] == "materialize" or body["state"] != "materializing" else None

        body = wait_for(claimed, 30, "a worker to take the selection", interval=0.005)
        response = cancel(client, request["id"])
        done = wait_for_state(client, request["id"], ("cancelled", "succeeded"), timeout=30)
        listing = versions(client, model_id)
        trail = events(client, request["id"])
        deleted = wait_event(client, request["id"], "artifacts_deleted")
    assert deleted["detail"]["objects"] == 3 and artifacts_in_bucket(stack, request["id"]) == []
    if done["state"] == "cancelled":
        assert [v["version"] for v in listing] == [1] and done["selection"]["model_version"] is None
        assert not [e for e in trail if e["type"] == "version_published"]
        verified(callbacks.wait(url, "deletion_request.cancelled")[0], request["id"], "cancelled")
    else:  # the cancel came after the version was published: too late, the erasure is done
        assert [v["version"] for v in listing] == [1, 2] and done["selection"]["model_version"] == 2
        (published,) = [e for e in trail if e["type"] == "version_published"]
        assert all(at(published) <= at(e) for e in trail if e["state"] == "cancelling")
    if response.status_code == 409 or response.json()["state"] != "cancelling":
        pytest.skip(f"the cancel missed the materialisation window ({body['state']})")


# --- 7. the embedded default -------------------------------------------------------------------------------


def test_embedded_default_runs_the_whole_flow_without_servers(tmp_path: Path, digits_upload: DigitsUpload) -> None:
    """Only MCU_DATA_DIR: SQLite, a local folder and the SQL broker; each process creates the schema itself."""
    data_dir, key, port = tmp_path / "mcu", "embedded-" + secrets.token_hex(8), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCU_")}
    env |= {"MCU_DATA_DIR": str(data_dir), "MCU_BOOTSTRAP_API_KEY": key, "OMP_NUM_THREADS": "1"}
    logs = {role: tmp_path / f"{role}.log" for role in ("api", "worker")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env=env,
            stdout=logs[role].open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for role, args in (("api", ["serve", "--port", str(port)]), ("worker", ["worker"]))
    ]
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert all(p.poll() is None for p in processes), {r: p.read_text()[-3000:] for r, p in logs.items()}
        try:
            api_ready = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
        return api_ready and b" ready." in logs["worker"].read_bytes()

    try:
        wait_for(up, 90, "the embedded API and worker", interval=0.3)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            _, model_id = register(client, digits_upload)
            request = submit(client, model_id, forget={"classes": [6]}, config=FAST_JOB)
            waiting = wait_for_state(client, request["id"], ("awaiting_selection",))
            assert select(client, request["id"], waiting["curve"]["recommended_t"]).status_code == 202
            done = wait_for_state(client, request["id"], ("succeeded",))
            assert done["selection"]["model_version"] == 2
            published = versions(client, model_id)[1]
            weights = client.get(f"/v1/models/{model_id}/versions/2/weights")
            assert weights.status_code == 200
            assert wait_event(client, request["id"], "artifacts_deleted")["detail"]["objects"] == 3
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    assert hashlib.sha256(weights.content).hexdigest() == published["sha256"]
    assert weights.headers["etag"] == f'"{published["sha256"]}"'
    assert (data_dir / "mcu.sqlite").is_file() and (data_dir / "broker.sqlite").is_file()
    assert not (data_dir / "objects" / "requests" / request["id"]).exists()  # artifacts deleted
