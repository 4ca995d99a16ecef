"""A job whose worker died mid-curve is resumed from its checkpoint: it trains only the epochs left.

The kill -9 test (tests/e2e/test_flow.py) cannot tell a resume from a deterministic restart, as both end
with the same curve; here the batches are counted. The jobs run in-process on the embedded default.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from safetensors.torch import save as save_tensors
from sqlalchemy import update

from api.app import create_app
from domain.lifecycle import State, claim
from models import DeletionRequest, utcnow
from settings import Settings
from unlearning import Checkpoint, run_unlearning
from unlearning.training import Cancelled, JobHooks
from worker import artifacts, jobs
from worker.inputs import load_inputs
from worker.services import connect
from worker.validation import validate_model

from ..api.conftest import upload_dataset, upload_model

EPOCHS = 4
CONFIG = {"epochs": EPOCHS, "batch_size": 8, "grid_points": 3, "base": {"epochs": 1}}


def test_a_resumed_job_trains_only_the_epochs_left(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k")
    client = TestClient(create_app(settings), headers={"Authorization": "Bearer k"})
    services = connect(settings)
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(services, model_id)
    request_id = client.post(
        "/v1/deletion-requests",
        json={"model_id": model_id, "config": CONFIG, "forget": {"sample_ids": ["s1", "s2", "s3"]}},
    ).json()["id"]

    # A worker takes the job, stores θ_p and the checkpoint of epoch 1 (as worker/jobs.py does), and dies.
    with services.factory() as session, session.begin():
        request = claim(session, request_id, State.QUEUED, State.RUNNING, utcnow())
    assert request is not None
    inputs = load_inputs(services, request)
    saved: list[Checkpoint] = []

    def store_checkpoint(checkpoint: Checkpoint) -> None:
        saved.append(checkpoint)
        artifacts.save(services, request_id, artifacts.CHECKPOINT, checkpoint.to_bytes())

    with pytest.raises(Cancelled):
        run_unlearning(
            inputs.model,
            inputs.data,
            request.base_method,
            request.config,
            device="cpu",
            hooks=JobHooks(should_cancel=lambda: len(saved) >= 1),
            on_checkpoint=store_checkpoint,
            on_theta_p=lambda s: artifacts.save(services, request_id, artifacts.THETA_P, save_tensors(s)),
        )
    assert saved[-1].epoch == 1
    per_epoch = sum(saved[-1].beta_counts.values())  # one β per batch
    with services.factory() as session, session.begin():  # its heartbeat stops
        session.execute(
            update(DeletionRequest)
            .where(DeletionRequest.id == request_id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )

    jobs.run_request(services, request_id)

    with services.factory() as session:
        row = session.get(DeletionRequest, request_id)
        assert row is not None and row.state == State.AWAITING_SELECTION
        training, recommended_t = row.curve_summary["training"], row.curve_summary["recommended_t"]
    assert per_epoch > 1 and training["batches"] == (EPOCHS - 1) * per_epoch  # epochs 2..4 only
    assert sum(training["beta_counts"].values()) == EPOCHS * per_epoch  # the counts carried over from epoch 1
    events = client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
    assert [e["detail"] for e in events if e["type"] == "resumed_from_checkpoint"] == [{"epoch": 1}]
    assert "resumed" in [e["type"] for e in events]

    # The same curve as a run that was never interrupted.
    uninterrupted = run_unlearning(inputs.model, inputs.data, request.base_method, request.config, device="cpu")
    assert uninterrupted.training["batches"] == EPOCHS * per_epoch
    assert recommended_t == uninterrupted.recommended_t
    points = client.get(f"/v1/deletion-requests/{request_id}/curve").json()["points"]
    assert [p["retain_accuracy"] for p in points] == [p.retain_accuracy for p in uninterrupted.points]
