"""The mission end to end over real processes, and recovery from a killed worker and a lost queue."""

from __future__ import annotations

import ctypes.util
import time
from pathlib import Path

import redis
from safetensors.torch import load as load_tensors

from cli.digits import DigitsUpload
from tests.support import wait_for_state
from unlearning import Normalization, build_model, load_digits_dataset, make_unlearning_data
from unlearning.metrics import accuracy

from .conftest import FAST_JOB, REDIS_URL, Stack, add_model, register, submit, wait_for

FORGET_CLASS = 3


def test_full_flow_publishes_a_version_that_forgot_the_class(stack: Stack, digits_upload: DigitsUpload) -> None:
    with stack.client() as client:
        _, model_id = register(client, digits_upload)
        request = submit(client, model_id, forget={"classes": [FORGET_CLASS]}, config=FAST_JOB)
        waiting = wait_for_state(client, request["id"], ("awaiting_selection",))
        curve = waiting["curve"]
        assert [p["t"] for p in curve["points"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert curve["points"][0]["forget_accuracy"] > 0.9 and curve["points"][-1]["forget_accuracy"] < 0.1
        t = curve["recommended_t"]
        assert client.post(f"/v1/deletion-requests/{request['id']}/selection", json={"t": t}).status_code == 202
        done = wait_for_state(client, request["id"], ("succeeded",))
        assert done["selection"]["model_version"] == 2 and done["finished_at"] is not None

        model = client.get(f"/v1/models/{model_id}").json()
        assert model["current_version"] == 2
        version = client.get(f"/v1/models/{model_id}/versions").json()["items"][1]
        assert (version["parent_version"], version["deletion_request_id"], version["t"]) == (1, request["id"], t)
        weights = client.get(f"/v1/models/{model_id}/versions/2/weights")
        assert weights.headers["etag"] == f'"{version["sha256"]}"'
        # The clean-up task runs after `succeeded`: wait for its event rather than read once.
        events = wait_for(
            lambda: (
                (
                    items := client.get(
                        f"/v1/deletion-requests/{request['id']}/events", params={"page_size": 500}
                    ).json()["items"]
                )
                and any(e["type"] == "artifacts_deleted" for e in items)
                and items
            ),
            60,
            "the clean-up's artifacts_deleted event",
        )

    network = build_model("cnn-small", 10, (1, 8, 8))
    network.load_state_dict(load_tensors(weights.content))
    digits = load_digits_dataset()
    digits.normalization = Normalization((0.0,), (1.0,))  # the model's declared "unit" preprocessing
    data = make_unlearning_data(digits, channels=1, forget_classes=[FORGET_CLASS])
    retained_test, forgotten_test = data.test_split_by_class()
    assert accuracy(network, data.forget, data.adapter) < 0.1
    assert accuracy(network, forgotten_test, data.adapter) < 0.1
    assert accuracy(network, data.retain, data.adapter) > 0.95
    assert accuracy(network, retained_test, data.adapter) > 0.9
    states = [e["state"] for e in events if e["type"] == "state_changed"]
    assert states == ["queued", "running", "awaiting_selection", "materializing", "succeeded"]
    phases = [e["detail"]["phase"] for e in events if e["type"] == "phase_started"]
    assert phases[:4] == ["mask", "base", "curve", "evaluate"]
    assert any(e["type"] == "artifacts_deleted" and e["detail"]["objects"] == 3 for e in events)
    assert any(e["type"] == "version_published" for e in events)


SLOW_CURVE = {"epochs": 10, "batch_size": 8, "retain_ratio": 1.0, "grid_points": 5, "base": {"epochs": 2}}


def test_killed_worker_is_resumed_from_its_last_epoch(stack: Stack, digits_upload: DigitsUpload) -> None:
    with stack.client() as client:
        dataset_id, model_id = register(client, digits_upload)
        twin_id = add_model(client, dataset_id, digits_upload)  # same weights: the uninterrupted reference
        body = {"forget": {"classes": [FORGET_CLASS]}, "config": SLOW_CURVE}
        crashed = submit(client, model_id, **body)

        def in_curve_epoch_3() -> bool:
            progress = client.get(f"/v1/deletion-requests/{crashed['id']}").json()["progress"]
            return progress["phase"] == "curve" and (progress.get("epoch") or 0) >= 3

        wait_for(in_curve_epoch_3, 180, "curve training to reach epoch 3", interval=0.05)
        stack.kill_workers()  # kill -9, mid-epoch
        killed_at = client.get(f"/v1/deletion-requests/{crashed['id']}").json()
        assert killed_at["state"] == "running"

        worker = stack.start_worker()
        if ctypes.util.find_library("jemalloc"):  # `mcu worker` ran itself again on it (worker/allocator.py)
            assert "jemalloc" in Path(f"/proc/{worker.pid}/maps").read_text()
        resumed = wait_for_state(client, crashed["id"], ("awaiting_selection",), timeout=240)
        reference = wait_for_state(client, submit(client, twin_id, **body)["id"], ("awaiting_selection",), timeout=240)
        events = client.get(f"/v1/deletion-requests/{crashed['id']}/events", params={"page_size": 500}).json()["items"]

    restart = [e for e in events if e["type"] == "resumed_from_checkpoint"]
    assert restart and restart[0]["detail"]["epoch"] >= 2  # resumed from a checkpoint, not from scratch
    assert any(e["type"] == "resumed" for e in events)
    for ours, theirs in zip(resumed["curve"]["points"], reference["curve"]["points"], strict=True):
        for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"):
            assert abs(ours[key] - theirs[key]) < 1e-6, (key, ours, theirs)
    assert resumed["curve"]["recommended_t"] == reference["curve"]["recommended_t"]


def test_request_lost_by_the_broker_is_resent(stack: Stack, digits_upload: DigitsUpload) -> None:
    with stack.client() as client:
        _, model_id = register(client, digits_upload)  # a worker validates the model
        stack.kill_workers()  # nobody consumes: the request waits in the queue
        request = submit(client, model_id, forget={"subject_ids": ["w7"]}, config=FAST_JOB, selection="auto")
        broker = redis.Redis.from_url(REDIS_URL)
        assert wait_for(lambda: broker.llen("gpu") > 0, 10, "the task to reach the queue")
        broker.flushdb()  # the broker loses every message
        time.sleep(1)
        assert client.get(f"/v1/deletion-requests/{request['id']}").json()["state"] == "queued"
        stack.start_worker()  # its reconciler re-sends requests queued for longer than MCU_REQUEUE_AFTER_SECONDS
        done = wait_for_state(client, request["id"], ("succeeded",), timeout=240)
    assert done["selection"]["selected_by"] == "auto"
    assert done["selection"]["t"] == done["curve"]["recommended_t"]
