"""Two requests on one model version must never undo each other's erasure.

The jobs run in-process here (the functions the Celery tasks call), on the embedded default; requests go
through the real API app.
"""

from __future__ import annotations

import socket
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from models import DeletionRequest
from settings import Settings
from tests.support import QUICK_EVIDENCE
from worker import jobs
from worker.services import connect
from worker.validation import validate_model

from ..api.conftest import upload_dataset, upload_model

FAST = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}, "evidence": QUICK_EVIDENCE}


def test_a_request_overtaken_by_another_is_rebased_not_published(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k")
    app = create_app(settings)
    client = TestClient(app, headers={"Authorization": "Bearer k"})
    services = connect(settings)
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(services, model_id)

    def submit(ids: list[str]) -> str:
        response = client.post(
            "/v1/deletion-requests", json={"model_id": model_id, "config": FAST, "forget": {"sample_ids": ids}}
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def state(request_id: str) -> dict:
        return client.get(f"/v1/deletion-requests/{request_id}").json()

    first, second = submit(["s1", "s2", "s3"]), submit(["s4", "s5", "s6"])
    assert services.worker_name.startswith(socket.gethostname())
    for request_id, worker_name in ((first, "worker-a"), (second, "worker-b")):
        services.worker_name = worker_name
        jobs.run_request(services, request_id)
        claimed = [
            e
            for e in client.get(f"/v1/deletion-requests/{request_id}/events").json()["items"]
            if e["type"] == "state_changed" and e["state"] == "running"
        ]
        assert [e["detail"] for e in claimed] == [{"worker": worker_name}]  # the events name the worker
    assert state(first)["state"] == state(second)["state"] == "awaiting_selection"

    # The first publishes version 2; the second's curve was computed from version 1.
    assert client.post(f"/v1/deletion-requests/{first}/selection", json={"t": 0.5}).status_code == 202
    jobs.materialize_selection(services, first)
    assert state(first)["state"] == "succeeded"
    assert client.post(f"/v1/deletion-requests/{second}/selection", json={"t": 0.5}).status_code == 202
    jobs.materialize_selection(services, second)

    stale = state(second)
    assert stale["state"] == "queued" and stale["model_version"] == 2 and stale["curve"] is None
    assert stale["selection"] is None
    assert [v["version"] for v in client.get(f"/v1/models/{model_id}/versions").json()["items"]] == [1, 2]
    events = client.get(f"/v1/deletion-requests/{second}/events").json()["items"]
    rebased = [e for e in events if e["type"] == "rebased"]
    assert rebased and rebased[0]["detail"]["from_version"] == 1 and rebased[0]["detail"]["to_version"] == 2
    assert not list((tmp_path / "objects" / "requests").glob(f"{second}/*"))  # old-base artifacts deleted

    # Run again on version 2: published as version 3, child of 2, so both erasures hold.
    jobs.run_request(services, second)
    assert client.post(f"/v1/deletion-requests/{second}/selection", json={"t": 0.5}).status_code == 202
    jobs.materialize_selection(services, second)
    versions = client.get(f"/v1/models/{model_id}/versions").json()["items"]
    assert [(v["version"], v["parent_version"], v["deletion_request_id"]) for v in versions] == [
        (1, None, None),
        (2, 1, first),
        (3, 2, second),
    ]
    assert state(second)["state"] == "succeeded"


def test_a_queued_request_starts_from_the_newest_version(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap_api_key="k")
    app = create_app(settings)
    client = TestClient(app, headers={"Authorization": "Bearer k"})
    services = connect(settings)
    model_id = upload_model(client, upload_dataset(client).json()["id"]).json()["id"]
    validate_model(services, model_id)
    body = {"model_id": model_id, "config": FAST, "selection": "auto"}
    first = client.post("/v1/deletion-requests", json=body | {"forget": {"sample_ids": ["s1"]}}).json()["id"]
    second = client.post("/v1/deletion-requests", json=body | {"forget": {"sample_ids": ["s2"]}}).json()["id"]
    jobs.run_request(services, first)  # auto: selected, then published as version 2
    jobs.materialize_selection(services, first)
    jobs.run_request(services, second)  # submitted on version 1, runs on version 2
    jobs.materialize_selection(services, second)
    done = client.get(f"/v1/deletion-requests/{second}").json()
    assert done["state"] == "succeeded" and done["model_version"] == 2
    assert done["selection"]["model_version"] == 3
    with services.factory() as session:  # the curve was trained from version 2's weights, not version 1's
        assert session.get(DeletionRequest, second).curve_summary["theta_o_version"] == 2
