"""GET of one deletion request adds its job's diagnostics (docs/api.md): seconds per phase,
when a worker last reported, and the curve training's loss per epoch, β counts and rollbacks. Null before the
job made them; the list leaves them out. Requests go through the API; the jobs run in this process."""

from __future__ import annotations

import math
from datetime import datetime

from typer.testing import CliRunner

from cli.client_commands import requests_app
from mcu_client import Client
from worker import jobs
from worker.services import connect

from .conftest import BOOTSTRAP_KEY, Service, upload_dataset, upload_model, validated

EPOCHS = 2
CONFIG = {"epochs": EPOCHS, "grid_points": 3, "base": {"epochs": 1}}
PHASES = ("mask", "base", "curve", "evaluate")


def worker_reported_at(service: Service, request_id: str) -> datetime:
    events = service.client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
    return max(datetime.fromisoformat(e["at"]) for e in events if e["actor"] == "worker")


def test_get_shows_timings_last_heartbeat_and_training_once_the_job_made_them(service: Service) -> None:
    client = service.client
    model = validated(service, upload_model(client, upload_dataset(client, name="diagnostics").json()["id"]))
    created = client.post(
        "/v1/deletion-requests",
        json={"model_id": model["id"], "config": CONFIG, "selection": "auto", "forget": {"sample_ids": ["s3"]}},
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["id"]
    url = f"/v1/deletion-requests/{request_id}"

    before = client.get(url).json()
    assert (before["timings"], before["training"], before["last_heartbeat_at"]) == (None, None, None)
    listed = client.get("/v1/deletion-requests", params={"model_id": model["id"]}).json()["items"]
    assert listed[0]["id"] == request_id and not {"timings", "training", "last_heartbeat_at"} & set(listed[0])

    services = connect(service.settings)
    jobs.run_request(services, request_id)  # selection: auto, so it ends in materializing
    trained = client.get(url).json()
    assert trained["state"] == "materializing"
    timings = trained["timings"]
    assert set(PHASES) <= set(timings) and all(timings[p] >= 0 for p in PHASES)
    assert timings["curve"] > 0 and timings["evaluate"] > 0
    assert math.isclose(timings["total"], sum(timings[p] for p in PHASES), abs_tol=0.005)  # each rounded to ms
    training = trained["training"]
    losses = training["epoch_losses"]
    assert len(losses) == EPOCHS and all(isinstance(x, float) and math.isfinite(x) for x in losses)
    assert training["batches"] > 0 and sum(training["beta_counts"].values()) == training["batches"]
    assert all(float(beta) in (0.0, 0.01, 0.5) for beta in training["beta_counts"])  # the adaptive β rule's values
    assert training["rollbacks"] == [] and training["skipped_nonfinite_batches"] == 0
    # The worker let the job go (no live heartbeat): its last step is the last report.
    heartbeat = datetime.fromisoformat(trained["last_heartbeat_at"])
    assert heartbeat == worker_reported_at(service, request_id)
    assert heartbeat >= datetime.fromisoformat(trained["started_at"])

    jobs.materialize_selection(services, request_id)
    done = client.get(url).json()
    assert done["state"] == "succeeded" and done["timings"] == timings and done["training"] == training
    assert datetime.fromisoformat(done["last_heartbeat_at"]) > heartbeat

    # The typed client and `mcu requests show` read the same fields.
    detail = Client(http=client).get_request(request_id)
    assert detail.training is not None and detail.training.epoch_losses == losses
    assert detail.timings is not None and detail.timings.curve == timings["curve"]
    shown = CliRunner().invoke(requests_app, ["show", request_id, "--url", service.url, "--api-key", BOOTSTRAP_KEY])
    assert shown.exit_code == 0, shown.output
    assert f"curve {timings['curve']:.2f}s" in shown.output and "last heartbeat" in shown.output
    assert f"loss per epoch: {losses[0]:.3f}, {losses[1]:.3f}" in shown.output and "rollbacks: none" in shown.output
