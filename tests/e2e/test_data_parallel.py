"""One job trained on two torchrun ranks (MCU_DEVICES_PER_JOB=2; worker/data_parallel.py), by a real worker: the
job reaches awaiting_selection with the ranks' training; a rank killed mid-curve is restarted with the others from
the last checkpoint; a cancel leaves no rank behind. A stack of its own: Postgres, Redis, S3, one worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.digits import DigitsUpload
from tests.support import QUICK_EVIDENCE, redis_url, wait_for, wait_for_state

from .conftest import Stack, own_stack, register, submit

BROKER_URL = redis_url("own-stack")
JOB = {"epochs": 4, "grid_points": 5, "base": {"epochs": 2}, "evidence": QUICK_EVIDENCE}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("ranks")
    yield from own_stack(data_dir, s3_endpoint, "ranks", BROKER_URL, {"MCU_DEVICES_PER_JOB": "2"})


def ranks_of(request_id: str) -> list[int]:
    """The pids of the request's rank processes (`python -m worker.data_parallel rank <id> ...`)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker.data_parallel" in argv and b"launch" not in argv and request_id.encode() in argv:
            found.append(int(entry.name))
    return found


def test_a_job_trains_on_two_ranks_and_a_killed_rank_resumes_from_the_checkpoint(
    two_ranks: Stack, digits_upload: DigitsUpload
) -> None:
    with two_ranks.client() as client:
        _, model_id = register(client, digits_upload)
        request_id = submit(client, model_id, forget={"classes": [3]}, config=JOB)["id"]

        def in_curve_epoch(n: int) -> bool:
            progress = client.get(f"/v1/deletion-requests/{request_id}").json().get("progress") or {}
            return progress.get("phase") == "curve" and (progress.get("epoch") or 0) >= n

        wait_for(lambda: in_curve_epoch(2), 300, "curve epoch 2 on the ranks")  # epoch 1's checkpoint is stored
        ranks = ranks_of(request_id)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        request = wait_for_state(client, request_id, ("awaiting_selection", "failed"), timeout=600)

    assert request["state"] == "awaiting_selection", request.get("error")
    training = request["training"]
    assert training["processes"] == 2 and training["device"] == "cpu × 2"
    assert training["rank_restarts"] == 1
    assert training["resumed_from_epoch"] >= 1  # the restarted ranks began at the last checkpoint
    assert len(training["epoch_losses"]) == 4  # which carried the earlier epochs' losses
    assert request["timings"]["curve"] > 0  # the ranks trained it; the base method ran in the first attempt
    assert ranks_of(request_id) == []


def test_a_cancel_stops_the_ranks(two_ranks: Stack, digits_upload: DigitsUpload) -> None:
    with two_ranks.client() as client:
        _, model_id = register(client, digits_upload)
        # Hours of epochs: only a stop ends them in time.
        request_id = submit(client, model_id, forget={"classes": [3]}, config=JOB | {"epochs": 10_000})["id"]
        wait_for(lambda: len(ranks_of(request_id)) == 2, 120, "two ranks")
        assert client.post(f"/v1/deletion-requests/{request_id}/cancel").status_code == 202
        wait_for_state(client, request_id, ("cancelled",), timeout=90)
    deadline = time.monotonic() + 30
    while ranks_of(request_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ranks_of(request_id) == []
