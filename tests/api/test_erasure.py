"""What a deletion request forgets: exactly the rows it names, never rows an earlier request already erased;
and the job sees them through the model's declared preprocessing.

Requests go through the API; the worker's jobs run in this process on the same backend.
"""

from __future__ import annotations

import torch
from safetensors.numpy import load as load_safetensors

from models import DeletionRequest
from tests.support import QUICK_EVIDENCE
from unlearning.data import Normalization
from worker import jobs
from worker.inputs import JobInputs, load_inputs
from worker.services import Services, connect

from .conftest import Service, assert_problem, shard_bytes, upload_dataset, upload_model, validated

FAST = {"epochs": 1, "grid_points": 3, "base": {"epochs": 1}, "evidence": QUICK_EVIDENCE}
N_TRAIN, N_TEST = 40, 20  # upload_dataset's: sample s<i> is row i of its one shard, s0..s39 in the train split


def _inputs(services: Services, request_id: str) -> JobInputs:
    with services.factory() as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None
        session.expunge(request)
    return load_inputs(services, request)


def test_erased_rows_are_refused_then_left_out_and_named_rows_are_forgotten(service: Service) -> None:
    client = service.client
    model = validated(service, upload_model(client, upload_dataset(client, name="erasure").json()["id"]))
    services = connect(service.settings)
    uploaded = torch.from_numpy(load_safetensors(shard_bytes(N_TRAIN + N_TEST))["inputs"])

    def submit(ids: list[str], **body: object):
        return client.post(
            "/v1/deletion-requests",
            json={"model_id": model["id"], "config": FAST, "forget": {"sample_ids": ids}} | body,
        )

    def rows(*ids: int) -> torch.Tensor:
        return uploaded[list(ids)]

    first = submit(["s9", "s1", "s5"], selection="auto").json()
    inputs = _inputs(services, first["id"])  # the rows the job trains on are the ones named, by sample id
    assert torch.equal(inputs.data.forget.inputs, rows(1, 5, 9))
    declared = model["preprocessing"]  # "unit": not the dataset's own statistics
    assert inputs.data.adapter.normalization == Normalization(tuple(declared["mean"]), tuple(declared["std"]))
    assert torch.equal(inputs.data.retain.inputs, rows(*(i for i in range(N_TRAIN) if i not in (1, 5, 9))))
    jobs.run_request(services, first["id"])
    jobs.materialize_selection(services, first["id"])
    assert client.get(f"/v1/deletion-requests/{first['id']}").json()["state"] == "succeeded"

    # Only erased rows named: nothing to do, and the answer names the request that erased them.
    body = assert_problem(submit(["s5", "s1"]), 409, first["id"])
    assert body["type"].endswith("/already-erased")

    # Erased and new rows: the new ones only, on version 2, and no erased row takes part in the job.
    second = submit(["s1", "s12", "s2"])
    assert second.status_code == 202, second.text
    assert second.json()["forget_count"] == 2 and second.json()["model_version"] == 2
    queued = client.get(f"/v1/deletion-requests/{second.json()['id']}/events").json()["items"][0]
    assert queued["detail"]["already_erased_by"] == {first["id"]: 1}
    inputs = _inputs(services, second.json()["id"])
    assert torch.equal(inputs.data.forget.inputs, rows(2, 12))
    assert torch.equal(inputs.data.retain.inputs, rows(*(i for i in range(N_TRAIN) if i not in (1, 2, 5, 9, 12))))
